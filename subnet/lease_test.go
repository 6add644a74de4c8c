package subnet

import (
	"encoding/json"
	"net/netip"
	"testing"
	"time"
)

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestLeaseAttrsJSONGolden(t *testing.T) {
	cases := []struct {
		attrs LeaseAttrs
		want  string
	}{
		{LeaseAttrs{PublicIP: netip.MustParseAddr("198.51.100.1"), BackendType: "vxlan",
			BackendData: json.RawMessage(`{"VNI":1, "VtepMAC":"4e:7c:fc:75:67:c4"}`)},
			`{"PublicIP":"198.51.100.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"4e:7c:fc:75:67:c4"}}`},
		{LeaseAttrs{PublicIP: netip.MustParseAddr("198.51.100.2")}, `{"PublicIP":"198.51.100.2","PublicIPv6":null}`},
		{LeaseAttrs{PublicIP: netip.MustParseAddr("198.51.100.2"), BackendType: "host-gw"},
			`{"PublicIP":"198.51.100.2","PublicIPv6":null,"BackendType":"host-gw"}`},
		{LeaseAttrs{PublicIPv6: netip.MustParseAddr("fd00::2"), BackendType: "vxlan",
			BackendV6Data: json.RawMessage(`{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}`)},
			`{"PublicIP":"0.0.0.0","PublicIPv6":"fd00::2","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}`},
	}
	for _, c := range cases {
		got, err := json.Marshal(c.attrs)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != c.want {
			t.Errorf("got  %s\nwant %s", got, c.want)
		}
		var back LeaseAttrs
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatal(err)
		}
		again, _ := json.Marshal(back)
		if string(again) != c.want {
			t.Errorf("round trip: %s", again)
		}
	}
}

