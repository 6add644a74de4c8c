package vxlan

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/netlinkx"
	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

// refusalCounter counts the refusals reported to the observer by reason.
type refusalCounter struct {
	observe.Nop
	n map[string]int
}

func (r *refusalCounter) PeerProgrammingFailures(reason string, n int) { r.n[reason] += n }

type fakePeer struct {
	lease subnet.Lease
	dst   netip.Prefix
	mac   hwAddr
	pub   netip.Addr
}

func newFakePeer(i int) fakePeer {
	dst := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 5, byte(i), 0}), 24)
	mac := hwAddr{0x0e, 0, 0, 0, 0, byte(i)}
	pub := netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})
	return fakePeer{peer(dst.String(), pub.String(), mac.String()), dst, mac, pub}
}

func (p *fakePeer) setMAC(m hwAddr) {
	p.mac = m
	p.lease = peer(p.dst.String(), p.pub.String(), m.String())
}

// refusalLab is a vxlan backend started on the fake kernel edge.
type refusalLab struct {
	t     *testing.T
	b     *Backend
	k     *fakeRT
	obs   *refusalCounter
	own   subnet.Lease
	peers map[string]*fakePeer
}

func newRefusalLab(t *testing.T, peers ...int) *refusalLab {
	t.Helper()
	links, k := newFakeLinks(), newFakeRT()
	ext := &backend.ExternalInterface{Iface: &net.Interface{Index: 2, Name: "eth0", MTU: 1500},
		IfaceAddr: netip.MustParseAddr("192.0.2.1"), ExtAddr: netip.MustParseAddr("192.0.2.1")}
	b, err := newBackend(links, k, func(string, string) error { return nil }, ext, testConfig(t, `{"Type":"vxlan"}`, false))
	if err != nil {
		t.Fatal(err)
	}
	obs := &refusalCounter{n: map[string]int{}}
	b.SetObserver(obs)
	ctx := context.Background()
	if _, err := b.Prepare(ctx, nil); err != nil {
		t.Fatal(err)
	}
	own := *ownLease(false)
	if _, err := b.Start(ctx, &own); err != nil {
		t.Fatal(err)
	}
	k.dev = b.fams[0].index
	l := &refusalLab{t: t, b: b, k: k, obs: obs, own: own, peers: map[string]*fakePeer{}}
	for _, i := range peers {
		p := newFakePeer(i)
		l.peers[p.dst.String()] = &p
	}
	return l
}

func (l *refusalLab) peer(i int) *fakePeer { return l.peers[newFakePeer(i).dst.String()] }

func (l *refusalLab) round(what string) {
	l.t.Helper()
	l.k.log = nil
	ps := []subnet.Lease{l.own}
	for _, p := range l.peers {
		ps = append(ps, p.lease)
	}
	if err := l.b.Reconcile(context.Background(), subnet.PeersOf(ps...)); err != nil {
		l.t.Fatalf("%s: Reconcile: %v", what, err)
	}
}

// state checks what the kernel holds for peer i (fakeRT.peerState).
func (l *refusalLab) state(what string, i int, want string) {
	l.t.Helper()
	p := l.peer(i)
	if got := l.k.peerState(p.dst, p.mac, p.pub); got != want {
		l.t.Errorf("%s: peer %s holds %q, want %q", what, p.dst, got, want)
	}
}

// refused checks the peers listed as refused and the reports so far.
func (l *refusalLab) refused(what string, reports map[string]int, peers ...int) {
	l.t.Helper()
	var got, want []string
	for _, p := range l.b.refusedProbs {
		got = append(got, p.Peer)
	}
	for _, i := range peers {
		want = append(want, l.peer(i).lease.Key())
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		l.t.Errorf("%s: refused peers %q, want %q", what, got, want)
	}
	for r, n := range reports {
		if l.obs.n[r] != n {
			l.t.Errorf("%s: reported %v, want %s = %d", what, l.obs.n, r, n)
		}
	}
}

