package vxlan

import (
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/subnet"
)

func TestParseConfig(t *testing.T) {
	cases := []struct {
		name    string
		in      string
		ifMTU   int
		v6      bool
		want    Config
		wantErr string
	}{
		{name: "defaults", in: `{"Type":"vxlan"}`, ifMTU: 1500, want: Config{VNI: 1, MTU: 1500}},
		{name: "empty raw", in: ``, ifMTU: 9000, want: Config{VNI: 1, MTU: 9000}},
		{name: "all keys", in: `{"Type":"vxlan","VNI":42,"Port":4789,"MTU":1400,"GBP":true,"Learning":true,"DirectRouting":true}`,
			ifMTU: 1500, want: Config{VNI: 42, Port: 4789, MTU: 1400, GBP: true, Learning: true, DirectRouting: true}},
		{name: "lower-case keys as upstream's tags", in: `{"type":"vxlan","vni":2,"port":8472,"mtu":1450,"gbp":true,"learning":false,"directRouting":true}`,
			ifMTU: 1500, want: Config{VNI: 2, Port: 8472, MTU: 1450, GBP: true, DirectRouting: true}},
		{name: "mixed case", in: `{"vNi":7,"DIRECTROUTING":true}`, ifMTU: 1500, want: Config{VNI: 7, MTU: 1500, DirectRouting: true}},
		{name: "windows keys ignored", in: `{"Type":"vxlan","MacPrefix":"0E-2A","Name":"x"}`, ifMTU: 1500, want: Config{VNI: 1, MTU: 1500}},
		{name: "null VNI is the default", in: `{"VNI":null}`, ifMTU: 1500, want: Config{VNI: 1, MTU: 1500}},
		{name: "max VNI", in: `{"VNI":16777215}`, ifMTU: 1500, want: Config{VNI: 16777215, MTU: 1500}},
		{name: "v6 with enough MTU", in: `{}`, ifMTU: 1500, v6: true, want: Config{VNI: 1, MTU: 1500}},
		{name: "VNI zero", in: `{"VNI":0}`, ifMTU: 1500, wantErr: "VNI 0 out of range"},
		{name: "VNI too big", in: `{"VNI":16777216}`, ifMTU: 1500, wantErr: "VNI 16777216 out of range"},
		{name: "VNI negative", in: `{"VNI":-1}`, ifMTU: 1500, wantErr: "out of range"},
		{name: "port too big", in: `{"Port":65536}`, ifMTU: 1500, wantErr: "Port 65536"},
		{name: "port negative", in: `{"Port":-5}`, ifMTU: 1500, wantErr: "Port -5"},
		{name: "MTU too small", in: `{"MTU":100}`, ifMTU: 1500, wantErr: "MTU 100 too small"},
		{name: "MTU negative", in: `{"MTU":-1}`, ifMTU: 1500, wantErr: "negative"},
		{name: "MTU too big", in: `{"MTU":70000}`, ifMTU: 1500, wantErr: "larger than 65535"},
		{name: "MTU too small for v6", in: `{"MTU":1300}`, ifMTU: 1500, v6: true, wantErr: "too small for IPv6"},
		{name: "v6 device at the IPv6 minimum", in: `{"MTU":1350}`, ifMTU: 1500, v6: true, want: Config{VNI: 1, MTU: 1350}},
		{name: "v6 device below the IPv6 minimum", in: `{"MTU":1349}`, ifMTU: 1500, v6: true, wantErr: "(MTU - 70) must be at least 1280"},
		{name: "v4 only needs no IPv6 minimum", in: `{"MTU":1349}`, ifMTU: 1500, want: Config{VNI: 1, MTU: 1349}},
		{name: "interface MTU unknown", in: `{}`, ifMTU: 0, wantErr: "MTU not configured"},
		{name: "bad JSON", in: `{"VNI":`, ifMTU: 1500, wantErr: "vxlan: invalid Backend JSON"},
		{name: "wrong type", in: `{"VNI":"1"}`, ifMTU: 1500, wantErr: `Backend.VNI must be a whole number`},
		{name: "fractional", in: `{"Port":1.5}`, ifMTU: 1500, wantErr: "Backend.Port must be a whole number"},
		{name: "not an object", in: `[1]`, ifMTU: 1500, wantErr: "vxlan: Backend must be a JSON object, not an array"},
		{name: "several errors together", in: `{"VNI":0,"Port":70000}`, ifMTU: 1500, wantErr: "Port 70000"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseConfig([]byte(tc.in), tc.ifMTU, tc.v6)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// The problems of the vxlan keys word for word, all at once (Documentation/backends.md
// quotes some).
func TestCheckConfigTexts(t *testing.T) {
	cases := []struct{ in, want string }{
		{`{"Type":"vxlan"}`, ""},
		{`{"Type":"vxlan","VNI":"1"}`, `vxlan: Backend.VNI must be a whole number, not the string "1"`},
		{`{"Type":"vxlan","ChecksumOffload":"yes"}`, `vxlan: ChecksumOffload must be "auto", "on" or "off", not "yes"`},
		{`{"Type":"vxlan","ChecksumOffload":true}`, `vxlan: ChecksumOffload must be "auto", "on" or "off", not true`},
		{`{"Type":"vxlan","GBP":"yes"}`, `vxlan: Backend.GBP must be a boolean (true or false), not the string "yes"`},
		{`{"Type":"vxlan","DirectRouting":1}`, `vxlan: Backend.DirectRouting must be a boolean (true or false), not the number 1`},
		{`{"Type":"vxlan","MTU":"1400"}`, `vxlan: Backend.MTU must be a whole number, not the string "1400"`},
		{`{"Type":"vxlan","MTU":100}`, `vxlan: MTU 100 too small: the device MTU (MTU - 50) must be at least 68`},
		{`{"Type":"vxlan","VNI":0,"Port":70000,"ChecksumOffload":"yes","Learning":"no"}`,
			"vxlan: Backend.Learning must be a boolean (true or false), not the string \"no\"\n" +
				"vxlan: VNI 0 out of range 1..16777215\n" +
				`vxlan: ChecksumOffload must be "auto", "on" or "off", not "yes"` + "\n" +
				"vxlan: Port 70000 out of range 0..65535"},
	}
	for _, c := range cases {
		_, err := CheckConfig([]byte(c.in))
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.in, got, c.want)
		}
	}
}

// The problems backends.md quotes are the ones CheckConfig reports.
func TestDocumentedCheckConfigTexts(t *testing.T) {
	doc, err := os.ReadFile("../../Documentation/backends.md")
	if err != nil {
		t.Fatal(err)
	}
	prose := strings.Join(strings.Fields(string(doc)), " ") // quotes may wrap
	for cfg, text := range map[string]string{
		`{"Type":"vxlan","VNI":"1"}`:               `vxlan: Backend.VNI must be a whole number, not the string "1"`,
		`{"Type":"vxlan","ChecksumOffload":"yes"}`: `vxlan: ChecksumOffload must be "auto", "on" or "off", not "yes"`,
	} {
		if _, err := CheckConfig([]byte(cfg)); err == nil || err.Error() != text {
			t.Errorf("%s: got %v, want %s", cfg, err, text)
		}
		if !strings.Contains(prose, "`"+text+"`") {
			t.Errorf("backends.md does not quote %s", text)
		}
	}
}

func TestCheckConfigWarnings(t *testing.T) {
	warns, err := CheckConfig([]byte(`{"type":"vxlan","VIN":2,"Prot":8472,"MacPrefix":"0E-2A","name":"x","Mystery":1,"directrouting":true}`))
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
		`key "Backend.MacPrefix" ignored: used by flanneld on Windows only`,
		`key "Backend.name" ignored: used by flanneld on Windows only`,
		`unknown key "Backend.Mystery"`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("warnings\n got %q\nwant %q", got, want)
	}
}

