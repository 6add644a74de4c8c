package configkeys

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

type dst struct {
	S   string
	N   int
	B   bool
	PB  *bool
	PN  *int
	Raw json.RawMessage
}

func (d *dst) object() Object {
	return Object{Path: "Backend", Prefix: "test: ", Fields: []Field{
		{Name: "Name", Into: &d.S},
		{Name: "VNI", Into: &d.N},
		{Name: "Port", Into: &d.N},
		{Name: "GBP", Into: &d.B},
		{Name: "EnableIPv4", Into: &d.PB},
		{Name: "MTU", Into: &d.PN},
		{Name: "Backend", Into: &d.Raw},
		{Name: "MacPrefix", Ignored: "used by flanneld on Windows only"},
	}}
}

func TestDecodeValues(t *testing.T) {
	var d dst
	warns, err := d.object().Decode([]byte(`{"name":"a","vni":7,"GBP":true,"enableipv4":false,"backend":{"Type":"x"},"mtu":0}`))
	if err != nil || len(warns) != 0 {
		t.Fatalf("warns %v, err %v", warns, err)
	}
	if d.S != "a" || d.N != 7 || !d.B || d.PB == nil || *d.PB || string(d.Raw) != `{"Type":"x"}` || d.PN == nil || *d.PN != 0 {
		t.Fatalf("decoded %+v", d)
	}
	// null is absent; a **bool is reset.
	d = dst{S: "keep", N: 3}
	if _, err := d.object().Decode([]byte(`{"Name":null,"VNI":null,"EnableIPv4":null,"Backend":null,"MTU":null}`)); err != nil {
		t.Fatal(err)
	}
	if d.S != "keep" || d.N != 3 || d.PB != nil || d.Raw != nil || d.PN != nil {
		t.Fatalf("null changed %+v", d)
	}
}

// The texts are golden: they are what an operator reads in the log.
func TestDecodeProblems(t *testing.T) {
	cases := []struct{ in, want string }{
		{`{"VNI":"1"}`, `test: Backend.VNI must be a whole number, not the string "1"`},
		{`{"VNI":1.5}`, `test: Backend.VNI must be a whole number (no fraction or exponent), not the number 1.5`},
		{`{"VNI":1e3}`, `test: Backend.VNI must be a whole number (no fraction or exponent), not the number 1e3`},
		{`{"VNI":99999999999999999999}`, `test: Backend.VNI must be a whole number between -9223372036854775808 and 9223372036854775807, not the number 99999999999999999999`},
		{`{"VNI":true}`, `test: Backend.VNI must be a whole number, not the boolean true`},
		{`{"MTU":"1400"}`, `test: Backend.MTU must be a whole number, not the string "1400"`},
		{`{"GBP":"yes"}`, `test: Backend.GBP must be a boolean (true or false), not the string "yes"`},
		{`{"GBP":1}`, `test: Backend.GBP must be a boolean (true or false), not the number 1`},
		{`{"EnableIPv4":"false"}`, `test: Backend.EnableIPv4 must be a boolean (true or false), not the string "false"`},
		{`{"Name":10}`, `test: Backend.Name must be a string, not the number 10`},
		{`{"Name":{"a":1}}`, `test: Backend.Name must be a string, not an object`},
		{`{"Name":[1]}`, `test: Backend.Name must be a string, not an array`},
		{`{"VNI":"` + strings.Repeat("x", 50) + `"}`, `test: Backend.VNI must be a whole number, not the string "` + strings.Repeat("x", 40) + `…"`},
		{`{"VNI":[]}`, `test: Backend.VNI must be a whole number, not an array`},
		{`[1]`, `test: Backend must be a JSON object, not an array`},
		{`"vxlan"`, `test: Backend must be a JSON object, not the string "vxlan"`},
		{`2` + strings.Repeat("0", 400), `test: Backend must be a JSON object, not the number 2` + strings.Repeat("0", 39) + `…`},
		{`{"VNI":`, `test: invalid Backend JSON: it ends too early (a missing closing brace or quote?)`},
		{"{\n\"VNI\": 1,\n  x}", `test: invalid Backend JSON: invalid character 'x' looking for beginning of object key string (line 3, column 3)`},
		{`{"VNI":1} x`, `test: invalid Backend JSON: invalid character 'x' after top-level value (line 1, column 11)`},
		{`{"VNI":1} {}`, `test: invalid Backend JSON: invalid character '{' after top-level value (line 1, column 11)`},
		{``, `test: invalid Backend JSON: it ends too early (a missing closing brace or quote?)`},
	}
	for _, c := range cases {
		var d dst
		_, err := d.object().Decode([]byte(c.in))
		if err == nil || err.Error() != c.want {
			t.Errorf("%s:\n got %v\nwant %s", c.in, err, c.want)
		}
	}
}

