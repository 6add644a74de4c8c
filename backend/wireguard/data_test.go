package wireguard

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/flannel-go/flannel/subnet"
)

// Keys of the tests: fixed, so that the golden texts are.
var (
	testPriv = mustKey("aFbrwkqrZxJWqz0JkwXc96nqq0sW52i5dXWXx0sSllQ=")
	testPub  = testPriv.PublicKey()
	peerPriv = mustKey("cMl7bqGxiGhpPKnjZDR6FAN0lsIhgBJtLxkWVXDrBl0=")
	peerPub  = peerPriv.PublicKey()
)

func mustKey(s string) wgtypes.Key {
	k, err := wgtypes.ParseKey(s)
	if err != nil {
		panic(err)
	}
	return k
}

// The lease values are upstream's, byte for byte: BackendType wireguard, per family
// {"PublicKey":…,"Port":…} with the port of the device carrying that family.
func TestLeaseAttrsGolden(t *testing.T) {
	pub := testPub.String()
	tests := []struct {
		name   string
		mode   Mode
		v4, v6 bool
		want   string
	}{
		{"IPv4", Separate, true, false,
			`{"PublicIP":"198.51.100.1","PublicIPv6":null,"BackendType":"wireguard","BackendData":{"PublicKey":"` + pub + `","Port":51820}}`},
		{"dual stack, separate devices", Separate, true, true,
			`{"PublicIP":"198.51.100.1","PublicIPv6":"2001:db8::1","BackendType":"wireguard","BackendData":{"PublicKey":"` + pub + `","Port":51820},"BackendV6Data":{"PublicKey":"` + pub + `","Port":51821}}`},
		{"IPv6 only", Separate, false, true,
			`{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::1","BackendType":"wireguard","BackendV6Data":{"PublicKey":"` + pub + `","Port":51821}}`},
		{"dual stack, one device: one port", Auto, true, true,
			`{"PublicIP":"198.51.100.1","PublicIPv6":"2001:db8::1","BackendType":"wireguard","BackendData":{"PublicKey":"` + pub + `","Port":51820},"BackendV6Data":{"PublicKey":"` + pub + `","Port":51820}}`},
	}
	for _, tt := range tests {
		n := nodeInfo{cfg: Config{ListenPort: 51820, ListenPortV6: 51821, Mode: tt.mode}, pub: testPub, v4: tt.v4, v6: tt.v6,
			extAddr: netip.MustParseAddr("198.51.100.1"), extV6Addr: netip.MustParseAddr("2001:db8::1")}
		if !tt.v4 {
			n.extAddr = netip.Addr{}
		}
		got, err := json.Marshal(n.attrs())
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != tt.want {
			t.Errorf("%s:\n got %s\nwant %s", tt.name, got, tt.want)
		}
	}
}

func TestParseBackendData(t *testing.T) {
	pub := peerPub.String()
	tests := []struct {
		raw  string
		want backendData
		err  string
	}{
		{raw: `{"PublicKey":"` + pub + `","Port":51820}`, want: backendData{peerPub, 51820}},
		{raw: `{"PublicKey":"` + pub + `"}`, want: backendData{peerPub, 0}}, // leases of upstream before Port
		{raw: `{"publickey":"` + pub + `","port":4000}`, want: backendData{peerPub, 4000}},
		{raw: ``, err: "no backend data"},
		{raw: `{"Port":51820}`, err: "backend data has no PublicKey"},
		{raw: `{"PublicKey":"` + pub[:40] + `"}`, err: "malformed PublicKey: 40 characters, want 44"},
		{raw: `{"PublicKey":"` + strings.Repeat("!", 43) + `="}`, err: "not the base64 of 32 bytes"},
		{raw: `{"PublicKey":"` + strings.Repeat("A", 43) + `="}`, err: "malformed PublicKey: all zeros"},
		{raw: `{"PublicKey":"` + pub[:42] + `B="}`, err: "not the base64 of 32 bytes"}, // non-canonical padding bits
		{raw: `{"PublicKey":"` + pub + `","Port":-1}`, err: "Port -1 out of range 0..65535"},
		{raw: `{"PublicKey":"` + pub + `","Port":65536}`, err: "Port 65536 out of range"},
		{raw: `{"PublicKey":42}`, err: "PublicKey is a JSON number"},
		{raw: `["x"]`, err: "bad backend data"},
	}
	for _, tt := range tests {
		got, err := parseBackendData([]byte(tt.raw))
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: error %v, want %q", tt.raw, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%s: %+v %v, want %+v", tt.raw, got, err, tt.want)
		}
	}
	if got := string(marshalBackendData(peerPub, 51821)); got != `{"PublicKey":"`+pub+`","Port":51821}` {
		t.Errorf("marshalBackendData = %s", got)
	}
}

