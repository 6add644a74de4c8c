package subnet

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// Every check of the per-lease rule, in etcd and Kubernetes mode: the reason, and the
// detail naming the offending value.
func TestRuleCheck(t *testing.T) {
	good := vx("10.5.2.0/24", "192.0.2.12", "aa:aa:aa:aa:aa:02")
	with := func(f func(l *Lease)) Lease {
		l := good
		l.Attrs.BackendData = append(json.RawMessage(nil), good.Attrs.BackendData...)
		f(&l)
		return l
	}
	dual := dualLease("10.5.3.0/24", "fd00:5:3::/64", "192.0.2.13", "2001:db8::13", "aa:aa:aa:aa:aa:03")
	upstreamV6 := Lease{EnableIPv6: true, IPv6Subnet: mustPrefix("fd00:0:0:27::/64"), Attrs: LeaseAttrs{
		PublicIPv6: netip.MustParseAddr("2001:db8::2"), BackendType: "vxlan",
		BackendV6Data: json.RawMessage(`{"VNI":1,"VtepMAC":"0e:00:00:00:00:27"}`)}}
	v4 := testConfig(true, false)
	both := testConfig(true, true)
	v6 := testConfig(false, true)
	cases := []struct {
		name   string
		cfg    *Config
		kube   bool
		c      Candidate
		want   Reason // "" = admitted
		detail string
	}{
		{"good", v4, false, Candidate{Lease: good}, "", ""},
		{"good with its canonical name", v4, false, Candidate{Lease: good, Origin: Origin{Name: "10.5.2.0-24"}}, "", ""},
		{"defect found by the manager", v4, false, Candidate{Lease: good, Origin: Origin{Defect: Reject(BadJSON, "invalid character")}}, BadJSON, "invalid character"},
		{"alias key", v4, false, Candidate{Lease: good, Origin: Origin{Name: "10.5.2.7-24"}}, NonCanonicalKey, `"10.5.2.7-24" is not "10.5.2.0-24"`},
		{"alias key, leading junk", v4, false, Candidate{Lease: good, Origin: Origin{Name: "x10.5.2.0-24"}}, NonCanonicalKey, "x10.5.2.0-24"},
		{"kube: a node name is no key", v4, true, Candidate{Lease: good, Origin: Origin{Name: "node-a"}}, "", ""},
		{"outside the network", v4, false, Candidate{Lease: with(func(l *Lease) { l.Subnet = mustPrefix("192.168.1.0/24") })}, OutsideNetwork, "192.168.1.0/24 is outside the network 10.0.0.0/8"},
		{"wider than the network", v4, false, Candidate{Lease: with(func(l *Lease) { l.Subnet = mustPrefix("10.0.0.0/7") })}, OutsideNetwork, "outside"},
		{"no subnet", v4, false, Candidate{Lease: with(func(l *Lease) { l.Subnet = netip.Prefix{} })}, OutsideNetwork, "no subnet of an enabled family"},
		{"only a subnet of a disabled family", v4, false, Candidate{Lease: upstreamV6}, OutsideNetwork, "no subnet of an enabled family"},
		{"etcd: more specific than SubnetLen", v4, false, Candidate{Lease: with(func(l *Lease) { l.Subnet = mustPrefix("10.5.2.128/25") })}, WrongLength, "10.5.2.128/25 is not /24 long"},
		{"etcd: less specific", v4, false, Candidate{Lease: with(func(l *Lease) { l.Subnet = mustPrefix("10.5.0.0/16") })}, WrongLength, "not /24"},
		{"kube: any length inside", v4, true, Candidate{Lease: with(func(l *Lease) { l.Subnet = mustPrefix("10.5.2.128/25") })}, "", ""},
		{"no public IP", v4, false, Candidate{Lease: with(func(l *Lease) { l.Attrs.PublicIP = netip.Addr{} })}, BadPublicIP, "no public IPv4 address"},
		{"loopback", v4, false, Candidate{Lease: with(func(l *Lease) { l.Attrs.PublicIP = netip.MustParseAddr("127.0.0.1") })}, BadPublicIP, "loopback"},
		{"multicast", v4, false, Candidate{Lease: with(func(l *Lease) { l.Attrs.PublicIP = netip.MustParseAddr("224.0.0.1") })}, BadPublicIP, "multicast"},
		{"link-local", v4, false, Candidate{Lease: with(func(l *Lease) { l.Attrs.PublicIP = netip.MustParseAddr("169.254.7.7") })}, BadPublicIP, "link-local"},
		{"broadcast", v4, false, Candidate{Lease: with(func(l *Lease) { l.Attrs.PublicIP = netip.MustParseAddr("255.255.255.255") })}, BadPublicIP, "broadcast"},
		{"unspecified", v4, false, Candidate{Lease: with(func(l *Lease) { l.Attrs.PublicIP = netip.MustParseAddr("0.0.0.0") })}, BadPublicIP, "unspecified"},
		{"IPv6 in the IPv4 field", v4, false, Candidate{Lease: with(func(l *Lease) { l.Attrs.PublicIP = netip.MustParseAddr("2001:db8::1") })}, BadPublicIP, "not an IPv4 address"},
		{"a local address", v4, false, Candidate{Lease: with(func(l *Lease) { l.Attrs.PublicIP = netip.MustParseAddr("192.0.2.99") })}, LocalPublicIP, "192.0.2.99 is one of this node's"},
		{"no backend data", v4, false, Candidate{Lease: with(func(l *Lease) { l.Attrs.BackendData = nil })}, BadBackendData, "vxlan BackendData: no VtepMAC"},
		{"backend data of a type without a check", v4, false, Candidate{Lease: with(func(l *Lease) { l.Attrs.BackendType, l.Attrs.BackendData = "other", json.RawMessage(`[]`) })}, "", ""},
		{"dual-stack lease in an IPv4 network: an IPv4 peer", v4, false, Candidate{Lease: dual}, "", ""},
		{"dual stack", both, false, Candidate{Lease: dual}, "", ""},
		{"dual stack: bad IPv6 public IP", both, false, Candidate{Lease: func() Lease {
			l := dual
			l.Attrs.PublicIPv6 = netip.MustParseAddr("fe80::1")
			return l
		}()}, BadPublicIP, "link-local"},
		{"dual stack: IPv6 subnet outside", both, false, Candidate{Lease: func() Lease {
			l := dual
			l.IPv6Subnet = mustPrefix("fc00:1::/64")
			return l
		}()}, OutsideNetwork, "fc00:1::/64"},
		{"dual stack: no IPv6 backend data", both, false, Candidate{Lease: func() Lease {
			l := dual
			l.Attrs.BackendV6Data = nil
			return l
		}()}, BadBackendData, "BackendV6Data"},
		{"IPv6 only, as upstream writes it", v6, false, Candidate{Lease: upstreamV6, Origin: Origin{Name: "0.0.0.0-0&fd00:0:0:27::-64"}}, "", ""},
		{"IPv6 only: zoned public address", v6, false, Candidate{Lease: func() Lease {
			l := upstreamV6
			l.Attrs.PublicIPv6 = netip.MustParseAddr("2001:db8::2%eth0")
			return l
		}()}, BadPublicIP, "zone"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := testRule(tc.cfg, tc.kube, "192.0.2.99", "127.0.0.1")
			rej := r.Check(&tc.c)
			if tc.want == "" {
				if rej != nil {
					t.Fatalf("rejected: %v", rej)
				}
				return
			}
			if rej == nil {
				t.Fatalf("admitted, want %s", tc.want)
			}
			if rej.Reason != tc.want || !strings.Contains(rej.String(), tc.detail) {
				t.Fatalf("got %q, want reason %s with %q", rej, tc.want, tc.detail)
			}
		})
	}
}

