package etcd

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flannel-go/flannel/subnet"
)

const dir = "/coreos.com/network/subnets/"

func TestKVCandidate(t *testing.T) {
	val := `{"PublicIP":"198.51.100.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"4e:7c:fc:75:67:c4"}}`
	big := `{"PublicIP":"198.51.100.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"4e:7c:fc:75:67:c4","pad":"` +
		strings.Repeat("x", subnet.MaxValueSize) + `"}}`
	tests := []struct {
		name     string
		key, val string
		wantErr  error // nil: success
		defect   subnet.Reason
		named    string // Origin.Name: set for non-canonical keys only
		sn, sn6  string
		pub      string
	}{
		{name: "v4", key: dir + "10.5.85.0-24", val: val, sn: "10.5.85.0/24", pub: "198.51.100.1"},
		{name: "dual", key: dir + "10.12.13.0-24&fd00:12:13::-56", val: val, sn: "10.12.13.0/24", sn6: "fd00:12:13::/56", pub: "198.51.100.1"},
		{name: "v6 only", key: dir + "0.0.0.0-0&fc00:0:0:27::-64", val: `{"PublicIP":"0.0.0.0","PublicIPv6":"fd00::2"}`, sn6: "fc00:0:0:27::/64"},
		{name: "v0.10 value", key: dir + "10.5.1.0-24", val: `{"PublicIP":"198.51.100.2","BackendType":"vxlan","BackendData":{"VtepMAC":"aa:bb:cc:dd:ee:ff"}}`, sn: "10.5.1.0/24", pub: "198.51.100.2"},
		{name: "udp value", key: dir + "10.8.97.0-24", val: `{"PublicIP":"198.51.100.2","PublicIPv6":null}`, sn: "10.8.97.0/24", pub: "198.51.100.2"},
		{name: "alias key", key: dir + "10.5.85.7-24", val: val, named: "10.5.85.7-24", sn: "10.5.85.0/24", pub: "198.51.100.1"},
		{name: "alias key with a prefix", key: dir + "x10.5.85.0-24", val: val, named: "x10.5.85.0-24", sn: "10.5.85.0/24", pub: "198.51.100.1"},
		{name: "other prefix", key: "/other/subnets/10.5.85.0-24", val: val, wantErr: errBadKey},
		{name: "nested", key: dir + "x/10.5.85.0-24", val: val, wantErr: errBadKey},
		{name: "empty name", key: dir, val: val, wantErr: errBadKey},
		{name: "no length", key: dir + "10.12.13.0", val: val, wantErr: errBadKey},
		{name: "short ip", key: dir + "10.12.13-24", val: val, wantErr: errBadKey},
		{name: "octet", key: dir + "10.12.13.300-24", val: val, wantErr: errBadKey},
		{name: "trailing", key: dir + "10.12.13.0-24hi", val: val, wantErr: errBadKey},
		{name: "v6 without v4", key: dir + "&2001::-56", val: val, wantErr: errBadKey},
		{name: "v6 without len", key: dir + "10.12.13.0-24&2001::", val: val, wantErr: errBadKey},
		{name: "len too long", key: dir + "10.12.13.0-32", val: val, wantErr: errBadKey},
		{name: "no subnet at all", key: dir + "0.0.0.0-0", val: val, wantErr: errBadKey},
		{name: "bad json", key: dir + "10.5.85.0-24", val: `{"PublicIP":`, defect: subnet.BadJSON, sn: "10.5.85.0/24"},
		{name: "bad public ip", key: dir + "10.5.85.0-24", val: `{"PublicIP":"fd00::1"}`, defect: subnet.BadJSON, sn: "10.5.85.0/24"},
		{name: "too large, not decoded", key: dir + "10.5.85.0-24", val: big, defect: subnet.TooLarge, sn: "10.5.85.0/24"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := kvCandidate(dir, []byte(tc.key), []byte(tc.val), 5, 9)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("want bad key error, got %v (candidate %+v)", err, c)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			l := c.Lease
			if c.Origin.Name != tc.named || c.Origin.Seniority != 5 || c.Origin.Version != 9 {
				t.Errorf("origin %+v", c.Origin)
			}
			if got := prefixString(l.Subnet); got != tc.sn {
				t.Errorf("Subnet = %q, want %q", got, tc.sn)
			}
			if got := prefixString(l.IPv6Subnet); got != tc.sn6 {
				t.Errorf("IPv6Subnet = %q, want %q", got, tc.sn6)
			}
			if l.EnableIPv4 != (tc.sn != "") || l.EnableIPv6 != (tc.sn6 != "") {
				t.Errorf("Enable flags = %v/%v", l.EnableIPv4, l.EnableIPv6)
			}
			if tc.defect != "" {
				if c.Origin.Defect == nil || c.Origin.Defect.Reason != tc.defect {
					t.Fatalf("defect %v, want %s", c.Origin.Defect, tc.defect)
				}
				if l.Attrs.BackendData != nil || l.Attrs.PublicIP.IsValid() {
					t.Fatalf("a defective value left attributes: %+v", l.Attrs)
				}
				return
			}
			if c.Origin.Defect != nil {
				t.Fatalf("defect %v", c.Origin.Defect)
			}
			if got := addrString(l.Attrs.PublicIP); got != tc.pub {
				t.Errorf("PublicIP = %q, want %q", got, tc.pub)
			}
			if !l.Expiration.IsZero() {
				t.Errorf("Expiration = %v, want zero", l.Expiration)
			}
		})
	}
}