func TestLeaseAttrsUnmarshalOldShapes(t *testing.T) {
	var a LeaseAttrs
	// v0.10 shape: no PublicIPv6, no VNI
	if err := json.Unmarshal([]byte(`{"PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":{"VtepMAC":"aa:bb:cc:dd:ee:ff"}}`), &a); err != nil {
		t.Fatal(err)
	}
	if a.PublicIP.String() != "10.0.0.1" || a.PublicIPv6.IsValid() || a.BackendType != "vxlan" {
		t.Fatalf("%+v", a)
	}
	for _, bad := range []string{`{"PublicIP":"x"}`, `{"PublicIP":"fd00::1"}`, `{"PublicIPv6":"1.2.3.4"}`, `[]`} {
		if err := json.Unmarshal([]byte(bad), &a); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

func TestSubnetKey(t *testing.T) {
	good := []struct {
		key     string
		sn, sn6 string
	}{
		{"10.12.13.0-24", "10.12.13.0/24", ""},
		{"10.12.13.0-24&fd00:12:13::-56", "10.12.13.0/24", "fd00:12:13::/56"},
		{"0.0.0.0-0&fc00:0:0:27::-64", "", "fc00:0:0:27::/64"},
		{"/coreos.com/network/subnets/10.5.85.0-24", "10.5.85.0/24", ""},
	}
	for _, g := range good {
		sn, sn6, err := ParseSubnetKey(g.key)
		if err != nil {
			t.Errorf("%s: %v", g.key, err)
			continue
		}
		if (g.sn == "" && sn.IsValid()) || (g.sn != "" && sn.String() != g.sn) || (g.sn6 == "" && sn6.IsValid()) || (g.sn6 != "" && sn6.String() != g.sn6) {
			t.Errorf("%s: got %v %v", g.key, sn, sn6)
		}
		if want := g.key[len(g.key)-len(MakeSubnetKey(sn, sn6)):]; MakeSubnetKey(sn, sn6) != want {
			t.Errorf("MakeSubnetKey(%v,%v) = %s want %s", sn, sn6, MakeSubnetKey(sn, sn6), want)
		}
	}
	for _, bad := range []string{"10", "10.12.13.0", "10.12.13-24", "10.12.13.300-24", "10.12.13.0-24hi", "&2001::-56", "10.12.13.0-24&2001::", "10.12.13.0-32", "10.1.2.0-24&fd00::-128"} {
		if _, _, err := ParseSubnetKey(bad); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}

func FuzzParseSubnetKey(f *testing.F) {
	for _, s := range []string{"10.12.13.0-24", "10.12.13.0-24&fd00:12:13::-56", "0.0.0.0-0&fc00::-64", "1.2.3.4-5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		sn, sn6, err := ParseSubnetKey(key)
		// The allocation-free parser agrees with upstream's pattern wherever it decides.
		if psn, psn6, ok := parsePlainSubnetKey(key); ok {
			rsn, rsn6, rerr := parseSubnetKeyRE(key)
			if rerr != nil || rsn != psn || rsn6 != psn6 {
				t.Fatalf("%q: plain parse %v %v; upstream's pattern %v %v %v", key, psn, psn6, rsn, rsn6, rerr)
			}
		}
		if err != nil {
			return
		}
		k := MakeSubnetKey(sn, sn6)
		sn2, sn62, err := ParseSubnetKey(k)
		if err != nil || sn2 != sn || sn62 != sn6 {
			t.Fatalf("round trip of %q via %q: %v %v %v", key, k, sn2, sn62, err)
		}
	})
}

func FuzzLeaseAttrsJSON(f *testing.F) {
	f.Add(`{"PublicIP":"198.51.100.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"4e:7c:fc:75:67:c4"}}`)
	f.Add(`{"PublicIP":"198.51.100.2","PublicIPv6":"fd00::1"}`)
	f.Fuzz(func(t *testing.T, s string) {
		var a LeaseAttrs
		if err := json.Unmarshal([]byte(s), &a); err != nil {
			return
		}
		out, err := json.Marshal(a)
		if err != nil {
			return // raw backend data that is not valid JSON cannot be re-encoded
		}
		var b LeaseAttrs
		if err := json.Unmarshal(out, &b); err != nil {
			t.Fatalf("re-decode of %s: %v", out, err)
		}
		out2, _ := json.Marshal(b)
		if string(out) != string(out2) {
			t.Fatalf("not stable: %s vs %s", out, out2)
		}
	})
}

func TestSamePeer(t *testing.T) {
	base := Lease{EnableIPv4: true, Subnet: netip.MustParsePrefix("10.5.1.0/24"), Attrs: LeaseAttrs{
		PublicIP: netip.MustParseAddr("192.0.2.1"), BackendType: "vxlan", BackendData: json.RawMessage(`{"VNI":1}`)}}
	for _, tc := range []struct {
		name   string
		change func(l *Lease)
		same   bool
	}{
		{"identical", func(*Lease) {}, true},
		{"expiration only", func(l *Lease) { l.Expiration = time.Unix(1e9, 0) }, true},
		{"subnet", func(l *Lease) { l.Subnet = netip.MustParsePrefix("10.5.2.0/24") }, false},
		{"public IP", func(l *Lease) { l.Attrs.PublicIP = netip.MustParseAddr("192.0.2.2") }, false},
		{"backend data", func(l *Lease) { l.Attrs.BackendData = json.RawMessage(`{"VNI":2}`) }, false},
		{"IPv6 enabled", func(l *Lease) { l.EnableIPv6 = true }, false},
	} {
		l := base
		tc.change(&l)
		if got := SamePeer(base, l); got != tc.same {
			t.Errorf("%s: SamePeer = %v, want %v", tc.name, got, tc.same)
		}
	}
}

func TestWatchResultEventCounts(t *testing.T) {
	for _, tt := range []struct {
		r              WatchResult
		added, removed int
	}{
		{WatchResult{}, 0, 0},
		{WatchResult{Snapshot: []Candidate{{}, {}}}, 0, 0},
		{WatchResult{Events: []Event{{Type: EventAdded}, {Type: EventRemoved}, {Type: EventAdded}}}, 2, 1},
	} {
		if a, r := tt.r.EventCounts(); a != tt.added || r != tt.removed {
			t.Errorf("%+v: %d added %d removed, want %d %d", tt.r, a, r, tt.added, tt.removed)
		}
	}
}

func TestLeaseFamilySubnet(t *testing.T) {
	l := Lease{Subnet: netip.MustParsePrefix("10.5.1.7/24"), IPv6Subnet: netip.MustParsePrefix("fd00:5:0:1::/64")}
	if sn, ok := l.FamilySubnet(false); !ok || sn != netip.MustParsePrefix("10.5.1.0/24") {
		t.Errorf("IPv4: %v %v, want the masked 10.5.1.0/24", sn, ok)
	}
	if sn, ok := l.FamilySubnet(true); !ok || sn != netip.MustParsePrefix("fd00:5:0:1::/64") {
		t.Errorf("IPv6: %v %v", sn, ok)
	}
	for _, bad := range []Lease{{}, {Subnet: netip.MustParsePrefix("fd00::/64"), IPv6Subnet: netip.MustParsePrefix("10.5.1.0/24")}} {
		if sn, ok := bad.FamilySubnet(false); ok {
			t.Errorf("%+v IPv4: %v", bad, sn)
		}
		if sn, ok := bad.FamilySubnet(true); ok {
			t.Errorf("%+v IPv6: %v", bad, sn)
		}
	}
}
