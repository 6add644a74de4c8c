package ipmatch

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeKernel is a kernel made of literal links and routes.
type fakeKernel struct {
	ls       []linkInfo
	rt       map[int][]routeInfo // by family
	reach    map[netip.Addr]routeInfo
	linksErr error
}

func (f fakeKernel) links() ([]linkInfo, error) {
	if f.linksErr != nil {
		return nil, f.linksErr
	}
	// Hand out a copy, as the real kernel reader does.
	out := make([]linkInfo, len(f.ls))
	copy(out, f.ls)
	return out, nil
}

func (f fakeKernel) routes(family int) ([]routeInfo, error) { return f.rt[family], nil }

func (f fakeKernel) routeTo(dst netip.Addr) (routeInfo, error) {
	r, ok := f.reach[dst]
	if !ok {
		return routeInfo{}, errors.New("network is unreachable")
	}
	return r, nil
}

const perm = unix.IFA_F_PERMANENT

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func permAddrs(ss ...string) []addrInfo {
	var out []addrInfo
	for _, s := range ss {
		out = append(out, addrInfo{Addr: mustAddr(s), Flags: perm})
	}
	return out
}

// baseLinks: lo, eth0 (default route), eth1 (two v4 + v6), eth2 (v6 only), mtu0, bond0.
func baseLinks() []linkInfo {
	return []linkInfo{
		{Index: 1, Name: "lo", MTU: 65536, Addrs: permAddrs("127.0.0.1", "::1")},
		{Index: 2, Name: "eth0", MTU: 1500, Addrs: permAddrs("192.0.2.10", "2001:db8::10", "fe80::10")},
		{Index: 3, Name: "eth1", MTU: 9000, Addrs: permAddrs("198.51.100.10", "198.51.100.20", "2001:db8:1::10")},
		{Index: 4, Name: "eth2", MTU: 1500, Addrs: permAddrs("2001:db8:2::10")},
		{Index: 5, Name: "mtu0", MTU: 0, Addrs: permAddrs("198.51.100.99")},
		{Index: 6, Name: "bond0", MTU: 1500, Addrs: permAddrs("198.51.100.150", "2001:db8:6::1")},
	}
}

func defaultRoutes(v4Link, v6Link int) map[int][]routeInfo {
	rt := map[int][]routeInfo{
		unix.AF_INET: {
			{LinkIndex: 3, Unicast: true}, // a connected route, not a default route
		},
	}
	if v4Link != 0 {
		rt[unix.AF_INET] = append(rt[unix.AF_INET], routeInfo{Default: true, Unicast: true, LinkIndex: v4Link, Priority: 100})
	}
	if v6Link != 0 {
		rt[unix.AF_INET6] = append(rt[unix.AF_INET6], routeInfo{Default: true, Unicast: true, LinkIndex: v6Link, Priority: 100})
	}
	return rt
}

type wantExt struct {
	iface              string
	ifaceAddr, ifaceV6 string
	extAddr, extV6Addr string
	mtu                int
}

