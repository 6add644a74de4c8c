package subnet

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

func TestConfigDefaults(t *testing.T) {
	cases := []struct {
		json       string
		len        int
		min, max   string
		backend    string
		len6       int
		min6, max6 string
	}{
		{`{"network":"10.3.0.0/16"}`, 24, "10.3.1.0", "10.3.255.0", "udp", 0, "", ""},
		{`{"Network":"10.3.0.0/16","Backend":{"Type":"VXLAN"}}`, 24, "10.3.1.0", "10.3.255.0", "vxlan", 0, "", ""},
		{`{"Network":"10.3.0.0/24"}`, 26, "10.3.0.64", "10.3.0.192", "udp", 0, "", ""},
		{`{"Network":"10.0.0.0/8","SubnetLen":20}`, 20, "10.0.16.0", "10.255.240.0", "udp", 0, "", ""},
		{`{"Network":"10.3.5.7/16","SubnetMin":"10.3.10.0","SubnetMax":"10.3.20.0"}`, 24, "10.3.10.0", "10.3.20.0", "udp", 0, "", ""},
		{`{"enableIPv6":true,"ipv6Network":"fc00::/48","enableIPv4":false}`, 0, "invalid IP", "invalid IP", "udp", 64, "fc00:0:0:1::", "fc00:0:0:ffff::"},
		{`{"EnableIPv6":true,"IPv6Network":"fc00::/120","Network":"10.1.0.0/16"}`, 24, "10.1.1.0", "10.1.255.0", "udp", 122, "fc00::40", "fc00::c0"},
	}
	for _, c := range cases {
		cfg, err := ParseConfig(c.json)
		if err != nil {
			t.Errorf("%s: %v", c.json, err)
			continue
		}
		if cfg.SubnetLen != c.len || cfg.SubnetMin.String() != c.min || cfg.SubnetMax.String() != c.max || cfg.BackendType != c.backend {
			t.Errorf("%s: got len=%d min=%v max=%v backend=%s", c.json, cfg.SubnetLen, cfg.SubnetMin, cfg.SubnetMax, cfg.BackendType)
		}
		if cfg.IPv6SubnetLen != c.len6 || (c.len6 != 0 && (cfg.IPv6SubnetMin.String() != c.min6 || cfg.IPv6SubnetMax.String() != c.max6)) {
			t.Errorf("%s: got v6 len=%d min=%v max=%v", c.json, cfg.IPv6SubnetLen, cfg.IPv6SubnetMin, cfg.IPv6SubnetMax)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	cases := []struct {
		json string
		want []string // every message must appear
	}{
		{`{}`, []string{"please define a correct Network parameter in the flannel config"}},
		{`{"Network":"10.3.0.0/16","SubnetLen":31}`, []string{"SubnetLen must be less than /31"}},
		{`{"Network":"10.3.0.0/16","SubnetLen":17}`, []string{"network must be able to accommodate at least four subnets"}},
		{`{"Network":"10.3.0.0/29"}`, []string{"network is too small. Minimum useful network prefix is /28"}},
		{`{"Network":"10.3.0.0/16","SubnetMin":"10.4.0.0","SubnetMax":"10.3.1.5"}`, []string{
			"SubnetMin is not in the range of the Network",
			"SubnetMax is not on a SubnetLen boundary: 10.3.1.5"}},
		{`{"Network":"10.3.0.0/16","SubnetMax":"9.0.0.0"}`, []string{"SubnetMax is not in the range of the Network"}},
		{`{"Network":"10.3.0.0/16","SubnetMin":"10.3.0.1"}`, []string{"SubnetMin is not on a SubnetLen boundary: 10.3.0.1"}},
		{`{"Network":"fc00::/16"}`, []string{"invalid IPv4 CIDR format"}},
		{`{"Network":"banana"}`, []string{"invalid IPv4 CIDR format"}},
		{`{"EnableIPv6":true,"EnableIPv4":false}`, []string{"please define a correct IPv6Network parameter in the flannel config"}},
		{`{"EnableIPv6":true,"IPv6Network":"fc00::/125","Network":"10.0.0.0/16"}`, []string{"IPv6Network is too small. Minimum useful network prefix is /124"}},
		{`{"EnableIPv6":true,"IPv6Network":"fc00::/64","IPv6SubnetLen":127,"Network":"10.0.0.0/16"}`, []string{"SubnetLen must be less than /127"}},
		{`{"EnableIPv6":true,"IPv6Network":"fc00::/64","IPv6SubnetMin":"fc01::","Network":"10.0.0.0/16"}`, []string{"IPv6SubnetMin is not in the range of the IPv6Network"}},
		{`{"EnableIPv4":false}`, []string{"none defined stack"}},
		{`{"Network":"10.3.0.0/16","Backend":{"Type":""}}`, []string{"unknown backend type: "}},
		{`{"Network":"10.3.0.0/16","Backend":"vxlan"}`, []string{"error decoding Backend property of config"}},
		{`{"Network":"10.3.0.0/16","EnableNFTables":"yes"}`, []string{"EnableNFTables"}},
		{`{"Network":`, []string{"invalid network config JSON"}},
		// every problem is reported, not just the first
		{`{"EnableIPv6":true,"Network":"10.3.0.0/29"}`, []string{
			"network is too small. Minimum useful network prefix is /28",
			"please define a correct IPv6Network parameter in the flannel config"}},
	}
	for _, c := range cases {
		_, err := ParseConfig(c.json)
		if err == nil {
			t.Errorf("%s: no error", c.json)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not contain %q", c.json, err, w)
			}
		}
	}
}

// The config problems word for word, as the daemon logs them (the golden texts of the
// operator's view; Documentation/configuration.md quotes some of them).
func TestConfigErrorTexts(t *testing.T) {
	cases := []struct{ json, want string }{
		{`{"Network":"10.3.0.0/16","SubnetLen":"24"}`, `SubnetLen must be a whole number, not the string "24"`},
		{`{"Network":10,"EnableIPv6":"yes","SubnetLen":24.5}`, `Network must be a string, not the number 10; ` +
			`EnableIPv6 must be a boolean (true or false), not the string "yes"; ` +
			`SubnetLen must be a whole number (no fraction or exponent), not the number 24.5`},
		{`{"Network":"10.3.0.0/16","EnableNFTables":1}`, `EnableNFTables must be a boolean (true or false), not the number 1`},
		{`{"Network":"10.3.0.0/16","EnableIPv4":"false"}`, `EnableIPv4 must be a boolean (true or false), not the string "false"`},
		{`{"Network":"10.3.0.0/16","SubnetMin":["10.3.1.0"]}`, `SubnetMin must be a string, not an array`},
		{`{"Network":"10.3.0.0/16","Backend":"vxlan"}`, `error decoding Backend property of config: Backend must be a JSON object, not the string "vxlan"`},
		{`{"Network":"10.3.0.0/16","Backend":{"Type":5}}`, `error decoding Backend property of config: Backend.Type must be a string, not the number 5`},
		{`{"Network":"10.3.0.0/16","Backend":{}}`, `unknown backend type: (Backend has no Type; write e.g. "Type":"vxlan")`},
		{`{"Network":"10.3.0.0/16",}`, `invalid network config JSON: invalid character '}' looking for beginning of object key string (line 1, column 26)`},
		{"{\n  \"Network\": \"10.3.0.0/16\"\n", `invalid network config JSON: it ends too early (a missing closing brace or quote?)`},
		{`[1]`, `the network config must be a JSON object, not an array`},
		{``, `invalid network config JSON: it ends too early (a missing closing brace or quote?)`},
		// A key with a problem is not judged again by the range checks of its family...
		{`{"Network":"banana"}`, `invalid IPv4 CIDR format: "banana"`},
		{`{"Network":"10.3.0.0/16","SubnetLen":"x"}`, `SubnetLen must be a whole number, not the string "x"`},
		// ...but every other problem is reported with it.
		{`{"Network":"10.3.0.0/29","EnableNFTables":"yes","Backend":{"Type":"vxlan"}}`,
			`EnableNFTables must be a boolean (true or false), not the string "yes"; network is too small. Minimum useful network prefix is /28`},
		{`{"Network":"10.3.0.0/16","EnableIPv6":true,"IPv6Network":"10.0.0.0/8","SubnetMax":"x"}`,
			`SubnetMax: invalid IP address "x"; invalid IPv6 CIDR format: "10.0.0.0/8"`},
	}
	for _, c := range cases {
		_, err := ParseConfig(c.json)
		if err == nil || err.Error() != c.want {
			t.Errorf("%s:\n got %v\nwant %s", c.json, err, c.want)
		}
		var ce *ConfigError
		if !errors.As(err, &ce) {
			t.Errorf("%s: %T is not a *ConfigError", c.json, err)
		}
		if strings.Contains(fmt.Sprint(err), "Go ") || strings.Contains(fmt.Sprint(err), "rawConfig") {
			t.Errorf("%s: Go internals in %q", c.json, err)
		}
	}
}

// The problems configuration.md quotes are the ones ParseConfig reports.
func TestDocumentedConfigTexts(t *testing.T) {
	doc, err := os.ReadFile("../Documentation/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	prose := strings.Join(strings.Fields(string(doc)), " ") // quotes may wrap
	for cfg, text := range map[string]string{
		`{"Network":"10.3.0.0/16","SubnetLen":"24"}`:       `SubnetLen must be a whole number, not the string "24"`,
		`{"Network":"10.3.0.0/16","EnableIPv6":"yes"}`:     `EnableIPv6 must be a boolean (true or false), not the string "yes"`,
		`{"Network":"10.3.0.0/16",}`:                       `invalid network config JSON: invalid character '}' looking for beginning of object key string (line 1, column 26)`,
		`{"Network":"10.3.0.0/16","SubnetLen":17}`:         `network must be able to accommodate at least four subnets`,
		`{"Network":"10.3.0.0/16","SubnetMin":"10.3.0.1"}`: `SubnetMin is not on a SubnetLen boundary: 10.3.0.1`,
	} {
		if _, err := ParseConfig(cfg); err == nil || err.Error() != text {
			t.Errorf("%s: got %v, want %s", cfg, err, text)
		}
		if !strings.Contains(prose, "`"+text+"`") {
			t.Errorf("configuration.md does not quote %s", text)
		}
	}
}

// A config with problems still says what its Backend is, so that the backend's own keys
// are checked in the same round.
func TestConfigErrorKeepsBackend(t *testing.T) {
	_, err := ParseConfig(`{"Network":"10.3.0.0/29","Backend":{"Type":"VXALN","VIN":1}}`)
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("got %v", err)
	}
	if ce.BackendType != "vxaln" || string(ce.Backend) != `{"Type":"VXALN","VIN":1}` {
		t.Errorf("backend %q %s", ce.BackendType, ce.Backend)
	}
	_, err = ParseConfig(`{"Network":"10.3.0.0/16","Backend":{"Type":7}}`)
	if !errors.As(err, &ce) || ce.BackendType != "" || ce.Backend != nil {
		t.Errorf("unreadable Backend: %+v", ce)
	}
}

func TestConfigWarnings(t *testing.T) {
	cases := []struct {
		json string
		want []string
	}{
		{`{"Network":"10.3.0.0/16","Backend":{"Type":"vxlan","VIN":2}}`, nil}, // the backend's keys are its own
		{`{"network":"10.3.0.0/16","subnetlen":24,"BACKEND":{"Type":"vxlan"}}`, nil},
		{`{"Netwrok":"10.3.0.0/16","network":"10.3.0.0/16","SubnetLength":22,"Backends":{},"Foo":1}`, []string{
			`unknown key "Netwrok" (did you mean "Network"?)`,
			`unknown key "SubnetLength" (did you mean "SubnetLen"?)`,
			`unknown key "Backends" (did you mean "Backend"?)`,
			`unknown key "Foo"`}},
		{`{"Network":"10.3.0.0/16","network":"10.4.0.0/16"}`, []string{`key "network" repeats "Network"; the last one counts`}},
	}
	for _, c := range cases {
		cfg, err := ParseConfig(c.json)
		if err != nil {
			t.Errorf("%s: %v", c.json, err)
			continue
		}
		var got []string
		for _, w := range cfg.Warnings {
			got = append(got, w.String())
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s:\n got %q\nwant %q", c.json, got, c.want)
		}
	}
	// Warnings come with a config that has problems too.
	_, err := ParseConfig(`{"Netwrok":"10.3.0.0/16"}`)
	var ce *ConfigError
	if !errors.As(err, &ce) || len(ce.Warnings) != 1 || ce.Warnings[0].Suggest != "Network" {
		t.Errorf("got %v %+v", err, ce)
	}
}

func TestSubnetFits(t *testing.T) {
	cfg, err := ParseConfig(`{"Network":"10.3.0.0/16","SubnetMin":"10.3.10.0","SubnetMax":"10.3.20.0"}`)
	if err != nil {
		t.Fatal(err)
	}
	for s, want := range map[string]bool{"10.3.10.0/24": true, "10.3.20.0/24": true, "10.3.9.0/24": false, "10.3.21.0/24": false, "10.3.15.0/25": false} {
		if got := cfg.SubnetFits(mustPrefix(s)); got != want {
			t.Errorf("SubnetFits(%s) = %v", s, got)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add(`{"Network":"10.3.0.0/16","Backend":{"Type":"vxlan"}}`)
	f.Add(`{"enableIPv6":true,"ipv6Network":"fc00::/48","enableIPv4":false}`)
	f.Add(`{"Network":"10.3.0.0/16","SubnetLen":30,"SubnetMin":"10.3.0.4"}`)
	f.Fuzz(func(t *testing.T, s string) {
		cfg, err := ParseConfig(s)
		if err != nil {
			if msg := err.Error(); strings.Contains(msg, "Go ") || strings.Contains(msg, "cannot unmarshal") {
				t.Fatalf("Go internals in %q", msg)
			}
			return
		}
		if cfg.EnableIPv4 {
			if !cfg.Network.Contains(cfg.SubnetMin) || !cfg.Network.Contains(cfg.SubnetMax) {
				t.Fatalf("bounds outside network: %+v", cfg)
			}
			if cfg.SubnetLen < cfg.Network.Bits()+2 || cfg.SubnetLen > 30 {
				t.Fatalf("bad SubnetLen: %+v", cfg)
			}
		}
	})
}
