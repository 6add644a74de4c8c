package ip

import (
	"net/netip"
	"testing"
)

func TestAddSubnets(t *testing.T) {
	cases := []struct {
		in   string
		len  int
		n    int64
		want string
		ok   bool
	}{
		{"10.3.0.0", 24, 1, "10.3.1.0", true},
		{"10.3.0.0", 24, 255, "10.3.255.0", true},
		{"10.4.0.0", 24, -1, "10.3.255.0", true},
		{"255.255.255.0", 24, 1, "", false},
		{"0.0.0.0", 24, -1, "", false},
		{"fc00::", 64, 1, "fc00:0:0:1::", true},
		{"fc00:0:1::", 64, -1, "fc00:0:0:ffff::", true},
		{"fc00::", 56, 2, "fc00:0:0:200::", true},
		{"::", 128, -1, "", false},
		{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 128, 1, "", false},
		{"0:0:0:0:ffff:ffff:ffff:ffff", 128, 1, "0:0:0:1::", true},
	}
	for _, c := range cases {
		got, ok := AddSubnets(netip.MustParseAddr(c.in), c.len, c.n)
		if ok != c.ok || (ok && got.String() != c.want) {
			t.Errorf("AddSubnets(%s,%d,%d) = %v,%v want %s,%v", c.in, c.len, c.n, got, ok, c.want, c.ok)
		}
	}
}

func TestLastSubnet(t *testing.T) {
	cases := []struct {
		net  string
		len  int
		want string
	}{
		{"10.3.0.0/16", 24, "10.3.255.0/24"},
		{"10.0.0.0/8", 24, "10.255.255.0/24"},
		{"0.0.0.0/0", 24, "255.255.255.0/24"},
		{"10.3.0.0/30", 32, "10.3.0.3/32"},
		{"fc00::/48", 64, "fc00:0:0:ffff::/64"},
		{"::/0", 64, "ffff:ffff:ffff:ffff::/64"},
	}
	for _, c := range cases {
		if got := LastSubnet(netip.MustParsePrefix(c.net), c.len); got.String() != c.want {
			t.Errorf("LastSubnet(%s,%d) = %v want %s", c.net, c.len, got, c.want)
		}
	}
}

func TestNextSubnetAndFirstHost(t *testing.T) {
	n, ok := NextSubnet(netip.MustParsePrefix("10.5.85.0/24"))
	if !ok || n.String() != "10.5.86.0/24" {
		t.Fatalf("NextSubnet = %v %v", n, ok)
	}
	if _, ok := NextSubnet(netip.MustParsePrefix("255.255.255.0/24")); ok {
		t.Fatal("NextSubnet past the end must fail")
	}
	if got := FirstHost(netip.MustParsePrefix("10.5.85.0/24")).String(); got != "10.5.85.1/24" {
		t.Fatalf("FirstHost = %s", got)
	}
	if got := FirstHost(netip.MustParsePrefix("2001:cafe:42::/64")).String(); got != "2001:cafe:42::1/64" {
		t.Fatalf("FirstHost v6 = %s", got)
	}
	if !OnBoundary(netip.MustParseAddr("10.1.2.0"), 24) || OnBoundary(netip.MustParseAddr("10.1.2.1"), 24) {
		t.Fatal("OnBoundary")
	}
}