// sent reports the requests of the last round that mention s.
func (l *refusalLab) sent(s string) []string {
	var out []string
	for _, r := range l.k.log {
		if strings.Contains(r, s) {
			out = append(out, r)
		}
	}
	return out
}

// TestRefusedPartsOfAPeer: a refused FDB, neighbour, nexthop or route refuses its peer
// whole (no route, accepted parts kept, one report) while the round succeeds; refused
// objects are not resent, nor the kernel reread.
func TestRefusedPartsOfAPeer(t *testing.T) {
	l := newRefusalLab(t, 2, 3, 4, 5, 6)
	p3, p4, p5, p6 := l.peer(3), l.peer(4), l.peer(5), l.peer(6)
	bad3 := p3.mac
	l.k.refuse = func(typ uint16, n *netlinkx.Neigh, nh *netlinkx.Nexthop, r *netlinkx.Route) error {
		switch {
		case n != nil && n.Family == unix.AF_BRIDGE && n.MAC == bad3:
			return unix.EOPNOTSUPP
		case n != nil && n.Family == unix.AF_INET && n.IP == p4.dst.Addr():
			return unix.EINVAL
		case nh != nil && nh.Gw == p5.dst.Addr():
			return unix.EINVAL
		case r != nil && r.Dst == p6.dst:
			return unix.EEXIST
		}
		return nil
	}
	l.round("first")
	l.state("first", 2, "nfhr")
	l.state("first", 3, "n---") // FDB refused
	l.state("first", 4, "-f--") // neighbour refused
	l.state("first", 5, "nf--") // nexthop refused
	l.state("first", 6, "nf--") // route refused
	l.refused("first", map[string]int{observe.RefusedInvalid: 3, observe.RefusedExists: 1}, 3, 4, 5, 6)
	for _, p := range l.b.refusedProbs {
		if p.Peer == p5.lease.Key() && (!strings.Contains(p.Reason, "nexthop via 10.5.5.0") || !strings.Contains(p.Reason, "invalid argument")) {
			t.Errorf("the refused nexthop's problem: %q", p.Reason)
		}
	}

	// Held back: nothing is sent again.
	reads := l.b.kc.reads
	l.round("second")
	if got := l.k.log; len(got) != 0 {
		t.Errorf("second round sent %q, want nothing", got)
	}
	l.state("second", 3, "n---")
	l.state("second", 6, "nf--")
	if l.b.kc.reads != reads+1 {
		t.Errorf("second round: %d kernel reads, want 1 (after the refusals)", l.b.kc.reads-reads)
	}
	l.round("third")
	if len(l.k.log) != 0 || l.b.kc.reads != reads+1 {
		t.Errorf("third round sent %q and read the kernel %d times; want nothing", l.k.log, l.b.kc.reads-reads-1)
	}
	l.refused("third", map[string]int{observe.RefusedInvalid: 3, observe.RefusedExists: 1}, 3, 4, 5, 6)

	// A changed lease is tried again: peer 3 gets a MAC the kernel accepts.
	p3.setMAC(hwAddr{0x0e, 0, 0, 0, 1, 3})
	l.round("lease changed")
	l.state("lease changed", 3, "nfhr")
	l.refused("lease changed", map[string]int{observe.RefusedInvalid: 3}, 4, 5, 6)
	if l.sent("set neigh 10.5.4.0") != nil || l.sent("set route 10.5.6.0") != nil {
		t.Errorf("unchanged refused peers were tried again: %q", l.k.log)
	}

	// The resync retries every refused peer.
	l.k.refuse = func(typ uint16, n *netlinkx.Neigh, nh *netlinkx.Nexthop, r *netlinkx.Route) error {
		switch {
		case n != nil && n.Family == unix.AF_INET && n.IP == p4.dst.Addr():
			return unix.EINVAL
		case nh != nil && nh.Gw == p5.dst.Addr():
			return unix.EINVAL
		}
		return nil
	}
	l.b.Invalidate()
	l.round("resync")
	if l.sent("set neigh 10.5.4.0") == nil || l.sent("add nexthop via 10.5.5.0") == nil || l.sent("set route 10.5.6.0") == nil {
		t.Errorf("resync did not try the refused peers again: %q", l.k.log)
	}
	l.state("resync", 6, "nfhr")
	l.refused("resync", map[string]int{observe.RefusedInvalid: 5, observe.RefusedExists: 1}, 4, 5)
	for i := 2; i <= 6; i++ {
		if i != 4 && i != 5 {
			l.state("resync", i, "nfhr")
		}
	}
}