// The admission rule's wireguard check: upstream's lease shapes pass (with and without
// Port), a malformed key or port does not.
func TestCheckBackendData(t *testing.T) {
	good := `{"PublicKey":"` + peerPub.String() + `","Port":51820}`
	for in, want := range map[string]string{
		good: "",
		`{"PublicKey":"` + peerPub.String() + `"}`:                "",
		`{"publickey":"` + peerPub.String() + `","port":0}`:       "",
		`{"PublicKey":"AAAA"}`:                                    "malformed PublicKey: 4 characters",
		`{"PublicKey":"` + strings.Repeat("A", 43) + `="}`:        "malformed PublicKey: all zeros",
		`{"PublicKey":"` + strings.Repeat("!", 43) + `="}`:        "not the base64 of 32 bytes",
		`{"PublicKey":"` + peerPub.String() + `","Port":70000}`:   "Port 70000 out of range",
		`{"PublicKey":"` + peerPub.String() + `","Port":"51820"}`: "bad backend data",
		`{"Port":51820}`: "no PublicKey",
		``:               "no backend data",
	} {
		err := CheckBackendData(json.RawMessage(in))
		if (err == nil) != (want == "") || (err != nil && !strings.Contains(err.Error(), want)) {
			t.Errorf("%s: %v, want %q", in, err, want)
		}
	}
	lease := func(typ, v4, v6 string, sn, sn6 string) *subnet.Lease {
		l := &subnet.Lease{Attrs: subnet.LeaseAttrs{BackendType: typ}}
		if sn != "" {
			l.EnableIPv4, l.Subnet, l.Attrs.BackendData = true, netip.MustParsePrefix(sn), json.RawMessage(v4)
		}
		if sn6 != "" {
			l.EnableIPv6, l.IPv6Subnet, l.Attrs.BackendV6Data = true, netip.MustParsePrefix(sn6), json.RawMessage(v6)
		}
		return l
	}
	if k, ok := PublicKey(lease("wireguard", "", good, "", "2001:db8:1000:2::/64")); !ok || k != peerPub.String() {
		t.Errorf("PublicKey of an IPv6 lease = %q %v", k, ok)
	}
	if _, ok := PublicKey(lease("wireguard", `{}`, "", "10.5.2.0/24", "")); ok {
		t.Error("PublicKey found a key in {}")
	}
}

// FuzzParseBackendData: peer leases are outside input. Whatever the bytes, parsing does
// not panic; what it accepts has a well-formed key and port and survives the round trip
// through upstream's format unchanged.
func FuzzParseBackendData(f *testing.F) {
	f.Add([]byte(`{"PublicKey":"` + peerPub.String() + `","Port":51820}`))
	f.Add([]byte(`{"PublicKey":"` + peerPub.String() + `"}`))
	f.Add([]byte(`{"publickey":"` + testPub.String() + `","PORT":0}`))
	f.Add([]byte(`{"PublicKey":null,"Port":"x"}`))
	f.Add([]byte(`{"PublicKey":"` + strings.Repeat("A", 43) + `="}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		bd, err := parseBackendData(raw)
		if err != nil {
			return
		}
		if bd.PublicKey == (wgtypes.Key{}) || bd.Port < 0 || bd.Port > 65535 {
			t.Fatalf("accepted %q as %+v", raw, bd)
		}
		again, err := parseBackendData(marshalBackendData(bd.PublicKey, bd.Port))
		if err != nil || again != bd {
			t.Fatalf("round trip of %q: %+v %v, want %+v", raw, again, err, bd)
		}
	})
}