// Leases as upstream's daemons write them (the golden values of the lease JSON tests,
// through the same decoder) pass the rule of their network.
func TestRuleAdmitsUpstreamLeases(t *testing.T) {
	for _, tc := range []struct {
		key, value string
		cfg        *Config
	}{
		{"10.5.85.0-24", `{"PublicIP":"198.51.100.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"4e:7c:fc:75:67:c4"}}`, testConfig(true, false)},
		{"10.5.86.0-24", `{"PublicIP":"198.51.100.2","BackendType":"vxlan","BackendData":{"VtepMAC":"4e:7c:fc:75:67:c5"}}`, testConfig(true, false)}, // v0.10: no VNI, no PublicIPv6
		{"10.5.87.0-24", `{"PublicIP":"198.51.100.2","PublicIPv6":null}`, testConfig(true, false)},                                                   // udp
		{"10.5.88.0-24", `{"PublicIP":"198.51.100.2","PublicIPv6":null,"BackendType":"host-gw"}`, testConfig(true, false)},
		{"10.12.13.0-24&fd00:12:13::-64", `{"PublicIP":"198.51.100.1","PublicIPv6":"2001:db8::1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"4e:7c:fc:75:67:c4"},"BackendV6Data":{"VNI":1,"VtepMAC":"4e:7c:fc:75:67:c5"}}`, testConfig(true, true)},
		{"0.0.0.0-0&fd00:0:0:27::-64", `{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::2","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"4e:7c:fc:75:67:c6"}}`, testConfig(false, true)},
	} {
		sn, sn6, err := ParseSubnetKey(tc.key)
		if err != nil {
			t.Fatal(err)
		}
		c := Candidate{Lease: Lease{EnableIPv4: sn.IsValid(), EnableIPv6: sn6.IsValid(), Subnet: sn, IPv6Subnet: sn6},
			Origin: Origin{Name: tc.key}}
		if err := json.Unmarshal([]byte(tc.value), &c.Lease.Attrs); err != nil {
			t.Fatal(err)
		}
		rule := NewRule(tc.cfg, RuleOptions{BackendData: map[string]func(json.RawMessage) error{
			"vxlan": vxlanCheck,
			"host-gw": func(d json.RawMessage) error {
				return map[bool]error{true: nil, false: errors.New("data")}[len(d) == 0]
			},
		}})
		if rej := rule.Check(&c); rej != nil {
			t.Errorf("%s %s: rejected: %v", tc.key, tc.value, rej)
		}
	}
}

