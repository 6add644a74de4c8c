package wireguard

import (
	"slices"
	"strings"
	"testing"
	"time"
)

const testPSK = "hsmO0pr9Jq8sq9Y7kdVj0vE5X8ub3MkNfXWjUXAhRHk="

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name   string
		raw    string
		v4, v6 bool
		want   Config // compared without PSK
		psk    bool
		errs   []string // substrings of the error, in order of appearance
	}{
		{name: "defaults", raw: `{"Type":"wireguard"}`, v4: true,
			want: Config{ListenPort: 51820, ListenPortV6: 51821, MTU: 1500, Mode: Separate, Implementation: ImplAuto}},
		{name: "no backend object", raw: ``, v4: true,
			want: Config{ListenPort: 51820, ListenPortV6: 51821, MTU: 1500, Mode: Separate, Implementation: ImplAuto}},
		{name: "every key, any case", v4: true, v6: true, psk: true,
			raw:  `{"type":"wireguard","listenport":4000,"LISTENPORTV6":4001,"mtu":1400,"psk":"` + testPSK + `","PersistentKeepaliveInterval":25,"mode":"auto","implementation":"userspace"}`,
			want: Config{ListenPort: 4000, ListenPortV6: 4001, MTU: 1400, PersistentKeepaliveInterval: 25 * time.Second, Mode: Auto, Implementation: ImplUserspace}},
		{name: "modes", raw: `{"Mode":"ipv6","Implementation":"kernel"}`, v6: true,
			want: Config{ListenPort: 51820, ListenPortV6: 51821, MTU: 1500, Mode: IPv6, Implementation: ImplKernel}},
		{name: "unknown keys are no error", raw: `{"Type":"wireguard","ListenPorts":1,"VNI":2}`, v4: true,
			want: Config{ListenPort: 51820, ListenPortV6: 51821, MTU: 1500, Mode: Separate, Implementation: ImplAuto}},
		{name: "invalid Mode: upstream's message", raw: `{"Mode":"Separate"}`, v4: true,
			errs: []string{`wireguard: no valid Mode configured: "Separate" (want separate, auto, ipv4 or ipv6)`}},
		{name: "invalid Implementation", raw: `{"Implementation":"module"}`, v4: true,
			errs: []string{`wireguard: no valid Implementation configured: "module" (want auto, kernel or userspace)`}},
		{name: "bad PSK: upstream's message", raw: `{"PSK":"not a key"}`, v4: true,
			errs: []string{"wireguard: could not parse psk: "}},
		{name: "type error in the config's words", raw: `{"ListenPort":"51820"}`, v4: true,
			errs: []string{`wireguard: Backend.ListenPort must be a whole number, not the string "51820"`}},
		{name: "keepalive as upstream: whole seconds", raw: `{"PersistentKeepaliveInterval":2.5}`, v4: true,
			errs: []string{"wireguard: Backend.PersistentKeepaliveInterval must be a whole number (no fraction or exponent), not the number 2.5"}},
		{name: "keepalive range", raw: `{"PersistentKeepaliveInterval":70000}`, v4: true,
			errs: []string{"wireguard: PersistentKeepaliveInterval 70000 out of range 0..65535 (seconds)"}},
		{name: "ports", raw: `{"ListenPort":0,"ListenPortV6":70000}`, v4: true, v6: true,
			errs: []string{"ListenPort 0 out of range 1..65535", "ListenPortV6 70000 out of range 1..65535"}},
		{name: "ListenPortV6 unused without IPv6", raw: `{"ListenPortV6":70000}`, v4: true,
			want: Config{ListenPort: 51820, ListenPortV6: 70000, MTU: 1500, Mode: Separate, Implementation: ImplAuto}},
		{name: "one port for two devices", raw: `{"ListenPort":5000,"ListenPortV6":5000}`, v4: true, v6: true,
			errs: []string{"ListenPort and ListenPortV6 are both 5000"}},
		{name: "one port is fine with one device", raw: `{"ListenPort":5000,"ListenPortV6":5000,"Mode":"auto"}`, v4: true, v6: true,
			want: Config{ListenPort: 5000, ListenPortV6: 5000, MTU: 1500, Mode: Auto, Implementation: ImplAuto}},
		{name: "MTU too small", raw: `{"MTU":140}`, v4: true,
			errs: []string{"MTU 140 too small: the device MTU (MTU - 80) must be at least 68"}},
		{name: "MTU too small for IPv6", raw: `{"MTU":1300}`, v4: true, v6: true,
			errs: []string{"MTU 1300 too small for IPv6: the device MTU (MTU - 80) must be at least 1280"}},
		{name: "several errors at once", raw: `{"Mode":"x","MTU":-1,"ListenPort":"a","PSK":7}`, v4: true,
			errs: []string{"Backend.ListenPort must be a whole number", "Backend.PSK must be a string", "no valid Mode configured", "MTU -1 is negative"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig([]byte(tt.raw), 1500, tt.v4, tt.v6)
			if len(tt.errs) > 0 {
				if err == nil {
					t.Fatalf("no error, want %q", tt.errs)
				}
				msg, at := err.Error(), 0
				for _, e := range tt.errs {
					i := strings.Index(msg[at:], e)
					if i < 0 {
						t.Fatalf("error %q lacks %q (in order)", msg, e)
					}
					at += i + len(e)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (c.PSK != nil) != tt.psk {
				t.Errorf("PSK set = %v, want %v", c.PSK != nil, tt.psk)
			}
			c.PSK = nil
			if c != tt.want {
				t.Errorf("config %+v, want %+v", c, tt.want)
			}
		})
	}
}

// CheckConfig, the daemon's check before New: unknown keys come back as warnings with
// the key they probably misspell, every problem of the known keys as one joined error.
func TestCheckConfig(t *testing.T) {
	tests := []struct {
		raw   string
		warns []string
		errs  []string
	}{
		{raw: `{"Type":"wireguard","ListenPort":51000,"PSK":"` + testPSK + `"}`},
		{raw: `{"Type":"wireguard","ListenPrt":1,"VNI":2,"Implementaton":"kernel"}`,
			warns: []string{`unknown key "Backend.ListenPrt" (did you mean "ListenPort"?)`, `unknown key "Backend.VNI"`,
				`unknown key "Backend.Implementaton" (did you mean "Implementation"?)`}},
		{raw: `{"Type":"wireguard","Mode":"both","ListenPort":70000,"Keepalive":1}`,
			warns: []string{`unknown key "Backend.Keepalive"`},
			errs:  []string{"wireguard: no valid Mode configured", "wireguard: ListenPort 70000 out of range 1..65535"}},
		{raw: `["wireguard"]`, errs: []string{"wireguard: Backend must be a JSON object"}},
	}
	for _, tt := range tests {
		warns, err := CheckConfig([]byte(tt.raw))
		var got []string
		for _, w := range warns {
			got = append(got, w.String())
		}
		if !slices.Equal(got, tt.warns) {
			t.Errorf("%s: warnings %q, want %q", tt.raw, got, tt.warns)
		}
		if len(tt.errs) == 0 {
			if err != nil {
				t.Errorf("%s: %v", tt.raw, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: no error, want %q", tt.raw, tt.errs)
			continue
		}
		for _, e := range tt.errs {
			if !strings.Contains(err.Error(), e) {
				t.Errorf("%s: error %q lacks %q", tt.raw, err, e)
			}
		}
	}
}

// The PSK never appears in an error, whatever is wrong with it.
func TestParseConfigNeverQuotesThePSK(t *testing.T) {
	for _, psk := range []string{
		testPSK[:43] + "!",          // a bad character at the end
		testPSK + "AAAA",            // too long
		strings.Repeat("s3cr3t", 7), // not base64 at all
	} {
		_, err := parseConfig([]byte(`{"PSK":"`+psk+`","MTU":-1}`), 1500, true, false)
		if err == nil {
			t.Fatalf("PSK %q accepted", psk)
		}
		if strings.Contains(err.Error(), psk) || strings.Contains(err.Error(), psk[:20]) {
			t.Errorf("error quotes the PSK: %v", err)
		}
	}
}

func TestDeviceMTU(t *testing.T) {
	c, err := parseConfig([]byte(`{"MTU":1400}`), 9000, true, false)
	if err != nil {
		t.Fatal(err)
	}
	if c.DeviceMTU() != 1320 {
		t.Errorf("DeviceMTU = %d, want 1400 - 80", c.DeviceMTU())
	}
	c, _ = parseConfig(nil, 9000, true, false)
	if c.DeviceMTU() != 8920 {
		t.Errorf("DeviceMTU = %d, want the interface's 9000 - 80", c.DeviceMTU())
	}
}
