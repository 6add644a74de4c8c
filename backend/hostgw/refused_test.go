package hostgw

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/netlinkx"
	"github.com/flannel-go/flannel/subnet"
)

// fakeKernel: main-table routes on the external interface, replaces refused by gateway.
type fakeKernel struct {
	routes   []netlink.Route
	refuse   map[string]error // gateway -> what RouteReplace answers
	replaces map[string]int   // destination -> RouteReplace calls
}

func newFakeKernel() *fakeKernel {
	return &fakeKernel{refuse: map[string]error{}, replaces: map[string]int{}}
}

func (k *fakeKernel) RouteListFilteredIter(family int, _ *netlink.Route, _ uint64, f func(netlink.Route) bool) error {
	for _, r := range k.routes {
		if (r.Dst.IP.To4() != nil) == (family == unix.AF_INET) && !f(r) {
			break
		}
	}
	return nil
}

func (k *fakeKernel) RouteReplace(r *netlink.Route) error {
	k.replaces[r.Dst.String()]++
	if err := k.refuse[r.Gw.String()]; err != nil {
		return err
	}
	k.routes = slices.DeleteFunc(k.routes, func(o netlink.Route) bool {
		return o.Dst.String() == r.Dst.String() && o.Priority == r.Priority
	})
	nr := *r
	nr.Type, nr.Protocol = unix.RTN_UNICAST, unix.RTPROT_BOOT
	k.routes = append(k.routes, nr)
	return nil
}

func (k *fakeKernel) RouteDel(r *netlink.Route) error {
	n := len(k.routes)
	k.routes = slices.DeleteFunc(k.routes, func(o netlink.Route) bool {
		return o.Dst.String() == r.Dst.String() && (r.Gw == nil || o.Gw.Equal(r.Gw))
	})
	if len(k.routes) == n {
		return unix.ESRCH
	}
	return nil
}

func (k *fakeKernel) LinkByName(string) (netlink.Link, error) { return nil, unix.ENODEV }
func (k *fakeKernel) LinkDel(netlink.Link) error              { return nil }

func (k *fakeKernel) table() []string {
	var out []string
	for _, r := range k.routes {
		out = append(out, r.Dst.String()+" via "+r.Gw.String())
	}
	slices.Sort(out)
	return out
}