func TestDecodeReportsEveryProblem(t *testing.T) {
	var d dst
	_, err := d.object().Decode([]byte(`{"VNI":"1","GBP":"no","Name":5}`))
	want := `test: Backend.VNI must be a whole number, not the string "1"` + "\n" +
		`test: Backend.GBP must be a boolean (true or false), not the string "no"` + "\n" +
		`test: Backend.Name must be a string, not the number 5`
	if err == nil || err.Error() != want {
		t.Fatalf("got %v", err)
	}
}

func TestDecodeWarnings(t *testing.T) {
	var d dst
	warns, err := d.object().Decode([]byte(`{"VIN":2,"Prot":1,"Nmae":"x","Frobnicate":1,"MacPrefix":"0E-2A","vni":1,"VNI":2}`))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range warns {
		got = append(got, w.String())
	}
	want := []string{
		`unknown key "Backend.VIN" (did you mean "VNI"?)`,
		`unknown key "Backend.Prot" (did you mean "Port"?)`,
		`unknown key "Backend.Nmae" (did you mean "Name"?)`,
		`unknown key "Backend.Frobnicate"`,
		`key "Backend.MacPrefix" ignored: used by flanneld on Windows only`,
		`key "Backend.VNI" repeats "Backend.vni"; the last one counts`,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("warnings\n got %q\nwant %q", got, want)
	}
	if d.N != 2 {
		t.Errorf("the last of repeated keys should count: VNI=%d", d.N)
	}
	top := Object{Fields: []Field{{Name: "Network", Into: new(string)}}}
	warns, _ = top.Decode([]byte(`{"Netwrok":"x","network":"10.0.0.0/8"}`))
	if len(warns) != 1 || warns[0].String() != `unknown key "Netwrok" (did you mean "Network"?)` {
		t.Errorf("top-level warnings %v", warns)
	}
}

func TestSuggest(t *testing.T) {
	keys := []string{"VNI", "Port", "MTU", "GBP", "Learning", "DirectRouting", "ChecksumOffload", "Type"}
	for in, want := range map[string]string{
		"VIN": "VNI", "vin": "VNI", "Prot": "Port", "prot": "Port", "GPB": "GBP", "Typ": "Type",
		"Lerning": "Learning", "DirectRoute": "DirectRouting", "ChecksumOfload": "ChecksumOffload",
		"checksum": "", "Foo": "", "X": "", "MUT": "MTU", "Learn": "", "VNI": "",
	} {
		if got := Suggest(in, keys); got != want {
			t.Errorf("Suggest(%q) = %q, want %q", in, got, want)
		}
	}
	backends := []string{"host-gw", "udp", "vxlan"}
	for in, want := range map[string]string{"vxaln": "vxlan", "hostgw": "host-gw", "host_gw": "host-gw", "upd": "udp", "ipip": "", "wireguard": ""} {
		if got := Suggest(in, backends); got != want {
			t.Errorf("Suggest(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDistance(t *testing.T) {
	for _, c := range []struct {
		a, b string
		d    int
	}{{"", "", 0}, {"a", "", 1}, {"vin", "vni", 1}, {"kitten", "sitting", 3}, {"ca", "abc", 3}, {"é", "e", 1}} {
		if got := distance(c.a, c.b); got != c.d {
			t.Errorf("distance(%q, %q) = %d, want %d", c.a, c.b, got, c.d)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(`{"VNI":1,"Name":"x","GBP":true,"EnableIPv4":null,"Backend":{}}`)
	f.Add(`{"vin":"1"}`)
	f.Add(`[`)
	f.Fuzz(func(t *testing.T, s string) {
		var d dst
		warns, err := d.object().Decode([]byte(s))
		for _, w := range warns {
			if w.Key == "" {
				t.Fatalf("warning without a key: %+v", w)
			}
		}
		if err != nil && strings.Contains(err.Error(), "Go ") {
			t.Fatalf("Go internals in %q", err)
		}
		// Whatever Decode accepts, encoding/json accepts as an object too.
		if err == nil && !json.Valid([]byte(s)) {
			t.Fatalf("accepted invalid JSON %q", s)
		}
	})
}