func TestLookupFake(t *testing.T) {
	v4 := Options{EnableIPv4: true}
	dual := Options{EnableIPv4: true, EnableIPv6: true}
	v6 := Options{EnableIPv6: true}
	with := func(base Options, f func(*Options)) Options { f(&base); return base }

	tests := []struct {
		name    string
		k       fakeKernel
		opts    Options
		want    *wantExt
		wantErr string // exact error when set
		prefix  string // error prefix when set
	}{
		{
			name: "no selector: default route interface",
			k:    fakeKernel{ls: baseLinks(), rt: defaultRoutes(2, 2)},
			opts: v4,
			want: &wantExt{iface: "eth0", ifaceAddr: "192.0.2.10", extAddr: "192.0.2.10", mtu: 1500},
		},
		{
			name: "no selector: lowest metric default route wins, blackhole defaults ignored",
			k: fakeKernel{ls: baseLinks(), rt: map[int][]routeInfo{unix.AF_INET: {
				{Default: true, Unicast: false, LinkIndex: 0, Priority: 0},
				{Default: true, Unicast: true, LinkIndex: 2, Priority: 600},
				{Default: true, Unicast: true, LinkIndex: 3, Priority: 50},
			}}},
			opts: v4,
			want: &wantExt{iface: "eth1", ifaceAddr: "198.51.100.10", extAddr: "198.51.100.10", mtu: 9000},
		},
		{
			name:    "no selector: no default route",
			k:       fakeKernel{ls: baseLinks(), rt: defaultRoutes(0, 0)},
			opts:    v4,
			wantErr: "Failed to find any valid interface to use: no IPv4 default route found",
		},
		{
			name: "no selector: dual stack on one interface",
			k:    fakeKernel{ls: baseLinks(), rt: defaultRoutes(2, 2)},
			opts: dual,
			want: &wantExt{iface: "eth0", ifaceAddr: "192.0.2.10", ifaceV6: "2001:db8::10", extAddr: "192.0.2.10", extV6Addr: "2001:db8::10", mtu: 1500},
		},
		{
			name:    "no selector: dual stack default routes on different interfaces",
			k:       fakeKernel{ls: baseLinks(), rt: defaultRoutes(2, 3)},
			opts:    dual,
			wantErr: "Failed to find any valid interface to use: v6 default route interface eth1 must be the same with v4 default route interface eth0",
		},
		{
			name:    "no selector: dual stack without v6 default route",
			k:       fakeKernel{ls: baseLinks(), rt: defaultRoutes(2, 0)},
			opts:    dual,
			wantErr: "Failed to find any valid interface to use: no IPv6 default route found",
		},
		{
			name: "no selector: IPv6 only",
			k:    fakeKernel{ls: baseLinks(), rt: defaultRoutes(0, 4)},
			opts: v6,
			want: &wantExt{iface: "eth2", ifaceV6: "2001:db8:2::10", extV6Addr: "2001:db8:2::10", mtu: 1500},
		},
		{
			name: "no selector: public IP selects the interface owning it",
			k:    fakeKernel{ls: baseLinks(), rt: defaultRoutes(2, 2)},
			opts: with(v4, func(o *Options) { o.PublicIP = "198.51.100.20" }),
			want: &wantExt{iface: "eth1", ifaceAddr: "198.51.100.20", extAddr: "198.51.100.20", mtu: 9000},
		},
		{
			name:   "no selector: public IP must be local",
			k:      fakeKernel{ls: baseLinks(), rt: defaultRoutes(2, 2)},
			opts:   with(v4, func(o *Options) { o.PublicIP = "192.0.2.200" }),
			prefix: "Failed to find any valid interface to use: public IP 192.0.2.200 is not an address of any local interface",
		},
		{
			name: "no selector: public IPv6 selects the interface in dual stack",
			k:    fakeKernel{ls: baseLinks(), rt: defaultRoutes(2, 2)},
			opts: with(dual, func(o *Options) { o.PublicIPv6 = "2001:db8:1::10" }),
			want: &wantExt{iface: "eth1", ifaceAddr: "198.51.100.10", ifaceV6: "2001:db8:1::10", extAddr: "198.51.100.10", extV6Addr: "2001:db8:1::10", mtu: 9000},
		},
		{
			name:    "no selector: MTU 0",
			k:       fakeKernel{ls: baseLinks(), rt: defaultRoutes(5, 0)},
			opts:    v4,
			wantErr: "Failed to find any valid interface to use: failed to determine MTU for mtu0 interface",
		},
		{
			name:    "no selector: default interface without IPv4",
			k:       fakeKernel{ls: baseLinks(), rt: defaultRoutes(4, 0)},
			opts:    v4,
			wantErr: "Failed to find any valid interface to use: failed to find IPv4 address for interface eth2",
		},
		{
			name: "by name",
			k:    fakeKernel{ls: baseLinks(), rt: defaultRoutes(2, 2)},
			opts: with(v4, func(o *Options) { o.Ifaces = []string{"eth1"} }),
			want: &wantExt{iface: "eth1", ifaceAddr: "198.51.100.10", extAddr: "198.51.100.10", mtu: 9000},
		},
		{
			name: "by IPv4 address: that address is the interface address",
			k:    fakeKernel{ls: baseLinks(), rt: defaultRoutes(2, 2)},
			opts: with(v4, func(o *Options) { o.Ifaces = []string{"198.51.100.20"} }),
			want: &wantExt{iface: "eth1", ifaceAddr: "198.51.100.20", extAddr: "198.51.100.20", mtu: 9000},
		},
		{
			name: "by IPv6 address in dual stack",
			k:    fakeKernel{ls: baseLinks()},
			opts: with(dual, func(o *Options) { o.Ifaces = []string{"2001:db8:6::1"} }),
			want: &wantExt{iface: "bond0", ifaceAddr: "198.51.100.150", ifaceV6: "2001:db8:6::1", extAddr: "198.51.100.150", extV6Addr: "2001:db8:6::1", mtu: 1500},
		},
		{
			name: "public IP with a selector need not be local",
			k:    fakeKernel{ls: baseLinks()},
			opts: with(v4, func(o *Options) { o.Ifaces = []string{"eth0"}; o.PublicIP = "203.0.113.7" }),
			want: &wantExt{iface: "eth0", ifaceAddr: "192.0.2.10", extAddr: "203.0.113.7", mtu: 1500},
		},
		{
			name: "ifaces in order: missing, without IPv4, MTU 0, then a good one",
			k:    fakeKernel{ls: baseLinks()},
			opts: with(v4, func(o *Options) { o.Ifaces = []string{"nope0", "eth2", "mtu0", "192.0.2.99", "bond0", "eth0"} }),
			want: &wantExt{iface: "bond0", ifaceAddr: "198.51.100.150", extAddr: "198.51.100.150", mtu: 1500},
		},
		{
			name: "regex on addresses: the matching address is used",
			k:    fakeKernel{ls: baseLinks()},
			opts: with(v4, func(o *Options) { o.IfaceRegexes = []string{`^198\.51\.100\.2\d$`} }),
			want: &wantExt{iface: "eth1", ifaceAddr: "198.51.100.20", extAddr: "198.51.100.20", mtu: 9000},
		},
		{
			name: "regex on names",
			k:    fakeKernel{ls: baseLinks()},
			opts: with(v4, func(o *Options) { o.IfaceRegexes = []string{`^bond`} }),
			want: &wantExt{iface: "bond0", ifaceAddr: "198.51.100.150", extAddr: "198.51.100.150", mtu: 1500},
		},
		{
			name: "regex: addresses before names",
			// eth1 matches by name (earlier in the link list is eth0, matching by address).
			k:    fakeKernel{ls: baseLinks()},
			opts: with(v4, func(o *Options) { o.IfaceRegexes = []string{`eth1|192\.0\.2\.10`} }),
			want: &wantExt{iface: "eth0", ifaceAddr: "192.0.2.10", extAddr: "192.0.2.10", mtu: 1500},
		},
		{
			name: "regex: a name match that is not usable is skipped",
			k:    fakeKernel{ls: baseLinks()},
			opts: with(v4, func(o *Options) { o.IfaceRegexes = []string{`^(lo|mtu0|eth2|eth1)$`} }),
			want: &wantExt{iface: "eth1", ifaceAddr: "198.51.100.10", extAddr: "198.51.100.10", mtu: 9000},
		},
		{
			name: "regex in dual stack: both families must match on one interface",
			k:    fakeKernel{ls: baseLinks()},
			opts: with(dual, func(o *Options) {
				o.IfaceRegexes = []string{`^(192\.0\.2\.10|2001:db8:1::10|198\.51\.100\.150|2001:db8:6::1)$`}
			}),
			want: &wantExt{iface: "bond0", ifaceAddr: "198.51.100.150", ifaceV6: "2001:db8:6::1", extAddr: "198.51.100.150", extV6Addr: "2001:db8:6::1", mtu: 1500},
		},
		{
			name: "regexes in order",
			k:    fakeKernel{ls: baseLinks()},
			opts: with(v4, func(o *Options) { o.IfaceRegexes = []string{`^nomatch$`, `^eth0$`, `^eth1$`} }),
			want: &wantExt{iface: "eth0", ifaceAddr: "192.0.2.10", extAddr: "192.0.2.10", mtu: 1500},
		},
		{
			name: "can-reach: the route's source address is used",
			k: fakeKernel{ls: baseLinks(), reach: map[netip.Addr]routeInfo{
				mustAddr("198.51.100.77"): {LinkIndex: 3, Src: mustAddr("198.51.100.20"), Unicast: true},
			}},
			opts: with(v4, func(o *Options) { o.IfaceCanReach = "198.51.100.77" }),
			want: &wantExt{iface: "eth1", ifaceAddr: "198.51.100.20", extAddr: "198.51.100.20", mtu: 9000},
		},
		{
			name: "can-reach: an IPv6 target in dual stack",
			k: fakeKernel{ls: baseLinks(), reach: map[netip.Addr]routeInfo{
				mustAddr("2001:db8:99::1"): {LinkIndex: 6, Src: mustAddr("2001:db8:6::1"), Unicast: true},
			}},
			opts: with(dual, func(o *Options) { o.IfaceCanReach = "2001:db8:99::1" }),
			want: &wantExt{iface: "bond0", ifaceAddr: "198.51.100.150", ifaceV6: "2001:db8:6::1", extAddr: "198.51.100.150", extV6Addr: "2001:db8:6::1", mtu: 1500},
		},
		{
			name: "precedence: iface before regex before can-reach",
			k: fakeKernel{ls: baseLinks(), reach: map[netip.Addr]routeInfo{
				mustAddr("198.51.100.77"): {LinkIndex: 3, Src: mustAddr("198.51.100.20")},
			}},
			opts: with(v4, func(o *Options) {
				o.Ifaces = []string{"bond0"}
				o.IfaceRegexes = []string{"^eth0$"}
				o.IfaceCanReach = "198.51.100.77"
			}),
			want: &wantExt{iface: "bond0", ifaceAddr: "198.51.100.150", extAddr: "198.51.100.150", mtu: 1500},
		},
		{
			name: "precedence: regex before can-reach when no iface matches",
			k: fakeKernel{ls: baseLinks(), reach: map[netip.Addr]routeInfo{
				mustAddr("198.51.100.77"): {LinkIndex: 3, Src: mustAddr("198.51.100.20")},
			}},
			opts: with(v4, func(o *Options) {
				o.Ifaces = []string{"nope0"}
				o.IfaceRegexes = []string{"^eth0$"}
				o.IfaceCanReach = "198.51.100.77"
			}),
			want: &wantExt{iface: "eth0", ifaceAddr: "192.0.2.10", extAddr: "192.0.2.10", mtu: 1500},
		},
		{
			name: "precedence: can-reach last",
			k: fakeKernel{ls: baseLinks(), reach: map[netip.Addr]routeInfo{
				mustAddr("198.51.100.77"): {LinkIndex: 3, Src: mustAddr("198.51.100.20")},
			}},
			opts: with(v4, func(o *Options) {
				o.Ifaces = []string{"nope0"}
				o.IfaceRegexes = []string{"^nope$"}
				o.IfaceCanReach = "198.51.100.77"
			}),
			want: &wantExt{iface: "eth1", ifaceAddr: "198.51.100.20", extAddr: "198.51.100.20", mtu: 9000},
		},
		{
			name: "nothing matches",
			k:    fakeKernel{ls: baseLinks(), rt: defaultRoutes(2, 2)},
			opts: with(v4, func(o *Options) {
				o.Ifaces = []string{"nope0", "203.0.113.1"}
				o.IfaceRegexes = []string{"^zz"}
				o.IfaceCanReach = "198.51.100.250"
			}),
			wantErr: "Failed to find interface to use that matches the interfaces and/or regexes provided; the interfaces here are " +
				"lo (127.0.0.1, ::1), eth0 (192.0.2.10, 2001:db8::10, fe80::10), eth1 (198.51.100.10, 198.51.100.20, 2001:db8:1::10), " +
				"eth2 (2001:db8:2::10), mtu0 (198.51.100.99), bond0 (198.51.100.150, 2001:db8:6::1)",
		},
		{
			name:    "invalid public IP",
			k:       fakeKernel{ls: baseLinks()},
			opts:    with(v4, func(o *Options) { o.PublicIP = "2001:db8::1" }),
			wantErr: "invalid public IP address: 2001:db8::1",
		},
		{
			name:    "invalid public IPv6",
			k:       fakeKernel{ls: baseLinks()},
			opts:    with(dual, func(o *Options) { o.PublicIPv6 = "192.0.2.1" }),
			wantErr: "invalid public IPv6 address: 192.0.2.1",
		},
		{
			name:   "invalid regex",
			k:      fakeKernel{ls: baseLinks()},
			opts:   with(v4, func(o *Options) { o.IfaceRegexes = []string{"("} }),
			prefix: `invalid --iface-regex "("`,
		},
		{
			name:    "invalid can-reach",
			k:       fakeKernel{ls: baseLinks()},
			opts:    with(v4, func(o *Options) { o.IfaceCanReach = "host" }),
			wantErr: "invalid --iface-can-reach address: host",
		},
		{
			name:   "no family enabled",
			k:      fakeKernel{ls: baseLinks()},
			opts:   Options{Ifaces: []string{"eth0"}},
			prefix: "none defined stack",
		},
		{
			name:    "kernel error",
			k:       fakeKernel{linksErr: errors.New("boom")},
			opts:    v4,
			wantErr: "listing links: boom",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ext, err := lookup(tc.k, tc.opts)
			switch {
			case tc.wantErr != "" || tc.prefix != "":
				if err == nil {
					t.Fatalf("lookup: got %+v, want an error", ext)
				}
				if tc.wantErr != "" && err.Error() != tc.wantErr {
					t.Fatalf("lookup error = %q, want %q", err, tc.wantErr)
				}
				if tc.prefix != "" && !strings.HasPrefix(err.Error(), tc.prefix) {
					t.Fatalf("lookup error = %q, want prefix %q", err, tc.prefix)
				}
				return
			case err != nil:
				t.Fatalf("lookup: %v", err)
			}
			checkExt(t, ext, tc.want)
		})
	}
}