// TestRefusedPeerLosesItsRoute: a refused new neighbour entry removes the peer's route in
// the same round; the stale entry goes in the next.
func TestRefusedPeerLosesItsRoute(t *testing.T) {
	l := newRefusalLab(t, 2, 7)
	l.round("first")
	l.state("first", 7, "nfhr")
	p7 := l.peer(7)
	old := p7.mac
	p7.setMAC(hwAddr{0x0e, 0, 0, 0, 2, 7})
	l.k.refuse = func(typ uint16, n *netlinkx.Neigh, _ *netlinkx.Nexthop, _ *netlinkx.Route) error {
		if n != nil && n.Family == unix.AF_INET && hwAddr(n.MAC) == p7.mac {
			return unix.EINVAL
		}
		return nil
	}
	l.round("MAC changed")
	l.state("MAC changed", 7, "-f--")
	if m := l.k.neigh[p7.dst.Addr()]; m != old {
		t.Errorf("neighbour entry %s, want the old %s (the replace was refused)", m, old)
	}
	l.refused("MAC changed", map[string]int{observe.RefusedInvalid: 1}, 7)
	l.round("next")
	l.state("next", 7, "-f--")
	if _, ok := l.k.neigh[p7.dst.Addr()]; ok {
		t.Error("the stale neighbour entry of the refused peer stayed")
	}
	l.state("next", 2, "nfhr")
}

// TestFailuresNotThePeers: an error not about the peer's values fails the round and is
// neither held back nor reported as a refusal.
func TestFailuresNotThePeers(t *testing.T) {
	l := newRefusalLab(t, 2, 3)
	p3 := l.peer(3)
	l.k.refuse = func(_ uint16, n *netlinkx.Neigh, _ *netlinkx.Nexthop, _ *netlinkx.Route) error {
		if n != nil && n.Family == unix.AF_BRIDGE && n.MAC == p3.mac {
			return unix.ENOMEM
		}
		return nil
	}
	ps := subnet.PeersOf(l.own, l.peer(2).lease, p3.lease)
	for i := range 2 {
		l.k.log = nil
		err := l.b.Reconcile(context.Background(), ps)
		if err == nil || !strings.Contains(err.Error(), "cannot allocate memory") {
			t.Errorf("round %d: %v, want the FDB failure", i, err)
		}
		if l.sent("set fdb "+p3.mac.String()) == nil {
			t.Errorf("round %d did not try the failed FDB entry", i)
		}
	}
	l.state("out of memory", 2, "nfhr")
	l.state("out of memory", 3, "n-h-") // not refused: its nexthop stays for the retry
	l.refused("out of memory", map[string]int{observe.RefusedInvalid: 0})

	l.k.refuse = nil
	l.k.sockErr = unix.ENOBUFS
	p4 := newFakePeer(4)
	err := l.b.Reconcile(context.Background(), subnet.PeersOf(l.own, l.peer(2).lease, p3.lease, p4.lease))
	if err == nil || !strings.Contains(err.Error(), "no buffer space") {
		t.Errorf("with a failed socket: %v", err)
	}
	l.refused("failed socket", map[string]int{observe.RefusedInvalid: 0, observe.RefusedExists: 0, observe.RefusedUnreachable: 0})
}
