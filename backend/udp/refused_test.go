package udp

import (
	"context"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/netlinkx"
	"github.com/flannel-go/flannel/pkg/netlinkx/nstest"
	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

// refusingConn sends like sendmmsg: in order, stopping at the first message to an
// address in refuse, whose error it returns (as the first message's when none went).
type refusingConn struct {
	fakeConn
	refuse map[string]error
}

func (c *refusingConn) WriteBatch(ms []ipv4.Message, flags int) (int, error) {
	for i, m := range ms {
		if err := c.refuse[m.Addr.String()]; err != nil {
			n, _ := c.fakeConn.WriteBatch(ms[:i], flags)
			return n, os.NewSyscallError("sendmmsg", err)
		}
	}
	return c.fakeConn.WriteBatch(ms, flags)
}

type refusalCount struct {
	observe.Nop
	n map[string]int
}

func (r *refusalCount) PeerProgrammingFailures(reason string, n int) { r.n[reason] += n }

func peerTable(t *testing.T, leases ...subnet.Lease) *table {
	t.Helper()
	tbl, probs := buildTable(subnet.PeersOf(leases...), netip.MustParsePrefix("10.5.0.0/16"), netip.MustParsePrefix("10.5.1.0/24"), 8285)
	if len(probs) != 0 {
		t.Fatalf("problems %v", probs)
	}
	return tbl
}

// TestSendRefusedPeer: the datagrams to other peers go, the refused one is dropped and
// marked on its peer; a failure that is not the peer's (no buffer space) marks nothing.
func TestSendRefusedPeer(t *testing.T) {
	a, b, c := udpLease("10.5.2.0/24", "192.0.2.2", ""), udpLease("10.5.3.0/24", "198.51.100.3", ""), udpLease("10.5.4.0/24", "192.0.2.4", "")
	tbl := peerTable(t, a, b, c)
	conn := &refusingConn{fakeConn: fakeConn{t: t}, refuse: map[string]error{
		"198.51.100.3:8285": unix.ENETUNREACH,
		"192.0.2.4:8285":    nil,
	}}
	d := newTestPath(t, &fakeTUN{batch: 8}, &conn.fakeConn, false, false)
	d.conn = conn
	d.table.Store(tbl)
	pkt := func(dst [4]byte) []byte { return echoRequest([4]byte{10, 5, 1, 2}, dst, 64) }
	d.tun = &fakeTUN{batch: 8, reads: [][][]byte{{pkt([4]byte{10, 5, 2, 9}), pkt([4]byte{10, 5, 3, 9}), pkt([4]byte{10, 5, 4, 9})}}}
	d.tunToUDP(context.Background())
	var to []string
	for _, s := range conn.sent {
		to = append(to, s.to)
	}
	if !slices.Equal(to, []string{"192.0.2.2:8285", "192.0.2.4:8285"}) {
		t.Errorf("sent to %q, want the two reachable peers", to)
	}
	pb := tbl.lookup(addrKey("10.5.3.9"))
	if got := pb.refused.Load(); got != int32(unix.ENETUNREACH) {
		t.Errorf("refused peer marked %d, want ENETUNREACH", got)
	}
	for _, ip := range []string{"10.5.2.9", "10.5.4.9"} {
		if got := tbl.lookup(addrKey(ip)).refused.Load(); got != 0 {
			t.Errorf("peer of %s marked %d", ip, got)
		}
	}
	if s := d.counts.snapshot(); s.TxPackets != 2 || s.Dropped != 1 {
		t.Errorf("tx %d dropped %d, want 2 and 1", s.TxPackets, s.Dropped)
	}

	pb.refused.Store(0)
	conn.refuse["198.51.100.3:8285"] = unix.ENOBUFS
	d.tun = &fakeTUN{batch: 8, reads: [][][]byte{{pkt([4]byte{10, 5, 3, 9})}}}
	d.tunToUDP(context.Background())
	if got := pb.refused.Load(); got != 0 {
		t.Errorf("a full buffer marked the peer refused (%d)", got)
	}
}

// TestCollectRefusals: reported once per round with a refusal, listed while it lasts,
// forgotten when the peer's address changes, its lease goes, or a quiet resync period.
func TestCollectRefusals(t *testing.T) {
	obs := &refusalCount{n: map[string]int{}}
	b := &Backend{refused: map[string]*refusal{}, obs: obs}
	a, far := udpLease("10.5.2.0/24", "192.0.2.2", ""), udpLease("10.5.3.0/24", "198.51.100.3", "")
	bcast := udpLease("10.5.4.0/24", "192.0.2.255", "")
	var cur *table
	round := func(what string, retry bool, marks map[string]unix.Errno, leases []subnet.Lease, wantReports map[string]int, want ...string) {
		t.Helper()
		for ip, errno := range marks {
			cur.lookup(addrKey(ip)).refused.Store(int32(errno))
		}
		next := peerTable(t, leases...)
		probs := b.collectRefusals(cur, next, retry)
		cur = next
		var got []string
		for _, p := range probs {
			got = append(got, p.Peer)
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s: refused %q, want %q", what, got, want)
		}
		for r, n := range wantReports {
			if obs.n[r] != n {
				t.Errorf("%s: reported %v, want %s = %d", what, obs.n, r, n)
			}
		}
	}
	all := []subnet.Lease{a, far, bcast}
	cur = peerTable(t, all...)
	round("marked", false, map[string]unix.Errno{"10.5.3.1": unix.ENETUNREACH, "10.5.4.1": unix.EACCES}, all,
		map[string]int{observe.RefusedUnreachable: 1, observe.RefusedInvalid: 1}, far.Key(), bcast.Key())
	round("quiet round", false, nil, all, map[string]int{observe.RefusedUnreachable: 1}, far.Key(), bcast.Key())
	round("refused again", false, map[string]unix.Errno{"10.5.3.1": unix.ENETUNREACH}, all,
		map[string]int{observe.RefusedUnreachable: 2}, far.Key(), bcast.Key())
	round("resync", true, nil, all, map[string]int{observe.RefusedUnreachable: 2}, far.Key(), bcast.Key())
	round("resync without refusals", true, nil, all, nil)
	round("marked again", false, map[string]unix.Errno{"10.5.3.1": unix.ENETUNREACH}, all,
		map[string]int{observe.RefusedUnreachable: 3}, far.Key())
	moved := udpLease("10.5.3.0/24", "192.0.2.3", "")
	round("the peer moved", false, nil, []subnet.Lease{a, moved, bcast}, nil)
	if problems := b.collectRefusals(cur, nil, false); len(problems) != 0 || len(b.refused) != 0 {
		t.Errorf("no table: %v, %d kept", problems, len(b.refused))
	}
}

// TestSendRefusedInNamespace: over a real socket the kernel refuses datagrams to an
// unroutable peer (ENETUNREACH) while the rest of the batch arrives.
func TestSendRefusedInNamespace(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a network namespace")
	}
	ns := nstest.New(t, "fgudpref")
	h := ns.Handle
	la := netlink.NewLinkAttrs()
	la.Name = "u0"
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "u1"}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"lo", "u0", "u1"} {
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
		a, ok := map[string]string{"u0": "192.0.2.1/24", "u1": "192.0.2.2/24"}[name]
		if !ok {
			continue
		}
		if err := h.AddrAdd(l, &netlink.Addr{IPNet: netlinkx.IPNet(netip.MustParsePrefix(a))}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var tx, rx *net.UDPConn
	if err := ns.Do(func() error {
		var err error
		if tx, _, _, err = listen(ctx, netip.MustParseAddrPort("192.0.2.1:0")); err != nil {
			return err
		}
		rx, _, _, err = listen(ctx, netip.MustParseAddrPort("192.0.2.2:8285"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	defer rx.Close()
	conn, err := newRawBatchConn(tx)
	if err != nil {
		t.Fatal(err)
	}
	tbl := peerTable(t, udpLease("10.5.2.0/24", "192.0.2.2", ""), udpLease("10.5.3.0/24", "198.51.100.3", ""))
	var tp atomic.Pointer[table]
	tp.Store(tbl)
	d := &dataPath{conn: conn, table: &tp, counts: &counters{}, obs: observe.Nop{}}
	good, far := tbl.lookup(addrKey("10.5.2.1")), tbl.lookup(addrKey("10.5.3.1"))
	msg := func(p *peer, b byte) ipv4.Message { return ipv4.Message{Buffers: [][]byte{{b, b, b}}, Addr: p.addr} }
	var lim logLimiter
	d.send([]ipv4.Message{msg(good, 'a'), msg(far, 'x'), msg(good, 'b')}, []*peer{good, far, good}, &lim)
	if got := far.refused.Load(); got != int32(unix.ENETUNREACH) {
		t.Errorf("unreachable peer marked %d, want ENETUNREACH (%d)", got, unix.ENETUNREACH)
	}
	if got := good.refused.Load(); got != 0 {
		t.Errorf("reachable peer marked %d", got)
	}
	if reason := backend.RefusalReason(unix.Errno(far.refused.Load())); reason != observe.RefusedUnreachable {
		t.Errorf("reason %q", reason)
	}
	_ = rx.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	var got []byte
	for len(got) < 2 {
		n, err := rx.Read(buf)
		if err != nil {
			t.Fatalf("after %q: %v", got, err)
		}
		got = append(got, buf[0])
		if n != 3 {
			t.Errorf("datagram of %d bytes", n)
		}
	}
	if string(got) != "ab" {
		t.Errorf("the reachable peer received %q, want \"ab\"", got)
	}
}