// describe flattens an ExternalInterface for comparison; zero addresses become "".
func describe(ext *Interface) wantExt {
	str := func(a netip.Addr) string {
		if !a.IsValid() {
			return ""
		}
		return a.String()
	}
	return wantExt{
		iface: ext.Iface.Name, mtu: ext.Iface.MTU,
		ifaceAddr: str(ext.IfaceAddr), ifaceV6: str(ext.IfaceV6Addr),
		extAddr: str(ext.ExtAddr), extV6Addr: str(ext.ExtV6Addr),
	}
}

func checkExt(t *testing.T, ext *Interface, want *wantExt) {
	t.Helper()
	if ext == nil || ext.Iface == nil {
		t.Fatalf("got %+v, want %+v", ext, *want)
	}
	if got := describe(ext); got != *want {
		t.Errorf("got  %+v\nwant %+v", got, *want)
	}
}

func TestUsableAddrs(t *testing.T) {
	const (
		dep  = unix.IFA_F_DEPRECATED
		tent = unix.IFA_F_TENTATIVE
		temp = unix.IFA_F_TEMPORARY
		dadf = unix.IFA_F_DADFAILED
	)
	tests := []struct {
		name  string
		addrs []addrInfo
		v6    bool
		want  []string
	}{
		{
			name: "global before link-local, loopback and multicast unusable",
			addrs: []addrInfo{
				{mustAddr("fe80::1"), perm}, {mustAddr("::1"), perm}, {mustAddr("ff02::1"), perm}, {mustAddr("2001:db8::1"), perm},
			},
			v6:   true,
			want: []string{"2001:db8::1", "fe80::1"},
		},
		{
			name: "permanent before dynamic, non-temporary before temporary",
			addrs: []addrInfo{
				{mustAddr("2001:db8::1"), temp}, {mustAddr("2001:db8::2"), 0}, {mustAddr("2001:db8::3"), perm},
			},
			v6:   true,
			want: []string{"2001:db8::3", "2001:db8::2", "2001:db8::1"},
		},
		{
			name: "deprecated, tentative and dad-failed are skipped",
			addrs: []addrInfo{
				{mustAddr("2001:db8::1"), perm | dep}, {mustAddr("2001:db8::2"), perm | tent}, {mustAddr("2001:db8::3"), perm | dadf}, {mustAddr("2001:db8::4"), 0},
			},
			v6:   true,
			want: []string{"2001:db8::4"},
		},
		{
			name: "IPv4: family filter, kernel order kept, link-local last",
			addrs: []addrInfo{
				{mustAddr("169.254.1.1"), perm}, {mustAddr("198.51.100.2"), perm}, {mustAddr("2001:db8::1"), perm}, {mustAddr("192.0.2.1"), perm}, {mustAddr("127.0.0.1"), perm},
			},
			want: []string{"198.51.100.2", "192.0.2.1", "169.254.1.1"},
		},
		{
			name:  "nothing usable",
			addrs: []addrInfo{{mustAddr("127.0.0.1"), perm}, {mustAddr("0.0.0.0"), perm}, {mustAddr("255.255.255.255"), perm}},
			want:  nil,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := usableAddrs(&linkInfo{Name: "x", Addrs: tc.addrs}, tc.v6)
			var gs []string
			for _, a := range got {
				gs = append(gs, a.String())
			}
			if strings.Join(gs, ",") != strings.Join(tc.want, ",") {
				t.Errorf("usableAddrs = %v, want %v", gs, tc.want)
			}
		})
	}
}