func prefixString(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// Any key and value give a candidate or a bad-key error; an oversized value is never
// decoded; a decoded lease's canonical key and attributes round-trip.
func FuzzKVCandidate(f *testing.F) {
	for _, s := range [][2]string{
		{dir + "10.5.85.0-24", `{"PublicIP":"198.51.100.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"4e:7c:fc:75:67:c4"}}`},
		{dir + "10.12.13.0-24&fd00:12:13::-56", `{"PublicIP":"198.51.100.1","PublicIPv6":"fd00::1","BackendV6Data":{"VNI":1}}`},
		{dir + "0.0.0.0-0&fc00:0:0:27::-64", `{"PublicIP":"0.0.0.0","PublicIPv6":"fd00::2"}`},
		{dir + "10.12.13.300-24", `{}`},
		{dir + "1.2.3.4-31&::-127", `{"PublicIP":null,"BackendData":null}`},
		{dir + "10.5.85.0-24", `{"PublicIP":"198.51.100.1","BackendData":"` + strings.Repeat("y", subnet.MaxValueSize) + `"}`},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, key, value string) {
		c, err := kvCandidate(dir, []byte(key), []byte(value), 1, 1)
		if err != nil {
			return
		}
		l := c.Lease
		if !l.Subnet.IsValid() && !l.IPv6Subnet.IsValid() {
			t.Fatalf("lease without any subnet from %q", key)
		}
		if l.EnableIPv4 != l.Subnet.IsValid() || l.EnableIPv6 != l.IPv6Subnet.IsValid() {
			t.Fatalf("enable flags disagree with subnets: %+v", l)
		}
		if (c.Origin.Name == "") != (dir+l.Key() == key) {
			t.Fatalf("key %q, canonical %q, origin name %q", key, l.Key(), c.Origin.Name)
		}
		if len(value) > subnet.MaxValueSize && (c.Origin.Defect == nil || c.Origin.Defect.Reason != subnet.TooLarge || len(l.Attrs.BackendData) > 0) {
			t.Fatalf("a value of %d bytes: %+v", len(value), c)
		}
		if c.Origin.Defect != nil {
			return
		}
		canon := dir + l.Key()
		c2, err := kvCandidate(dir, []byte(canon), []byte(value), 1, 1)
		if err != nil || c2.Origin.Name != "" {
			t.Fatalf("canonical key %q of %q does not parse: %v %+v", canon, key, err, c2.Origin)
		}
		if c2.Lease.Subnet != l.Subnet || c2.Lease.IPv6Subnet != l.IPv6Subnet {
			t.Fatalf("key round trip %q -> %q changed subnets", key, canon)
		}
		enc, err := l.Attrs.MarshalJSON()
		if err != nil {
			return
		}
		c3, err := kvCandidate(dir, []byte(canon), enc, 1, 1)
		if err != nil || (c3.Origin.Defect != nil && len(enc) <= subnet.MaxValueSize) {
			t.Fatalf("re-encoded value %s does not parse: %v %v", enc, err, c3.Origin.Defect)
		}
		if c3.Origin.Defect == nil && (c3.Lease.Attrs.PublicIP != l.Attrs.PublicIP || c3.Lease.Attrs.PublicIPv6 != l.Attrs.PublicIPv6 || c3.Lease.Attrs.BackendType != l.Attrs.BackendType) {
			t.Fatalf("attrs changed through encoding: %+v -> %+v", l.Attrs, c3.Lease.Attrs)
		}
	})
}

