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
		name    string
		raw     string
		v4, v6  bool
		want    Config // compared without PSK
		psk     bool
		unknown []string
		errs    []string // substrings of the error, in order of appearance
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
		{name: "unknown keys are reported, not refused", raw: `{"Type":"wireguard","ListenPorts":1,"VNI":2}`, v4: true,
			want:    Config{ListenPort: 51820, ListenPortV6: 51821, MTU: 1500, Mode: Separate, Implementation: ImplAuto},
			unknown: []string{"ListenPorts", "VNI"}},
		{name: "invalid Mode: upstream's message", raw: `{"Mode":"Separate"}`, v4: true,
			errs: []string{`no valid Mode configured: "Separate" (want separate, auto, ipv4 or ipv6)`}},
		{name: "invalid Implementation", raw: `{"Implementation":"module"}`, v4: true,
			errs: []string{`no valid Implementation configured: "module" (want auto, kernel or userspace)`}},
		{name: "bad PSK: upstream's message", raw: `{"PSK":"not a key"}`, v4: true,
			errs: []string{"could not parse psk: "}},
		{name: "type error: upstream's prefix, our words", raw: `{"ListenPort":"51820"}`, v4: true,
			errs: []string{"error decoding backend config: ListenPort must be a whole number, not a JSON string"}},
		{name: "keepalive as upstream: whole seconds", raw: `{"PersistentKeepaliveInterval":2.5}`, v4: true,
			errs: []string{"error decoding backend config: PersistentKeepaliveInterval must be a whole number, not a JSON number"}},
		{name: "keepalive range", raw: `{"PersistentKeepaliveInterval":70000}`, v4: true,
			errs: []string{"PersistentKeepaliveInterval 70000 out of range 0..65535 (seconds)"}},
		{name: "ports", raw: `{"ListenPort":0,"ListenPortV6":70000}`, v4: true, v6: true,
			errs: []string{"ListenPort 0 out of range 1..65535", "ListenPortV6 70000 out of range 1..65535"}},
		{name: "one port for two devices", raw: `{"ListenPort":5000,"ListenPortV6":5000}`, v4: true, v6: true,
			errs: []string{"ListenPort and ListenPortV6 are both 5000"}},
		{name: "one port is fine with one device", raw: `{"ListenPort":5000,"ListenPortV6":5000,"Mode":"auto"}`, v4: true, v6: true,
			want: Config{ListenPort: 5000, ListenPortV6: 5000, MTU: 1500, Mode: Auto, Implementation: ImplAuto}},
		{name: "MTU too small", raw: `{"MTU":140}`, v4: true,
			errs: []string{"MTU 140 too small: the device MTU (MTU - 80) must be at least 68"}},
		{name: "MTU too small for IPv6", raw: `{"MTU":1300}`, v4: true, v6: true,
			errs: []string{"MTU 1300 too small for IPv6: the device MTU (MTU - 80) must be at least 1280"}},
		{name: "several errors at once", raw: `{"Mode":"x","MTU":-1}`, v4: true,
			errs: []string{"no valid Mode configured", "MTU -1 is negative"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, unknown, err := parseConfig([]byte(tt.raw), 1500, tt.v4, tt.v6)
			if !slices.Equal(unknown, tt.unknown) {
				t.Errorf("unknown keys %q, want %q", unknown, tt.unknown)
			}
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

// The PSK never appears in an error, whatever is wrong with it.
func TestParseConfigNeverQuotesThePSK(t *testing.T) {
	for _, psk := range []string{
		testPSK[:43] + "!",          // a bad character at the end
		testPSK + "AAAA",            // too long
		strings.Repeat("s3cr3t", 7), // not base64 at all
	} {
		_, _, err := parseConfig([]byte(`{"PSK":"`+psk+`","MTU":-1}`), 1500, true, false)
		if err == nil {
			t.Fatalf("PSK %q accepted", psk)
		}
		if strings.Contains(err.Error(), psk) || strings.Contains(err.Error(), psk[:20]) {
			t.Errorf("error quotes the PSK: %v", err)
		}
	}
}

func TestDeviceMTU(t *testing.T) {
	c, _, err := parseConfig([]byte(`{"MTU":1400}`), 9000, true, false)
	if err != nil {
		t.Fatal(err)
	}
	if c.DeviceMTU() != 1320 {
		t.Errorf("DeviceMTU = %d, want 1400 - 80", c.DeviceMTU())
	}
	c, _, _ = parseConfig(nil, 9000, true, false)
	if c.DeviceMTU() != 8920 {
		t.Errorf("DeviceMTU = %d, want the interface's 9000 - 80", c.DeviceMTU())
	}
}