// FuzzLookup feeds arbitrary selector and public-IP strings to the selection over a
// fixed fake kernel: it must never panic, and a success must name a known interface
// with addresses of the enabled families.
func FuzzLookup(f *testing.F) {
	f.Add("eth1", `^198\.`, "198.51.100.77", "", "", uint8(1))
	f.Add("2001:db8:6::1", "bond", "", "192.0.2.10", "2001:db8::10", uint8(3))
	f.Add("", "", "", "", "", uint8(2))
	f.Add("198.51.100.20", "(", "x", "1.2.3.4", "::", uint8(0))
	f.Fuzz(func(t *testing.T, iface, regex, reach, pub4, pub6 string, fam uint8) {
		opts := Options{IfaceCanReach: reach, PublicIP: pub4, PublicIPv6: pub6, EnableIPv4: fam&1 != 0, EnableIPv6: fam&2 != 0}
		if iface != "" {
			opts.Ifaces = []string{iface}
		}
		if regex != "" {
			opts.IfaceRegexes = []string{regex}
		}
		k := fakeKernel{ls: baseLinks(), rt: defaultRoutes(2, 2), reach: map[netip.Addr]routeInfo{
			mustAddr("198.51.100.77"): {LinkIndex: 3, Src: mustAddr("198.51.100.20")},
		}}
		ext, err := lookup(k, opts)
		if err != nil {
			return
		}
		if ext.Iface == nil || linkByIndex(baseLinks(), ext.Iface.Index) == nil {
			t.Fatalf("unknown interface in %+v", ext)
		}
		if opts.EnableIPv4 != ext.IfaceAddr.Is4() || opts.EnableIPv4 != ext.ExtAddr.Is4() {
			t.Errorf("IPv4 enabled=%v but addresses %v / %v", opts.EnableIPv4, ext.IfaceAddr, ext.ExtAddr)
		}
		if opts.EnableIPv6 != ext.IfaceV6Addr.Is6() || opts.EnableIPv6 != ext.ExtV6Addr.Is6() {
			t.Errorf("IPv6 enabled=%v but addresses %v / %v", opts.EnableIPv6, ext.IfaceV6Addr, ext.ExtV6Addr)
		}
	})
}