func TestMarshalBackendData(t *testing.T) {
	mac := hwAddr{0x4e, 0x7c, 0xfc, 0x75, 0x67, 0xc4}
	if got := string(marshalBackendData(1, mac)); got != `{"VNI":1,"VtepMAC":"4e:7c:fc:75:67:c4"}` {
		t.Errorf("got %s", got)
	}
	if got := string(marshalBackendData(16777215, hwAddr{0x02})); got != `{"VNI":16777215,"VtepMAC":"02:00:00:00:00:00"}` {
		t.Errorf("got %s", got)
	}
	// The lease JSON embeds it unchanged.
	attrs := subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("198.51.100.1"), BackendType: "vxlan", BackendData: marshalBackendData(1, mac)}
	b, err := attrs.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"PublicIP":"198.51.100.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"4e:7c:fc:75:67:c4"}}`
	if string(b) != want {
		t.Errorf("lease JSON %s, want %s", b, want)
	}
}

func TestParseBackendData(t *testing.T) {
	cases := []struct {
		in      string
		want    backendData
		wantErr string
	}{
		{in: `{"VNI":1,"VtepMAC":"4e:7c:fc:75:67:c4"}`, want: backendData{1, hwAddr{0x4e, 0x7c, 0xfc, 0x75, 0x67, 0xc4}}},
		{in: `{"VtepMAC":"4E:7C:FC:75:67:C4"}`, want: backendData{0, hwAddr{0x4e, 0x7c, 0xfc, 0x75, 0x67, 0xc4}}}, // v0.10 shape
		{in: `{"vni":3,"vtepmac":"02-00-00-00-00-01"}`, want: backendData{3, hwAddr{2, 0, 0, 0, 0, 1}}},
		{in: ``, wantErr: "no backend data"},
		{in: `null`, wantErr: "no VtepMAC"},
		{in: `{}`, wantErr: "no VtepMAC"},
		{in: `{"VtepMAC":""}`, wantErr: "no VtepMAC"},
		{in: `{"VtepMAC":"zz:zz"}`, wantErr: "bad VtepMAC"},
		{in: `{"VtepMAC":"00:00:5e:00:53:01:02:03"}`, wantErr: "bad VtepMAC"}, // EUI-64
		{in: `{"VtepMAC":"00:00:00:00:00:00"}`, wantErr: "not a unicast"},
		{in: `{"VtepMAC":"01:00:5e:00:00:01"}`, wantErr: "not a unicast"},
		{in: `{"VtepMAC":"ff:ff:ff:ff:ff:ff"}`, wantErr: "not a unicast"},
		{in: `{"VtepMAC":42}`, wantErr: "bad backend data"},
		{in: `"str"`, wantErr: "bad backend data"},
	}
	for _, tc := range cases {
		got, err := parseBackendData([]byte(tc.in))
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: err = %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: got %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

// CheckBackendData accepts what parseBackendData does (v0.10's VNI-less shape included),
// with a VNI in range.
func TestCheckBackendData(t *testing.T) {
	for in, want := range map[string]string{
		`{"VNI":1,"VtepMAC":"4e:7c:fc:75:67:c4"}`:        "",
		`{"VtepMAC":"4e:7c:fc:75:67:c4"}`:                "",
		`{"VNI":16777215,"VtepMAC":"4e:7c:fc:75:67:c4"}`: "",
		`{"VNI":16777216,"VtepMAC":"4e:7c:fc:75:67:c4"}`: "VNI 16777216 out of range",
		`{"VNI":-1,"VtepMAC":"4e:7c:fc:75:67:c4"}`:       "out of range",
		`{"VNI":"1","VtepMAC":"4e:7c:fc:75:67:c4"}`:      "bad backend data",
		`{"VNI":1,"VtepMAC":"01:00:5e:00:00:01"}`:        "not a unicast",
		`{"VNI":1}`: "no VtepMAC",
		``:          "no backend data",
	} {
		err := CheckBackendData([]byte(in))
		if (want == "") != (err == nil) || want != "" && !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", in, err, want)
		}
	}
}

func TestNewValidation(t *testing.T) {
	ext := func() *backend.ExternalInterface {
		return &backend.ExternalInterface{
			Iface:     &net.Interface{Index: 2, MTU: 1500, Name: "eth0"},
			ExtAddr:   netip.MustParseAddr("192.0.2.1"),
			ExtV6Addr: netip.MustParseAddr("2001:db8::1"),
		}
	}
	cfg := func(s string) *subnet.Config {
		c, err := subnet.ParseConfig(s)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	cases := []struct {
		name    string
		ext     *backend.ExternalInterface
		cfg     *subnet.Config
		devs    string
		mtu     int
		wantErr string
	}{
		{name: "v4", ext: ext(), cfg: cfg(`{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`), devs: "flannel.1", mtu: 1450},
		// With IPv6 the pods' MTU is the IPv6 device's (underlay - 70), fitting flannel.<VNI> too.
		{name: "dual", ext: ext(), cfg: cfg(`{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:1000::/56","Backend":{"Type":"vxlan","VNI":9,"MTU":1400}}`),
			devs: "flannel.9,flannel-v6.9", mtu: 1330},
		{name: "v6 only", ext: ext(), cfg: cfg(`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:1000::/56","Backend":{"Type":"vxlan"}}`),
			devs: "flannel-v6.1", mtu: 1430},
		{name: "v4 name too long", ext: ext(), cfg: cfg(`{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":16777215}}`),
			wantErr: `"flannel.16777215"`},
		{name: "v6 name too long", ext: ext(), cfg: cfg(`{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/48","Backend":{"Type":"vxlan","VNI":10000}}`),
			wantErr: `"flannel-v6.10000"`},
		{name: "no v4 public address", ext: &backend.ExternalInterface{Iface: &net.Interface{Index: 2, MTU: 1500}},
			cfg: cfg(`{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`), wantErr: "no IPv4 public address"},
		{name: "no v6 public address", ext: &backend.ExternalInterface{Iface: &net.Interface{Index: 2, MTU: 1500}, ExtAddr: netip.MustParseAddr("192.0.2.1")},
			cfg: cfg(`{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/48","Backend":{"Type":"vxlan"}}`), wantErr: "no IPv6 public address"},
		{name: "no interface", ext: &backend.ExternalInterface{}, cfg: cfg(`{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`), wantErr: "no external interface"},
		{name: "bad backend config", ext: ext(), cfg: cfg(`{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":0}}`), wantErr: "VNI 0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := newBackend(nil, nil, nil, tc.ext, tc.cfg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(b.Devices(), ","); got != tc.devs {
				t.Errorf("Devices() = %s, want %s", got, tc.devs)
			}
			if b.MTU() != tc.mtu {
				t.Errorf("MTU() = %d, want %d", b.MTU(), tc.mtu)
			}
		})
	}
}