// TestRefusedPeers: a refused route skips only its peer, removes its earlier route, is
// reported once per attempt and retried on lease change or Invalidate. Another error
// fails the round.
func TestRefusedPeers(t *testing.T) {
	k := newFakeKernel()
	ext := &backend.ExternalInterface{Iface: &net.Interface{Index: 2, Name: "eth0", MTU: 1500},
		IfaceAddr: netip.MustParseAddr("192.0.2.1"), ExtAddr: netip.MustParseAddr("192.0.2.1")}
	cfg, err := subnet.ParseConfig(`{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}`)
	if err != nil {
		t.Fatal(err)
	}
	b, err := newBackend(k, ext, cfg)
	if err != nil {
		t.Fatal(err)
	}
	obs := countObserver{}
	b.SetObserver(obs)
	ctx := context.Background()
	own := lease("10.5.1.0/24", "192.0.2.1", BackendType)
	if _, err := b.Start(ctx, &own); err != nil {
		t.Fatal(err)
	}
	// B's earlier route (it used to be at 192.0.2.3).
	k.routes = append(k.routes, netlink.Route{LinkIndex: 2, Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNICAST,
		Dst: netlinkx.IPNet(netip.MustParsePrefix("10.5.3.0/24")), Gw: net.ParseIP("192.0.2.3")})
	k.refuse["198.51.100.3"] = unix.ENETUNREACH
	k.refuse["198.51.100.33"] = unix.ENETUNREACH
	k.refuse["192.0.2.255"] = unix.EINVAL
	k.refuse["192.0.2.6"] = unix.EEXIST

	a := lease("10.5.2.0/24", "192.0.2.2", BackendType)
	bp := lease("10.5.3.0/24", "198.51.100.3", BackendType)
	c := lease("10.5.4.0/24", "192.0.2.255", BackendType)
	d := lease("10.5.6.0/24", "192.0.2.6", BackendType)
	e := lease("10.5.5.0/24", "192.0.2.5", BackendType)
	peers := []subnet.Lease{own, a, bp, c, d, e}

	round := func(what string, ps []subnet.Lease, wantRoutes []string, want countObserver, wantRefused ...string) {
		t.Helper()
		if err := b.Reconcile(ctx, subnet.PeersOf(ps...)); err != nil {
			t.Fatalf("%s: Reconcile: %v", what, err)
		}
		if got := k.table(); !slices.Equal(got, wantRoutes) {
			t.Errorf("%s: routes %q, want %q", what, got, wantRoutes)
		}
		for key, n := range want {
			if obs[key] != n {
				t.Errorf("%s: observer heard %v, want %s = %d", what, obs, key, n)
			}
		}
		var got []string
		for _, p := range b.refusedProbs {
			got = append(got, p.Peer)
		}
		slices.Sort(got)
		if !slices.Equal(got, wantRefused) {
			t.Errorf("%s: refused peers %q, want %q", what, got, wantRefused)
		}
	}
	good := []string{"10.5.2.0/24 via 192.0.2.2", "10.5.5.0/24 via 192.0.2.5"}
	refused := []string{bp.Key(), c.Key(), d.Key()}
	round("first", peers, good,
		countObserver{"refused/unreachable": 1, "refused/invalid": 1, "refused/exists": 1, "route/add": 2, "route/remove": 1},
		refused...)
	for _, p := range b.refusedProbs {
		if p.Peer == bp.Key() && (!strings.Contains(p.Reason, "198.51.100.3") || !strings.Contains(p.Reason, "not on-link")) {
			t.Errorf("unreachable peer's reason %q", p.Reason)
		}
		if p.Peer == c.Key() && !strings.Contains(p.Reason, "invalid argument") {
			t.Errorf("invalid peer's reason %q", p.Reason)
		}
	}

	round("unchanged", peers, good,
		countObserver{"refused/unreachable": 1, "refused/invalid": 1, "refused/exists": 1, "route/add": 2}, refused...)
	if n := k.replaces["10.5.3.0/24"] + k.replaces["10.5.4.0/24"] + k.replaces["10.5.6.0/24"]; n != 3 {
		t.Errorf("refused routes tried %d times in two rounds, want 3 (once each)", n)
	}

	bp.Attrs.PublicIP = netip.MustParseAddr("198.51.100.33") // its lease changes: tried again
	peers = []subnet.Lease{own, a, bp, c, d, e}
	round("lease changed", peers, good,
		countObserver{"refused/unreachable": 2, "refused/invalid": 1, "refused/exists": 1}, refused...)
	if n := k.replaces["10.5.3.0/24"]; n != 2 {
		t.Errorf("changed peer tried %d times, want 2", n)
	}

	b.Invalidate() // the periodic resync: every refused peer is tried again
	round("resync", peers, good,
		countObserver{"refused/unreachable": 3, "refused/invalid": 2, "refused/exists": 2}, refused...)

	delete(k.refuse, "192.0.2.255") // the obstacle goes: programmed at the next resync
	round("before the resync", peers, good, countObserver{"refused/invalid": 2}, refused...)
	b.Invalidate()
	round("after the resync", peers, append(slices.Clone(good[:1]), "10.5.4.0/24 via 192.0.2.255", good[1]),
		countObserver{"refused/invalid": 2, "refused/unreachable": 4}, bp.Key(), d.Key())

	// Not the peer's fault: the round fails and the peer is not held back.
	k.refuse["192.0.2.7"] = unix.ENOMEM
	f := lease("10.5.7.0/24", "192.0.2.7", BackendType)
	for i := 1; i <= 2; i++ {
		err := b.Reconcile(ctx, subnet.PeersOf(append(peers, f)...))
		if err == nil || !strings.Contains(err.Error(), "10.5.7.0/24") {
			t.Errorf("round %d with a kernel out of memory: %v", i, err)
		}
	}
	if n := k.replaces["10.5.7.0/24"]; n != 2 {
		t.Errorf("a route failing for a reason that is not the peer's was tried %d times in 2 rounds", n)
	}
}