// Taken: what a rejected lease keeps from the node's own allocation (etcd mode).
func TestRuleTaken(t *testing.T) {
	r := testRule(testConfig(true, false), false, "192.0.2.99")
	good := vx("10.5.2.0/24", "192.0.2.12", "aa:aa:aa:aa:aa:02")
	garbage := Candidate{Lease: Lease{Subnet: mustPrefix("10.5.3.0/24")}, Origin: Origin{Defect: Reject(BadJSON, "x")}}
	wide := Candidate{Lease: vx("10.5.0.0/16", "192.0.2.12", "aa:aa:aa:aa:aa:02")}
	alias := Candidate{Lease: good, Origin: Origin{Name: "10.5.2.9-24"}}
	for _, tc := range []struct {
		name string
		c    Candidate
		want bool
	}{
		{"a good lease takes its subnet", Candidate{Lease: good}, true},
		{"garbage on a canonical key takes that key", garbage, true},
		{"a lease of the wrong length takes nothing", wide, false},
		{"an alias key takes nothing", alias, false},
		{"a lease naming one of our addresses takes its subnet (the others admit it)", Candidate{Lease: vx("10.5.4.0/24", "192.0.2.99", "aa:aa:aa:aa:aa:04")}, true},
	} {
		if _, _, ok := r.Taken(&tc.c); ok != tc.want {
			t.Errorf("%s: taken %v, want %v", tc.name, ok, tc.want)
		}
	}
}

