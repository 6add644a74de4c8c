package vxlan

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/flannel-go/flannel/subnet"
)

func mac(s string) hwAddr {
	bd, err := parseBackendData([]byte(`{"VtepMAC":"` + s + `"}`))
	if err != nil {
		panic(err)
	}
	return bd.MAC
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func ip(s string) netip.Addr    { return netip.MustParseAddr(s) }

func lease(sn, pub, data string) subnet.Lease {
	l := subnet.Lease{Attrs: subnet.LeaseAttrs{BackendType: "vxlan"}}
	if sn != "" {
		l.Subnet = pfx(sn)
	}
	if pub != "" {
		l.Attrs.PublicIP = ip(pub)
	}
	if data != "" {
		l.Attrs.BackendData = json.RawMessage(data)
	}
	return l
}

func withV6(l subnet.Lease, sn, pub, data string) subnet.Lease {
	if sn != "" {
		l.IPv6Subnet = pfx(sn)
	}
	if pub != "" {
		l.Attrs.PublicIPv6 = ip(pub)
	}
	if data != "" {
		l.Attrs.BackendV6Data = json.RawMessage(data)
	}
	return l
}

func vd(m string) string { return `{"VNI":1,"VtepMAC":"` + m + `"}` }

func newV4State() famState { return newFamState(false) }

// render turns a state into sorted lines, for comparison.
func render(s famState) []string {
	var out []string
	for ip, m := range s.neighs() {
		out = append(out, fmt.Sprintf("neigh %s %s", ip, m))
	}
	for m, d := range s.fdbs() {
		out = append(out, fmt.Sprintf("fdb %s %s", m, d))
	}
	for r := range s.allRoutes() {
		out = append(out, renderRoute(r))
	}
	slices.Sort(out)
	return out
}

func renderRoute(r route) string {
	s := fmt.Sprintf("route %s via %s dev %d", r.Dst, r.Gw, r.Link)
	if r.Onlink {
		s += " onlink"
	}
	if r.Prio != 0 {
		s += fmt.Sprintf(" metric %d", r.Prio)
	}
	if r.ViaNH {
		s += " (nexthop object)"
	}
	return s
}

func TestDesiredFamily(t *testing.T) {
	v4 := famParams{VNI: 1, Dev: 10, Ext: 2, Network: pfx("10.5.0.0/16"), Own: pfx("10.5.1.0/24")}
	v6 := famParams{V6: true, VNI: 1, Dev: 11, Ext: 2, Network: pfx("fd00:5::/48"), Own: pfx("fd00:5:0:1::/64")}
	direct := func(p famParams) famParams {
		p.Direct = true
		p.IsDirect = func(a netip.Addr) bool { return a == ip("192.0.2.2") || a == ip("2001:db8::2") }
		return p
	}
	p2 := lease("10.5.2.0/24", "192.0.2.2", vd("0e:00:00:00:00:02"))
	p3 := lease("10.5.3.0/24", "198.51.100.3", vd("0e:00:00:00:00:03"))
	d2 := withV6(p2, "fd00:5:0:2::/64", "2001:db8::2", vd("0e:00:00:00:06:02"))
	d3 := withV6(p3, "fd00:5:0:3::/64", "2001:db8:100::3", vd("0e:00:00:00:06:03"))
	hostgw := lease("10.5.4.0/24", "192.0.2.4", "")
	hostgw.Attrs.BackendType = "host-gw"
	udp := lease("10.5.5.0/24", "192.0.2.5", "")
	udp.Attrs.BackendType = ""

	cases := []struct {
		name      string
		p         famParams
		peers     []subnet.Lease
		want      []string
		wantProbs []string
	}{
		{name: "no peers", p: v4},
		{name: "v4 two peers", p: v4, peers: []subnet.Lease{p2, p3}, want: []string{
			"fdb 0e:00:00:00:00:02 192.0.2.2",
			"fdb 0e:00:00:00:00:03 198.51.100.3",
			"neigh 10.5.2.0 0e:00:00:00:00:02",
			"neigh 10.5.3.0 0e:00:00:00:00:03",
			"route 10.5.2.0/24 via 10.5.2.0 dev 10 onlink",
			"route 10.5.3.0/24 via 10.5.3.0 dev 10 onlink",
		}},
		{name: "own lease skipped silently", p: v4, peers: []subnet.Lease{lease("10.5.1.0/24", "192.0.2.1", vd("0e:00:00:00:00:01"))}},
		{name: "v6 two peers", p: v6, peers: []subnet.Lease{d2, d3}, want: []string{
			"fdb 0e:00:00:00:06:02 2001:db8::2",
			"fdb 0e:00:00:00:06:03 2001:db8:100::3",
			"neigh fd00:5:0:2:: 0e:00:00:00:06:02",
			"neigh fd00:5:0:3:: 0e:00:00:00:06:03",
			"route fd00:5:0:2::/64 via fd00:5:0:2:: dev 11 onlink metric 1024",
			"route fd00:5:0:3::/64 via fd00:5:0:3:: dev 11 onlink metric 1024",
		}},
		{name: "v6 family skips v4-only peers", p: v6, peers: []subnet.Lease{p2},
			wantProbs: []string{"10.5.2.0-24: no IPv6 subnet"}},
		{name: "v4 family of a dual peer uses the v4 data", p: v4, peers: []subnet.Lease{d2}, want: []string{
			"fdb 0e:00:00:00:00:02 192.0.2.2",
			"neigh 10.5.2.0 0e:00:00:00:00:02",
			"route 10.5.2.0/24 via 10.5.2.0 dev 10 onlink",
		}},
		{name: "mixed backends", p: v4, peers: []subnet.Lease{hostgw, p2, udp}, want: []string{
			"fdb 0e:00:00:00:00:02 192.0.2.2",
			"neigh 10.5.2.0 0e:00:00:00:00:02",
			"route 10.5.2.0/24 via 10.5.2.0 dev 10 onlink",
		}, wantProbs: []string{`10.5.4.0-24: backend type "host-gw" is not vxlan (skip: other_backend)`, `10.5.5.0-24: backend type "" is not vxlan (skip: other_backend)`}},
		{name: "another VNI", p: v4, peers: []subnet.Lease{
			lease("10.5.6.0/24", "192.0.2.6", `{"VNI":2,"VtepMAC":"0e:00:00:00:00:06"}`),
			lease("10.5.7.0/24", "192.0.2.7", `{"VtepMAC":"0e:00:00:00:00:07"}`), // v0.10: no VNI, taken as ours
		}, want: []string{
			"fdb 0e:00:00:00:00:07 192.0.2.7",
			"neigh 10.5.7.0 0e:00:00:00:00:07",
			"route 10.5.7.0/24 via 10.5.7.0 dev 10 onlink",
		}, wantProbs: []string{"10.5.6.0-24: VNI 2, ours is 1 (skip: other_vni)"}},
		{name: "bad backend data", p: v4, peers: []subnet.Lease{
			lease("10.5.6.0/24", "192.0.2.6", `{"VtepMAC":"nonsense"}`),
			lease("10.5.7.0/24", "192.0.2.7", ``),
			lease("10.5.8.0/24", "192.0.2.8", vd("00:00:00:00:00:00")),
			lease("10.5.9.0/24", "192.0.2.9", `{"VtepMAC":`),
			p3,
		}, want: []string{
			"fdb 0e:00:00:00:00:03 198.51.100.3",
			"neigh 10.5.3.0 0e:00:00:00:00:03",
			"route 10.5.3.0/24 via 10.5.3.0 dev 10 onlink",
		}, wantProbs: []string{
			`10.5.6.0-24: IPv4: bad VtepMAC "nonsense"`,
			"10.5.7.0-24: IPv4: no backend data",
			`10.5.8.0-24: IPv4: VtepMAC "00:00:00:00:00:00" is not a unicast address`,
			"10.5.9.0-24: IPv4: bad backend data: unexpected end of JSON input",
		}},
		{name: "no public address", p: v4, peers: []subnet.Lease{lease("10.5.2.0/24", "", vd("0e:00:00:00:00:02"))},
			wantProbs: []string{"10.5.2.0-24: no IPv4 public address"}},
		{name: "subnet outside the network", p: v4, peers: []subnet.Lease{lease("10.6.2.0/24", "192.0.2.2", vd("0e:00:00:00:00:02"))},
			wantProbs: []string{"10.6.2.0-24: IPv4 subnet 10.6.2.0/24 is outside the network 10.5.0.0/16"}},
		{name: "duplicate subnet keeps the first", p: v4, peers: []subnet.Lease{p2, lease("10.5.2.0/24", "192.0.2.22", vd("0e:00:00:00:00:22"))},
			want: []string{
				"fdb 0e:00:00:00:00:02 192.0.2.2",
				"neigh 10.5.2.0 0e:00:00:00:00:02",
				"route 10.5.2.0/24 via 10.5.2.0 dev 10 onlink",
			}, wantProbs: []string{"10.5.2.0-24: IPv4 subnet 10.5.2.0/24 is leased twice; using the first lease"}},
		{name: "duplicate MAC on another host skipped", p: v4, peers: []subnet.Lease{p2, lease("10.5.3.0/24", "192.0.2.3", vd("0e:00:00:00:00:02"))},
			want: []string{
				"fdb 0e:00:00:00:00:02 192.0.2.2",
				"neigh 10.5.2.0 0e:00:00:00:00:02",
				"route 10.5.2.0/24 via 10.5.2.0 dev 10 onlink",
			}, wantProbs: []string{"10.5.3.0-24: VtepMAC 0e:00:00:00:00:02 is also used by the peer at 192.0.2.2; skipped"}},
		{name: "direct routing", p: direct(v4), peers: []subnet.Lease{p2, p3}, want: []string{
			"fdb 0e:00:00:00:00:03 198.51.100.3",
			"neigh 10.5.3.0 0e:00:00:00:00:03",
			"route 10.5.2.0/24 via 192.0.2.2 dev 2",
			"route 10.5.3.0/24 via 10.5.3.0 dev 10 onlink",
		}},
		{name: "direct routing v6", p: direct(v6), peers: []subnet.Lease{d2, d3}, want: []string{
			"fdb 0e:00:00:00:06:03 2001:db8:100::3",
			"neigh fd00:5:0:3:: 0e:00:00:00:06:03",
			"route fd00:5:0:2::/64 via 2001:db8::2 dev 2 metric 1024",
			"route fd00:5:0:3::/64 via fd00:5:0:3:: dev 11 onlink metric 1024",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := newFamState(tc.p.V6)
			out.setNeigh(ip("10.9.9.9"), hwAddr{}) // must be reset
			probs := desiredFamily(tc.p, subnet.PeersOf(tc.peers...), out, nil)
			if got := render(out); !slices.Equal(got, tc.want) {
				t.Errorf("desired:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			var gotProbs []string
			for _, p := range probs {
				s := p.Peer + ": " + p.Reason
				if p.Skip != "" {
					s += " (skip: " + p.Skip + ")"
				}
				gotProbs = append(gotProbs, s)
			}
			if !slices.Equal(gotProbs, tc.wantProbs) {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(gotProbs, "\n"), strings.Join(tc.wantProbs, "\n"))
			}
		})
	}
}

// renderOps turns operations into sorted lines.
func renderOps(o *ops) []string {
	var out []string
	for _, r := range o.delRoutes {
		out = append(out, "del "+renderRoute(r))
	}
	for _, e := range o.delFDB {
		out = append(out, fmt.Sprintf("del fdb %s %s", e.MAC, e.Dst))
	}
	for _, e := range o.delNeigh {
		out = append(out, fmt.Sprintf("del neigh %s", e.IP))
	}
	for _, e := range o.setNeigh {
		out = append(out, fmt.Sprintf("set neigh %s %s", e.IP, e.MAC))
	}
	for _, e := range o.setFDB {
		out = append(out, fmt.Sprintf("set fdb %s %s", e.MAC, e.Dst))
	}
	for i := range o.setRoutes {
		out = append(out, "set "+renderRoute(o.setRoute(i)))
	}
	for _, gw := range o.addNH {
		out = append(out, fmt.Sprintf("add nexthop via %s", gw))
	}
	for _, id := range o.delNH {
		out = append(out, fmt.Sprintf("del nexthop id %d", id))
	}
	slices.Sort(out)
	return out
}

func TestDiffNexthops(t *testing.T) {
	m2, m3 := mac("0e:00:00:00:00:02"), mac("0e:00:00:00:00:03")
	p := famParams{VNI: 1, Dev: 10, Ext: 2, Network: pfx("10.5.0.0/16"), Own: pfx("10.5.1.0/24"), Nexthops: true}
	peers := []subnet.Lease{
		lease("10.5.2.0/24", "192.0.2.2", vd("0e:00:00:00:00:02")),
		lease("10.5.3.0/24", "198.51.100.3", vd("0e:00:00:00:00:03")),
	}
	want := newV4State()
	if probs := desiredFamily(p, subnet.PeersOf(peers...), want, nil); len(probs) != 0 {
		t.Fatalf("problems %v", probs)
	}
	for r := range want.allRoutes() {
		if !r.ViaNH {
			t.Fatalf("desired route without nexthop object: %+v", r)
		}
	}
	// the actual state of a node in sync: nexthop 7 via 10.5.2.0, 8 via 10.5.3.0
	nhRoute := func(sn string, id uint32) route {
		pr := pfx(sn)
		return route{Dst: pr, Gw: pr.Addr(), Link: 10, Onlink: true, ViaNH: true, NhID: id}
	}
	synced := func() famState {
		s := newV4State()
		s.setNeigh(ip("10.5.2.0"), m2)
		s.setNeigh(ip("10.5.3.0"), m3)
		s.setFDB(m2, ip("192.0.2.2"))
		s.setFDB(m3, ip("198.51.100.3"))
		s.setNH(ip("10.5.2.0"), 7)
		s.setNH(ip("10.5.3.0"), 8)
		s.setRoute(nhRoute("10.5.2.0/24", 7))
		s.setRoute(nhRoute("10.5.3.0/24", 8))
		return s
	}
	cases := []struct {
		name string
		act  func() famState
		want []string
	}{
		{name: "in sync", act: synced},
		{name: "nothing yet", act: newV4State, want: []string{
			"add nexthop via 10.5.2.0",
			"add nexthop via 10.5.3.0",
			"set fdb 0e:00:00:00:00:02 192.0.2.2",
			"set fdb 0e:00:00:00:00:03 198.51.100.3",
			"set neigh 10.5.2.0 0e:00:00:00:00:02",
			"set neigh 10.5.3.0 0e:00:00:00:00:03",
			"set route 10.5.2.0/24 via 10.5.2.0 dev 10 onlink (nexthop object)",
			"set route 10.5.3.0/24 via 10.5.3.0 dev 10 onlink (nexthop object)",
		}},
		{name: "plain routes (upstream flanneld's) are replaced", act: func() famState {
			s := synced()
			s.resetNexthops()
			s.setRoute(route{Dst: pfx("10.5.2.0/24"), Gw: ip("10.5.2.0"), Link: 10, Onlink: true})
			s.setRoute(route{Dst: pfx("10.5.3.0/24"), Gw: ip("10.5.3.0"), Link: 10, Onlink: true})
			return s
		}, want: []string{
			"add nexthop via 10.5.2.0",
			"add nexthop via 10.5.3.0",
			"set route 10.5.2.0/24 via 10.5.2.0 dev 10 onlink (nexthop object)",
			"set route 10.5.3.0/24 via 10.5.3.0 dev 10 onlink (nexthop object)",
		}},
		{name: "nexthop deleted by hand (its route went with it)", act: func() famState {
			s := synced()
			s.delNH(ip("10.5.3.0"))
			s.delRoute(pfx("10.5.3.0/24"))
			return s
		}, want: []string{
			"add nexthop via 10.5.3.0",
			"set route 10.5.3.0/24 via 10.5.3.0 dev 10 onlink (nexthop object)",
		}},
		{name: "stray and duplicate nexthops go", act: func() famState {
			s := synced()
			s.setNH(ip("10.5.9.0"), 9)
			s.addNexthop(ip("10.5.3.0"), 10, true) // a duplicate
			s.addNexthop(netip.Addr{}, 11, false)
			return s
		}, want: []string{"del nexthop id 10", "del nexthop id 11", "del nexthop id 9"}},
		{name: "route on a duplicate or foreign nexthop is moved", act: func() famState {
			s := synced()
			r := nhRoute("10.5.2.0/24", 10)
			r.ViaNH, r.Extra = false, true // as readActual marks it
			s.setRoute(r)
			s.addNexthop(ip("10.5.2.0"), 10, true) // a duplicate
			return s
		}, want: []string{
			"del nexthop id 10",
			"set route 10.5.2.0/24 via 10.5.2.0 dev 10 onlink (nexthop object)",
		}},
		{name: "peer gone: route, entries and nexthop go", act: func() famState {
			s := synced()
			s.setNeigh(ip("10.5.4.0"), mac("0e:00:00:00:00:04"))
			s.setFDB(mac("0e:00:00:00:00:04"), ip("192.0.2.4"))
			s.setNH(ip("10.5.4.0"), 12)
			s.setRoute(nhRoute("10.5.4.0/24", 12))
			return s
		}, want: []string{
			"del fdb 0e:00:00:00:00:04 192.0.2.4",
			"del neigh 10.5.4.0",
			"del nexthop id 12",
			"del route 10.5.4.0/24 via 10.5.4.0 dev 10 onlink (nexthop object)",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var o ops
			diff(want, tc.act(), &o)
			if got := renderOps(&o); !slices.Equal(got, tc.want) {
				t.Errorf("ops:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			if o.empty() != (len(tc.want) == 0) {
				t.Errorf("empty() = %v", o.empty())
			}
		})
	}
	// Without nexthop objects (older kernels, IPv6) routes stay plain.
	p.Nexthops = false
	desiredFamily(p, subnet.PeersOf(peers...), want, nil)
	for r := range want.allRoutes() {
		if r.ViaNH {
			t.Errorf("route %+v uses a nexthop object with Nexthops off", r)
		}
	}
}

func TestDiff(t *testing.T) {
	m2, m3, m9 := mac("0e:00:00:00:00:02"), mac("0e:00:00:00:00:03"), mac("0e:00:00:00:00:09")
	r2 := route{Dst: pfx("10.5.2.0/24"), Gw: ip("10.5.2.0"), Link: 10, Onlink: true}
	r3 := route{Dst: pfx("10.5.3.0/24"), Gw: ip("10.5.3.0"), Link: 10, Onlink: true}
	base := func() famState {
		s := newV4State()
		s.setNeigh(ip("10.5.2.0"), m2)
		s.setNeigh(ip("10.5.3.0"), m3)
		s.setFDB(m2, ip("192.0.2.2"))
		s.setFDB(m3, ip("198.51.100.3"))
		s.setRoute(r2)
		s.setRoute(r3)
		return s
	}
	cases := []struct {
		name   string
		act    func() famState
		want   []string
		noDiff bool
	}{
		{name: "unchanged", act: base, noDiff: true},
		{name: "all missing", act: newV4State, want: []string{
			"set fdb 0e:00:00:00:00:02 192.0.2.2",
			"set fdb 0e:00:00:00:00:03 198.51.100.3",
			"set neigh 10.5.2.0 0e:00:00:00:00:02",
			"set neigh 10.5.3.0 0e:00:00:00:00:03",
			"set route 10.5.2.0/24 via 10.5.2.0 dev 10 onlink",
			"set route 10.5.3.0/24 via 10.5.3.0 dev 10 onlink",
		}},
		{name: "stray triplet", act: func() famState {
			s := base()
			s.setNeigh(ip("10.5.9.0"), m9)
			s.setFDB(m9, ip("192.0.2.9"))
			s.setRoute(route{Dst: pfx("10.5.9.0/24"), Gw: ip("10.5.9.0"), Link: 10, Onlink: true})
			return s
		}, want: []string{
			"del fdb 0e:00:00:00:00:09 192.0.2.9",
			"del neigh 10.5.9.0",
			"del route 10.5.9.0/24 via 10.5.9.0 dev 10 onlink",
		}},
		{name: "changed neighbour MAC", act: func() famState {
			s := base()
			s.setNeigh(ip("10.5.2.0"), m9)
			return s
		}, want: []string{"set neigh 10.5.2.0 0e:00:00:00:00:02"}},
		{name: "changed FDB destination is replaced in place", act: func() famState {
			s := base()
			s.setFDB(m2, ip("192.0.2.99"))
			return s
		}, want: []string{"set fdb 0e:00:00:00:00:02 192.0.2.2"}},
		{name: "extra FDB remote for a wanted MAC", act: func() famState {
			s := base()
			s.addFDB(m2, ip("192.0.2.99"))
			return s
		}, want: []string{"del fdb 0e:00:00:00:00:02 192.0.2.99"}},
		{name: "wanted remote is the extra one", act: func() famState {
			s := base()
			s.setFDB(m2, ip("192.0.2.99"))
			s.addFDB(m2, ip("192.0.2.2"))
			return s
		}, want: []string{"del fdb 0e:00:00:00:00:02 192.0.2.99"}},
		{name: "two wrong remotes", act: func() famState {
			s := base()
			s.setFDB(m2, ip("192.0.2.98"))
			s.addFDB(m2, ip("192.0.2.99"))
			return s
		}, want: []string{
			"del fdb 0e:00:00:00:00:02 192.0.2.98",
			"del fdb 0e:00:00:00:00:02 192.0.2.99",
			"set fdb 0e:00:00:00:00:02 192.0.2.2",
		}},
		{name: "changed route gateway and link", act: func() famState {
			s := base()
			s.setRoute(route{Dst: r2.Dst, Gw: ip("192.0.2.2"), Link: 2})
			return s
		}, want: []string{"set route 10.5.2.0/24 via 10.5.2.0 dev 10 onlink"}},
		{name: "route without onlink", act: func() famState {
			s := base()
			r := r3
			r.Onlink = false
			r.Scope = 253 // link
			s.setRoute(r)
			return s
		}, want: []string{"set route 10.5.3.0/24 via 10.5.3.0 dev 10 onlink"}},
		{name: "route with another metric is deleted, then added", act: func() famState {
			s := base()
			r := r2
			r.Prio = 100
			s.setRoute(r)
			return s
		}, want: []string{
			"del route 10.5.2.0/24 via 10.5.2.0 dev 10 onlink metric 100",
			"set route 10.5.2.0/24 via 10.5.2.0 dev 10 onlink",
		}},
		{name: "duplicate route with another metric", act: func() famState {
			s := base()
			r := r2
			r.Prio = 100
			s.addRoute(r)
			return s
		}, want: []string{"del route 10.5.2.0/24 via 10.5.2.0 dev 10 onlink metric 100"}},
		{name: "wanted route is the duplicate", act: func() famState {
			s := base()
			r := r2
			r.Prio = 100
			s.setRoute(r)
			s.addRoute(r2)
			return s
		}, want: []string{"del route 10.5.2.0/24 via 10.5.2.0 dev 10 onlink metric 100"}},
		{name: "route with extra attributes is replaced", act: func() famState {
			s := base()
			r := r3
			r.Extra = true
			s.setRoute(r)
			return s
		}, want: []string{"set route 10.5.3.0/24 via 10.5.3.0 dev 10 onlink"}},
		{name: "stray duplicate routes all go", act: func() famState {
			s := base()
			x := route{Dst: pfx("10.5.9.0/24"), Gw: ip("10.5.9.0"), Link: 10, Onlink: true}
			s.addRoute(x)
			x.Prio = 5
			s.addRoute(x)
			return s
		}, want: []string{
			"del route 10.5.9.0/24 via 10.5.9.0 dev 10 onlink",
			"del route 10.5.9.0/24 via 10.5.9.0 dev 10 onlink metric 5",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			act := tc.act()
			var o ops
			o.setNeigh = append(o.setNeigh, neighOp{}) // must be reset
			diff(base(), act, &o)
			if tc.noDiff {
				if !o.empty() {
					t.Errorf("expected no ops, got %v", renderOps(&o))
				}
				return
			}
			if got := renderOps(&o); !slices.Equal(got, tc.want) {
				t.Errorf("ops:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestLPM(t *testing.T) {
	var l lpm
	l.reset()
	l.add(pfx("0.0.0.0/0"), false, 0)        // default via a gateway
	l.add(pfx("192.0.2.0/24"), true, 0)      // connected on the external interface
	l.add(pfx("192.0.2.128/25"), false, 0)   // more specific, via a gateway
	l.add(pfx("198.51.100.0/24"), true, 100) // direct, but worse metric ...
	l.add(pfx("198.51.100.0/24"), false, 10) // ... than this gateway route
	l.add(pfx("203.0.113.0/24"), false, 10)  // a gateway route ...
	l.add(pfx("203.0.113.0/24"), true, 5)    // ... beaten by a better direct one
	l.add(pfx("2001:db8::/64"), true, 256)   // v6 connected
	l.add(pfx("::/0"), false, 1024)          // v6 default
	cases := map[string]bool{
		"192.0.2.2":       true,
		"192.0.2.200":     false,
		"198.51.100.7":    false,
		"203.0.113.9":     true,
		"8.8.8.8":         false,
		"2001:db8::2":     true,
		"2001:db8:1::2":   false,
		"::ffff:10.0.0.1": false,
	}
	for a, want := range cases {
		if got := l.isDirect(ip(a)); got != want {
			t.Errorf("isDirect(%s) = %v, want %v", a, got, want)
		}
	}
	l.reset()
	if l.isDirect(ip("192.0.2.2")) {
		t.Error("reset table still answers")
	}
}

// TestStateKeys: both key widths give back what was stored; the zero address stays apart
// from 0.0.0.0 and ::, other-family addresses go to the extra lists.
func TestStateKeys(t *testing.T) {
	routes := []struct {
		v6 bool
		r  route
	}{
		{false, route{Dst: pfx("10.5.2.0/24"), Gw: ip("10.5.2.0"), Link: 10, Onlink: true, ViaNH: true, NhID: 7}},
		{false, route{Dst: pfx("10.5.2.0/24"), Link: 10, Prio: 5, Scope: 253, Tos: 4}},
		{false, route{Dst: pfx("10.5.2.0/24"), Gw: ip("0.0.0.0"), Link: 2, Extra: true}},
		{false, route{Dst: pfx("0.0.0.0/0"), Gw: ip("0.0.0.0"), Link: 2}},
		{true, route{Dst: pfx("fd00:5:0:2::/64"), Gw: ip("fd00:5:0:2::"), Link: 11, Onlink: true, Prio: 1024}},
		{true, route{Dst: pfx("fd00:5:0:2::/64"), Link: 11, Prio: 1024}},
		{true, route{Dst: pfx("fd00:5:0:2::/64"), Gw: ip("::"), Link: 11}},
		{true, route{Dst: pfx("::/0"), Gw: ip("::ffff:10.5.2.0"), Link: 11}},
	}
	for _, tc := range routes {
		t.Run(fmt.Sprintf("v6=%v %s", tc.v6, renderRoute(tc.r)), func(t *testing.T) {
			s := newFamState(tc.v6)
			s.setRoute(tc.r)
			got, ok := s.getRoute(tc.r.Dst)
			if !ok || got != tc.r {
				t.Errorf("getRoute = %+v, %v; want %+v", got, ok, tc.r)
			}
			if n := len(slices.Collect(s.allRoutes())); n != 1 {
				t.Errorf("%d routes", n)
			}
		})
	}

	m2, m3 := mac("0e:00:00:00:00:02"), mac("0e:00:00:00:00:03")
	v4 := famParams{VNI: 1, Dev: 10, Ext: 2, Network: pfx("10.5.0.0/16"), Own: pfx("10.5.1.0/24")}
	v6 := famParams{V6: true, VNI: 1, Dev: 11, Ext: 2, Network: pfx("fd00:5::/48"), Own: pfx("fd00:5:0:1::/64")}
	peer4 := []subnet.Lease{lease("10.5.2.0/24", "192.0.2.2", vd("0e:00:00:00:00:02"))}
	peer6 := []subnet.Lease{withV6(subnet.Lease{Attrs: subnet.LeaseAttrs{BackendType: "vxlan"}},
		"fd00:5:0:2::/64", "2001:db8::2", vd("0e:00:00:00:00:02"))}
	cases := []struct {
		name  string
		p     famParams
		peers []subnet.Lease // nil: nothing wanted, every actual object is deleted
		act   func(s famState)
		want  []string
	}{
		{name: "IPv4 objects with zero and 0.0.0.0 addresses are deleted as read", p: v4, act: func(s famState) {
			s.addRoute(route{Dst: pfx("10.5.2.0/24"), Link: 10})
			s.addRoute(route{Dst: pfx("10.5.3.0/24"), Gw: ip("0.0.0.0"), Link: 10})
			s.addRoute(route{Dst: pfx("10.5.3.0/24"), Link: 10, Prio: 7}) // second route to a destination
			s.setNeigh(ip("10.5.2.0"), hwAddr{})
			s.addFDB(m2, ip("0.0.0.0"))
			s.addFDB(m3, ip("2001:db8::3")) // a remote of the other family
			s.addRoute(route{Dst: pfx("10.5.4.0/24"), Gw: ip("2001:db8::4"), Link: 10})
			s.addNexthop(netip.Addr{}, 5, true)
			s.addNexthop(ip("0.0.0.0"), 6, true)
			s.addNexthop(ip("10.5.2.0"), 8, false)
		}, want: []string{
			"del fdb 0e:00:00:00:00:02 0.0.0.0",
			"del fdb 0e:00:00:00:00:03 2001:db8::3",
			"del neigh 10.5.2.0",
			"del nexthop id 5",
			"del nexthop id 6",
			"del nexthop id 8",
			"del route 10.5.2.0/24 via invalid IP dev 10",
			"del route 10.5.3.0/24 via 0.0.0.0 dev 10",
			"del route 10.5.3.0/24 via invalid IP dev 10 metric 7",
			"del route 10.5.4.0/24 via 2001:db8::4 dev 10",
		}},
		{name: "IPv6 objects with zero, :: and mapped addresses are deleted as read", p: v6, act: func(s famState) {
			s.addRoute(route{Dst: pfx("fd00:5:0:2::/64"), Link: 11, Prio: 1024})
			s.addRoute(route{Dst: pfx("fd00:5:0:3::/64"), Gw: ip("::"), Link: 11, Prio: 1024})
			s.setNeigh(ip("::ffff:10.5.2.0"), m2)
			s.addFDB(m2, ip("::"))
			s.addFDB(m3, ip("192.0.2.3"))
		}, want: []string{
			"del fdb 0e:00:00:00:00:02 ::",
			"del fdb 0e:00:00:00:00:03 192.0.2.3",
			"del neigh ::ffff:10.5.2.0",
			"del route fd00:5:0:2::/64 via invalid IP dev 11 metric 1024",
			"del route fd00:5:0:3::/64 via :: dev 11 metric 1024",
		}},
		{name: "IPv4 route without gateway is replaced", p: v4, peers: peer4, act: func(s famState) {
			s.setNeigh(ip("10.5.2.0"), m2)
			s.addFDB(m2, ip("192.0.2.2"))
			s.addRoute(route{Dst: pfx("10.5.2.0/24"), Link: 10})
		}, want: []string{"set route 10.5.2.0/24 via 10.5.2.0 dev 10 onlink"}},
		{name: "IPv4 route via 0.0.0.0 is replaced", p: v4, peers: peer4, act: func(s famState) {
			s.setNeigh(ip("10.5.2.0"), m2)
			s.addFDB(m2, ip("192.0.2.2"))
			s.addRoute(route{Dst: pfx("10.5.2.0/24"), Gw: ip("0.0.0.0"), Link: 10, Onlink: true})
		}, want: []string{"set route 10.5.2.0/24 via 10.5.2.0 dev 10 onlink"}},
		{name: "IPv4 FDB remote 0.0.0.0 is replaced in place", p: v4, peers: peer4, act: func(s famState) {
			s.setNeigh(ip("10.5.2.0"), m2)
			s.addFDB(m2, ip("0.0.0.0"))
			s.addRoute(route{Dst: pfx("10.5.2.0/24"), Gw: ip("10.5.2.0"), Link: 10, Onlink: true})
		}, want: []string{"set fdb 0e:00:00:00:00:02 192.0.2.2"}},
		{name: "IPv6 remote of an IPv4 MAC goes, then the wanted one is set", p: v4, peers: peer4, act: func(s famState) {
			s.setNeigh(ip("10.5.2.0"), m2)
			s.addFDB(m2, ip("2001:db8::2"))
			s.addRoute(route{Dst: pfx("10.5.2.0/24"), Gw: ip("10.5.2.0"), Link: 10, Onlink: true})
		}, want: []string{"del fdb 0e:00:00:00:00:02 2001:db8::2", "set fdb 0e:00:00:00:00:02 192.0.2.2"}},
		{name: "IPv6 route without gateway and :: remote are replaced", p: v6, peers: peer6, act: func(s famState) {
			s.setNeigh(ip("fd00:5:0:2::"), m2)
			s.addFDB(m2, ip("::"))
			s.addRoute(route{Dst: pfx("fd00:5:0:2::/64"), Link: 11, Prio: 1024})
		}, want: []string{
			"set fdb 0e:00:00:00:00:02 2001:db8::2",
			"set route fd00:5:0:2::/64 via fd00:5:0:2:: dev 11 onlink metric 1024",
		}},
		{name: "IPv6 in sync", p: v6, peers: peer6, act: func(s famState) {
			s.setNeigh(ip("fd00:5:0:2::"), m2)
			s.addFDB(m2, ip("2001:db8::2"))
			s.addRoute(route{Dst: pfx("fd00:5:0:2::/64"), Gw: ip("fd00:5:0:2::"), Link: 11, Onlink: true, Prio: 1024})
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want, act := newFamState(tc.p.V6), newFamState(tc.p.V6)
			if probs := desiredFamily(tc.p, subnet.PeersOf(tc.peers...), want, nil); len(probs) != 0 {
				t.Fatalf("problems %v", probs)
			}
			tc.act(act)
			var o ops
			diff(want, act, &o)
			if got := renderOps(&o); !slices.Equal(got, tc.want) {
				t.Errorf("ops:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}

	// Kept nexthop objects, 0.0.0.0 included, are found by id; others are not.
	s := newFamState(false)
	s.addNexthop(netip.Addr{}, 5, true)
	s.addNexthop(ip("0.0.0.0"), 6, true)
	s.addNexthop(ip("10.5.2.0"), 7, true)
	s.addNexthop(ip("10.5.2.0"), 8, true) // duplicate
	for id, want := range map[uint32]string{5: "", 6: "0.0.0.0", 7: "10.5.2.0", 8: ""} {
		gw, ok := s.nexthopGw(id)
		if got := ""; ok {
			got = gw.String()
			if got != want {
				t.Errorf("nexthop %d: gateway %s, want %q", id, got, want)
			}
		} else if want != "" {
			t.Errorf("nexthop %d: no gateway, want %s", id, want)
		}
	}
}