func FuzzParseVXLANConfig(f *testing.F) {
	for _, s := range []string{`{"Type":"vxlan"}`, `{"VNI":42,"Port":4789,"MTU":1400,"GBP":true}`, `{"vni":-1}`, `{`, ``, `null`, `{"MTU":1e9}`, `{"ChecksumOffload":"off"}`, `{"ChecksumOffload":true}`} {
		f.Add([]byte(s), 1500, false)
	}
	f.Fuzz(func(t *testing.T, raw []byte, ifMTU int, v6 bool) {
		c, err := parseConfig(raw, ifMTU, v6)
		if err != nil {
			return
		}
		if c.VNI < 1 || c.VNI > maxVNI || c.Port < 0 || c.Port > 65535 || c.MTU-overhead < minDeviceMTU || c.MTU > 65535 {
			t.Fatalf("accepted out-of-range config %+v from %q", c, raw)
		}
		if v6 && c.MTU-v6Overhead < minV6DeviceMTU {
			t.Fatalf("accepted v6 config with MTU %d", c.MTU)
		}
		if c.ChecksumOffload > ChecksumOff {
			t.Fatalf("accepted ChecksumOffload %d", c.ChecksumOffload)
		}
	})
}

func FuzzParseBackendData(f *testing.F) {
	for _, s := range []string{`{"VNI":1,"VtepMAC":"4e:7c:fc:75:67:c4"}`, `{"VtepMAC":"00:00:00:00:00:00"}`, `{}`, `x`,
		`{"VtepMAC":"0000.5e00.5301"}`, `{"VNI":01,"VtepMAC":"4e:7c:fc:75:67:c4"}`, `{"VNI":123456789,"VtepMAC":"4E:7C:FC:75:67:C4"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		bd, err := parseBackendData(raw)
		if err != nil {
			return
		}
		if bd.MAC == (hwAddr{}) || bd.MAC[0]&1 != 0 {
			t.Fatalf("accepted non-unicast MAC %s from %q", bd.MAC, raw)
		}
		// The allocation-free path agrees with encoding/json wherever it answers.
		if fast, ok := parseBackendDataFast(raw); ok {
			slow, err := parseBackendDataJSON(raw)
			if err != nil || slow != fast {
				t.Fatalf("fast path %+v, json path %+v, %v for %q", fast, slow, err, raw)
			}
		}
		again, err := parseBackendData(marshalBackendData(bd.VNI, bd.MAC))
		if err != nil || again != bd {
			t.Fatalf("round trip of %+v: %+v, %v", bd, again, err)
		}
	})
}