func pfx(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

func TestFreeSubnets(t *testing.T) {
	a := netip.MustParseAddr
	tests := []struct {
		name        string
		first, last netip.Addr
		bits        int
		taken       []netip.Prefix
		limit       int
		want        []netip.Prefix
	}{
		{name: "all free", first: a("10.0.1.0"), last: a("10.0.3.0"), bits: 24, limit: 100,
			want: pfx("10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24")},
		{name: "taken skipped", first: a("10.0.1.0"), last: a("10.0.3.0"), bits: 24, limit: 100,
			taken: pfx("10.0.2.0/24", "10.9.0.0/24"), want: pfx("10.0.1.0/24", "10.0.3.0/24")},
		{name: "overlap with a larger lease", first: a("10.0.0.0"), last: a("10.0.7.0"), bits: 24, limit: 100,
			taken: pfx("10.0.4.0/22"), want: pfx("10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24")},
		{name: "overlap with a smaller lease", first: a("10.0.1.0"), last: a("10.0.2.0"), bits: 24, limit: 100,
			taken: pfx("10.0.1.128/25"), want: pfx("10.0.2.0/24")},
		{name: "limit", first: a("10.0.0.0"), last: a("10.0.255.0"), bits: 24, limit: 2,
			taken: pfx("10.0.0.0/24"), want: pfx("10.0.1.0/24", "10.0.2.0/24")},
		{name: "taken unsorted, duplicated, unmasked", first: a("10.0.1.0"), last: a("10.0.6.0"), bits: 24, limit: 100,
			taken: pfx("10.0.5.0/24", "10.0.2.0/24", "10.0.5.0/24", "10.0.4.7/24", "10.0.0.0/24", "10.0.9.0/24"),
			want:  pfx("10.0.1.0/24", "10.0.3.0/24", "10.0.6.0/24")},
		{name: "none left", first: a("10.0.1.0"), last: a("10.0.2.0"), bits: 24, limit: 100,
			taken: pfx("10.0.1.0/24", "10.0.2.0/24"), want: nil},
		{name: "end of address space", first: a("255.255.254.0"), last: a("255.255.255.0"), bits: 24, limit: 100,
			want: pfx("255.255.254.0/24", "255.255.255.0/24")},
		{name: "v6", first: a("fc00:0:0:1::"), last: a("fc00:0:0:3::"), bits: 64, limit: 100,
			taken: pfx("fc00:0:0:2::/64", "10.0.0.0/8"), want: pfx("fc00:0:0:1::/64", "fc00:0:0:3::/64")},
		{name: "v6 end of space", first: a("ffff:ffff:ffff:ffff::"), last: a("ffff:ffff:ffff:ffff::"), bits: 64, limit: 100,
			want: pfx("ffff:ffff:ffff:ffff::/64")},
		{name: "mixed families", first: a("10.0.0.0"), last: a("fc00::"), bits: 24, limit: 100, want: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := freeSubnets(tc.first, tc.last, tc.bits, tc.taken, tc.limit)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestCompatibleAndSameNode(t *testing.T) {
	v4, err := subnet.ParseConfig(`{"Network":"10.5.0.0/16"}`)
	if err != nil {
		t.Fatal(err)
	}
	dual, err := subnet.ParseConfig(`{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48"}`)
	if err != nil {
		t.Fatal(err)
	}
	v6, err := subnet.ParseConfig(`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48"}`)
	if err != nil {
		t.Fatal(err)
	}
	lease := func(sn, sn6 string) subnet.Lease {
		var p, p6 netip.Prefix
		if sn != "" {
			p = netip.MustParsePrefix(sn)
		}
		if sn6 != "" {
			p6 = netip.MustParsePrefix(sn6)
		}
		return leaseFor(p, p6)
	}
	tests := []struct {
		name string
		cfg  *subnet.Config
		l    subnet.Lease
		want bool
	}{
		{"v4 fits", v4, lease("10.5.3.0/24", ""), true},
		{"v4 first subnet", v4, lease("10.5.0.0/24", ""), false},
		{"v4 other network", v4, lease("10.7.3.0/24", ""), false},
		{"v4 other length", v4, lease("10.5.3.0/25", ""), false},
		{"v4 config, lease has v6", v4, lease("10.5.3.0/24", "fc00:0:0:5::/64"), false},
		{"dual fits", dual, lease("10.5.3.0/24", "fc00:0:0:5::/64"), true},
		{"dual lacks v6", dual, lease("10.5.3.0/24", ""), false},
		{"v6 only fits", v6, lease("", "fc00:0:0:5::/64"), true},
		{"v6 only, lease has v4", v6, lease("10.5.3.0/24", "fc00:0:0:5::/64"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := compatible(tc.cfg, tc.l); got != tc.want {
				t.Fatalf("compatible = %v, want %v", got, tc.want)
			}
		})
	}

	me := &subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("198.51.100.1"), PublicIPv6: netip.MustParseAddr("fd00::1")}
	ent := func(pub, pub6 string) entry {
		return entry{c: subnet.Candidate{Lease: subnet.Lease{Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr(pub), PublicIPv6: netip.MustParseAddr(pub6)}}}}
	}
	other, mine := ent("198.51.100.2", "fd00::1"), ent("198.51.100.1", "fd00::2")
	if !sameNode(v4, me, &mine) || sameNode(v4, me, &other) {
		t.Error("IPv4 mode must match on PublicIP")
	}
	if sameNode(v6, me, &mine) || !sameNode(v6, me, &other) {
		t.Error("IPv6-only mode must match on PublicIPv6")
	}
	bad := mine
	bad.c.Origin.Defect = subnet.Reject(subnet.BadJSON, "bad")
	if sameNode(v4, me, &bad) {
		t.Error("a lease with an unreadable value must not match")
	}
	zero := entry{}
	if sameNode(v6, &subnet.LeaseAttrs{}, &zero) || sameNode(v4, &subnet.LeaseAttrs{}, &zero) {
		t.Error("unset addresses must never match (upstream's 0.0.0.0 collision)")
	}
}

func TestRetryDelay(t *testing.T) {
	r := retryDelay{min: 100 * time.Millisecond, max: time.Second}
	var got []time.Duration
	for range 6 {
		got = append(got, r.next())
	}
	want := []time.Duration{100e6, 200e6, 400e6, 800e6, 1e9, 1e9}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	r.reset()
	if d := r.next(); d != 100*time.Millisecond {
		t.Fatalf("after reset %v", d)
	}
}

func TestNewValidation(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{"defaults", Config{Endpoints: []string{"http://127.0.0.1:1"}}, false},
		{"margin too large", Config{Endpoints: []string{"http://127.0.0.1:1"}, LeaseTTL: time.Hour, RenewMargin: time.Hour}, true},
		{"ttl too short", Config{Endpoints: []string{"http://127.0.0.1:1"}, LeaseTTL: time.Millisecond, RenewMargin: time.Microsecond}, true},
		{"missing cert file", Config{Endpoints: []string{"https://127.0.0.1:1"}, KeyFile: "/nonexistent/k", CertFile: "/nonexistent/c"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := New(tc.cfg)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if m != nil {
				m.Close()
			}
		})
	}
}

func TestNameAndKeys(t *testing.T) {
	for _, tc := range []struct {
		prev   string
		prefix string
		name   string
		key    string
	}{
		{"", "", "Etcd Local Manager with Previous Subnet: None", "/coreos.com/network/subnets/10.5.85.0-24"},
		{"10.5.85.0/24", "/coreos.com/network/", "Etcd Local Manager with Previous Subnet: 10.5.85.0/24", "/coreos.com/network/subnets/10.5.85.0-24"},
		{"", "/vxlan/network", "Etcd Local Manager with Previous Subnet: None", "/vxlan/network/subnets/10.5.85.0-24"},
	} {
		cfg := Config{Endpoints: []string{"http://127.0.0.1:1"}, Prefix: tc.prefix}
		if tc.prev != "" {
			cfg.PrevSubnet = netip.MustParsePrefix(tc.prev)
		}
		m, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.Name(); got != tc.name {
			t.Errorf("Name() = %q, want %q", got, tc.name)
		}
		if got := m.subnetKey(netip.MustParsePrefix("10.5.85.0/24"), netip.Prefix{}); got != tc.key {
			t.Errorf("key = %q, want %q", got, tc.key)
		}
		m.Close()
	}
}
