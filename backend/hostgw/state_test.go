package hostgw

import (
	"encoding/json"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/subnet"
)

func lease(sn, pub, typ string) subnet.Lease {
	l := subnet.Lease{EnableIPv4: true, Attrs: subnet.LeaseAttrs{BackendType: typ}}
	if sn != "" {
		l.Subnet = netip.MustParsePrefix(sn)
	}
	if pub != "" {
		l.Attrs.PublicIP = netip.MustParseAddr(pub)
	}
	return l
}

func lease6(sn, sn6, pub6 string) subnet.Lease {
	l := lease(sn, "192.0.2.9", BackendType)
	l.EnableIPv6 = true
	l.IPv6Subnet = netip.MustParsePrefix(sn6)
	if pub6 != "" {
		l.Attrs.PublicIPv6 = netip.MustParseAddr(pub6)
	}
	return l
}

func TestDesired(t *testing.T) {
	p4 := params{Ext: 7, Network: netip.MustParsePrefix("10.5.0.0/16"), Own: netip.MustParsePrefix("10.5.1.0/24")}
	p6 := params{V6: true, Ext: 7, Network: netip.MustParsePrefix("fd00:5::/48"), Own: netip.MustParsePrefix("fd00:5:0:1::/64")}
	tests := []struct {
		name      string
		p         params
		peers     []subnet.Lease
		want      []string // "dst via gw prio"
		wantProbs []string // substrings, one per problem, in order
	}{
		{name: "empty", p: p4},
		{
			name:  "two peers",
			p:     p4,
			peers: []subnet.Lease{lease("10.5.2.0/24", "192.0.2.2", "host-gw"), lease("10.5.3.0/24", "192.0.2.3", "host-gw")},
			want:  []string{"10.5.2.0/24 via 192.0.2.2 0", "10.5.3.0/24 via 192.0.2.3 0"},
		},
		{
			name:  "own lease skipped silently",
			p:     p4,
			peers: []subnet.Lease{lease("10.5.1.0/24", "192.0.2.1", "host-gw")},
		},
		{
			name: "other backends and udp leases skipped",
			p:    p4,
			peers: []subnet.Lease{lease("10.5.2.0/24", "192.0.2.2", "vxlan"), lease("10.5.3.0/24", "192.0.2.3", ""),
				lease("10.5.4.0/24", "192.0.2.4", "host-gw")},
			want:      []string{"10.5.4.0/24 via 192.0.2.4 0"},
			wantProbs: []string{`"vxlan" is not host-gw`, `"" is not host-gw`},
		},
		{
			name:      "outside network",
			p:         p4,
			peers:     []subnet.Lease{lease("10.6.2.0/24", "192.0.2.2", "host-gw"), lease("10.0.0.0/8", "192.0.2.3", "host-gw")},
			wantProbs: []string{"outside the network", "outside the network"},
		},
		{
			name:      "no public address",
			p:         p4,
			peers:     []subnet.Lease{lease("10.5.2.0/24", "", "host-gw")},
			wantProbs: []string{"no IPv4 public address"},
		},
		{
			name:      "leased twice",
			p:         p4,
			peers:     []subnet.Lease{lease("10.5.2.0/24", "192.0.2.2", "host-gw"), lease("10.5.2.0/24", "192.0.2.3", "host-gw")},
			want:      []string{"10.5.2.0/24 via 192.0.2.2 0"},
			wantProbs: []string{"leased twice"},
		},
		{
			name:  "unmasked subnet masked",
			p:     p4,
			peers: []subnet.Lease{lease("10.5.2.7/24", "192.0.2.2", "host-gw")},
			want:  []string{"10.5.2.0/24 via 192.0.2.2 0"},
		},
		{
			name:  "ipv6",
			p:     p6,
			peers: []subnet.Lease{lease6("10.5.2.0/24", "fd00:5:0:2::/64", "2001:db8::2"), lease6("10.5.1.0/24", "fd00:5:0:1::/64", "2001:db8::1")},
			want:  []string{"fd00:5:0:2::/64 via 2001:db8::2 1024"},
		},
		{
			name:      "ipv6 without v6 parts",
			p:         p6,
			peers:     []subnet.Lease{lease("10.5.2.0/24", "192.0.2.2", "host-gw"), lease6("10.5.3.0/24", "fd00:5:0:3::/64", "")},
			wantProbs: []string{"no IPv6 subnet", "no IPv6 public address"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := map[netip.Prefix]route{netip.MustParsePrefix("10.9.9.0/24"): {}} // cleared
			probs := desired(tc.p, subnet.PeersOf(tc.peers...), out, nil)
			var got []string
			for _, r := range out {
				if r.Link != 7 {
					t.Errorf("route %v: link %d, want 7", r.Dst, r.Link)
				}
				if r.Peer == "" {
					t.Errorf("route %v: no peer name", r.Dst)
				}
				got = append(got, r.Dst.String()+" via "+r.Gw.String()+" "+itoa(r.Prio))
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("routes %q, want %q", got, tc.want)
			}
			if len(probs) != len(tc.wantProbs) {
				t.Fatalf("problems %+v, want %d matching %q", probs, len(tc.wantProbs), tc.wantProbs)
			}
			for i, p := range probs {
				if !strings.Contains(p.Reason, tc.wantProbs[i]) || p.Peer == "" {
					t.Errorf("problem %d %+v, want reason containing %q and a peer", i, p, tc.wantProbs[i])
				}
			}
		})
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

func TestDiff(t *testing.T) {
	pfx := netip.MustParsePrefix
	addr := netip.MustParseAddr
	w := func(dst, gw string) route { return route{Dst: pfx(dst), Gw: addr(gw), Link: 7} }
	tests := []struct {
		name     string
		want     []route
		act      []route
		del, set []string // "dst via gw"
	}{
		{name: "nothing"},
		{name: "all missing", want: []route{w("10.5.2.0/24", "192.0.2.2")}, set: []string{"10.5.2.0/24 via 192.0.2.2"}},
		{name: "in place", want: []route{w("10.5.2.0/24", "192.0.2.2")}, act: []route{w("10.5.2.0/24", "192.0.2.2")}},
		{name: "stray removed", act: []route{w("10.5.9.0/24", "192.0.2.9")}, del: []string{"10.5.9.0/24 via 192.0.2.9"}},
		{
			name: "gateway changed: replaced, not deleted",
			want: []route{w("10.5.2.0/24", "192.0.2.3")}, act: []route{w("10.5.2.0/24", "192.0.2.2")},
			set: []string{"10.5.2.0/24 via 192.0.2.3"},
		},
		{
			name: "other metric: deleted and set",
			want: []route{w("10.5.2.0/24", "192.0.2.2")},
			act:  []route{{Dst: pfx("10.5.2.0/24"), Gw: addr("192.0.2.2"), Link: 7, Prio: 100}},
			del:  []string{"10.5.2.0/24 via 192.0.2.2"}, set: []string{"10.5.2.0/24 via 192.0.2.2"},
		},
		{
			name: "onlink flag or extra attributes: replaced",
			want: []route{w("10.5.2.0/24", "192.0.2.2"), w("10.5.3.0/24", "192.0.2.3")},
			act: []route{{Dst: pfx("10.5.2.0/24"), Gw: addr("192.0.2.2"), Link: 7, Onlink: true},
				{Dst: pfx("10.5.3.0/24"), Gw: addr("192.0.2.3"), Link: 7, Extra: true}},
			set: []string{"10.5.2.0/24 via 192.0.2.2", "10.5.3.0/24 via 192.0.2.3"},
		},
		{
			name: "exact copy plus a second route: the second deleted",
			want: []route{w("10.5.2.0/24", "192.0.2.2")},
			act:  []route{w("10.5.2.0/24", "192.0.2.5"), w("10.5.2.0/24", "192.0.2.2")},
			del:  []string{"10.5.2.0/24 via 192.0.2.5"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := map[netip.Prefix]route{}
			for _, r := range tc.want {
				want[r.Dst] = r
			}
			var o ops
			diff(want, tc.act, &o)
			str := func(rs []route) []string {
				var s []string
				for _, r := range rs {
					s = append(s, r.Dst.String()+" via "+r.Gw.String())
				}
				slices.Sort(s)
				return s
			}
			if got := str(o.del); !slices.Equal(got, tc.del) {
				t.Errorf("del %q, want %q", got, tc.del)
			}
			if got := str(o.set); !slices.Equal(got, tc.set) {
				t.Errorf("set %q, want %q", got, tc.set)
			}
		})
	}
}

func TestNewRefusesNAT(t *testing.T) {
	cfg, err := subnet.ParseConfig(`{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}`)
	if err != nil {
		t.Fatal(err)
	}
	ext := testExt()
	ext.ExtAddr = netip.MustParseAddr("198.51.100.1")
	if _, err := newBackend(nil, ext, cfg); err == nil || err.Error() != natError {
		t.Fatalf("New with ExtAddr != IfaceAddr: %v, want %q", err, natError)
	}
	b, err := newBackend(nil, testExt(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	attrs, err := b.Prepare(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(attrs)
	if string(js) != `{"PublicIP":"192.0.2.1","PublicIPv6":null,"BackendType":"host-gw"}` {
		t.Errorf("attrs %s", js)
	}
	if b.MTU() != 1500 || len(b.Devices()) != 0 {
		t.Errorf("MTU %d devices %v, want 1500 and none", b.MTU(), b.Devices())
	}
}

func testExt() *backend.ExternalInterface {
	return &backend.ExternalInterface{
		Iface:     &net.Interface{Index: 7, Name: "eth0", MTU: 1500},
		IfaceAddr: netip.MustParseAddr("192.0.2.1"),
		ExtAddr:   netip.MustParseAddr("192.0.2.1"),
	}
}