func TestCheckPublicIP(t *testing.T) {
	for s, ok := range map[string]bool{
		"192.0.2.1": true, "10.1.2.3": true, "2001:db8::1": true, "fd00::1": true,
		"0.0.0.0": false, "127.0.0.1": false, "224.0.0.5": false, "169.254.0.1": false, "255.255.255.255": false,
		"::": false, "::1": false, "ff02::1": false, "fe80::1": false, "::ffff:192.0.2.1": false,
	} {
		a := netip.MustParseAddr(s)
		if err := CheckPublicIP(a, a.Is6()); (err == nil) != ok {
			t.Errorf("%s: %v, want ok=%v", s, err, ok)
		}
	}
}

func TestIsSubnetKey(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sn, sn6 string
		want    bool
	}{
		{"10.5.1.0-24", "10.5.1.0/24", "", true},
		{"10.5.1.7-24", "10.5.1.0/24", "", false},
		{"10.5.1.0-24&fd00::-64", "10.5.1.0/24", "fd00::/64", true},
		{"10.5.1.0-24&fd00:0::-64", "10.5.1.0/24", "fd00::/64", false},
		{"0.0.0.0-0&fd00::-64", "", "fd00::/64", true},
	} {
		var sn, sn6 netip.Prefix
		if tc.sn != "" {
			sn = mustPrefix(tc.sn)
		}
		if tc.sn6 != "" {
			sn6 = mustPrefix(tc.sn6)
		}
		if got := IsSubnetKey(tc.name, sn, sn6); got != tc.want || (tc.want && MakeSubnetKey(sn, sn6) != tc.name) {
			t.Errorf("IsSubnetKey(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// FuzzRuleCheck: the rule never panics, and whatever it admits lies inside the network
// with the configured length, with usable public addresses that are not local.
func FuzzRuleCheck(f *testing.F) {
	f.Add("10.5.2.0-24", `{"PublicIP":"192.0.2.12","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:aa:aa:aa:aa:02"}}`, false, true)
	f.Add("10.5.2.7-24", `{"PublicIP":"127.0.0.1"}`, false, false)
	f.Add("10.5.2.0-24&fd00:5::-64", `{"PublicIP":"192.0.2.12","PublicIPv6":"2001:db8::1","BackendType":"vxlan","BackendData":{"VtepMAC":"x"},"BackendV6Data":{"VtepMAC":"y"}}`, true, true)
	f.Fuzz(func(t *testing.T, key, value string, kube, v6 bool) {
		sn, sn6, err := ParseSubnetKey(key)
		if err != nil {
			return
		}
		c := Candidate{Lease: Lease{Subnet: sn, IPv6Subnet: sn6}, Origin: Origin{Name: key}}
		if err := json.Unmarshal([]byte(value), &c.Lease.Attrs); err != nil {
			c.Origin.Defect = Reject(BadJSON, "%v", err)
		}
		cfg := testConfig(true, v6)
		r := testRule(cfg, kube, "192.0.2.99")
		if r.Check(&c) != nil {
			return
		}
		if c.Origin.Defect != nil {
			t.Fatal("a defect passed")
		}
		if !kube && !IsSubnetKey(key, sn, sn6) {
			t.Fatalf("non-canonical key %q passed", key)
		}
		has4, has6 := r.families(&c.Lease)
		if has4 && (!cfg.Network.Contains(sn.Addr()) || !kube && sn.Bits() != 24 || CheckPublicIP(c.Lease.Attrs.PublicIP, false) != nil || r.isLocal(c.Lease.Attrs.PublicIP)) {
			t.Fatalf("passed with IPv4 subnet %s, public %s", sn, c.Lease.Attrs.PublicIP)
		}
		if has6 && (!cfg.IPv6Network.Contains(sn6.Addr()) || !kube && sn6.Bits() != 64 || CheckPublicIP(c.Lease.Attrs.PublicIPv6, true) != nil) {
			t.Fatalf("passed with IPv6 subnet %s, public %s", sn6, c.Lease.Attrs.PublicIPv6)
		}
	})
}