// replaceCounter counts the route replaces sent to a real handle.
type replaceCounter struct {
	nlHandle
	n int
}

func (c *replaceCounter) RouteReplace(r *netlink.Route) error {
	c.n++
	return c.nlHandle.RouteReplace(r)
}

// TestRefusedPeersInNamespace: the real kernel refuses off-link, broadcast and own
// gateways; the round succeeds, each is reported once, the resync retries.
func TestRefusedPeersInNamespace(t *testing.T) {
	l := newNSLab(t)
	ctx := context.Background()
	cfg, err := subnet.ParseConfig(`{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"host-gw"}}`)
	if err != nil {
		t.Fatal(err)
	}
	h := &replaceCounter{nlHandle: l.h}
	b, err := newBackend(h, l.ext, cfg)
	if err != nil {
		t.Fatal(err)
	}
	obs := countObserver{}
	b.SetObserver(obs)
	own := lease6("10.5.1.0/24", "fd00:5:0:1::/64", "2001:db8::1")
	if _, err := b.Start(ctx, &own); err != nil {
		t.Fatal(err)
	}
	dual := func(sn, pub, sn6, pub6 string) subnet.Lease {
		p := lease6(sn, sn6, pub6)
		p.Attrs.PublicIP = netip.MustParseAddr(pub)
		return p
	}
	good := dual("10.5.2.0/24", "192.0.2.2", "fd00:5:0:2::/64", "2001:db8::2")
	far := dual("10.5.3.0/24", "198.51.100.7", "fd00:5:0:3::/64", "2001:db8::3")
	odd := dual("10.5.4.0/24", "192.0.2.255", "fd00:5:0:4::/64", "2001:db8::1")
	peers := subnet.PeersOf(own, good, far, odd)
	if err := b.Reconcile(ctx, peers); err != nil {
		t.Fatalf("Reconcile with refused peers: %v", err)
	}
	want := []string{"10.5.2.0/24 via 192.0.2.2", "198.51.100.0/24 via 192.0.2.254", "fd00:5:0:2::/64 via 2001:db8::2", "fd00:5:0:3::/64 via 2001:db8::3"}
	if got := l.routes(t); !slices.Equal(got, want) {
		t.Errorf("routes %q, want %q", got, want)
	}
	if obs["refused/unreachable"] != 1 || obs["refused/invalid"] != 1 {
		t.Errorf("reported %v, want one unreachable and one invalid peer", obs)
	}
	var refused []string
	for _, p := range b.refusedProbs {
		refused = append(refused, p.Peer+": "+p.Reason)
	}
	slices.Sort(refused)
	if len(refused) != 3 || !strings.Contains(refused[0], "198.51.100.7") || !strings.Contains(refused[1], "192.0.2.255") ||
		!strings.Contains(refused[2], "2001:db8::1") {
		t.Errorf("refused %q, want the three refused routes", refused)
	}

	before := h.n
	if err := b.Reconcile(ctx, peers); err != nil {
		t.Fatal(err)
	}
	if h.n != before || obs["refused/unreachable"] != 1 {
		t.Errorf("held back: %d replaces, reported %v", h.n-before, obs)
	}
	b.Invalidate()
	if err := b.Reconcile(ctx, peers); err != nil {
		t.Fatal(err)
	}
	if h.n != before+3 || obs["refused/unreachable"] != 2 || obs["refused/invalid"] != 2 {
		t.Errorf("resync: %d replaces, reported %v; want the 3 refused routes tried again", h.n-before, obs)
	}
	if got := l.routes(t); !slices.Equal(got, want) {
		t.Errorf("after the resync: routes %q, want %q", got, want)
	}
}
