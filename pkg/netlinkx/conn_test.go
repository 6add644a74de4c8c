package netlinkx

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannel-go/flannel/pkg/netlinkx/nstest"
)

// connLab is a namespace with a vxlan device vx0 (10.9.0.0/32 on it) and a Conn in it.
func connLab(t *testing.T) (*nstest.NS, *Conn, int) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a network namespace")
	}
	ns := nstest.New(t, "fgtest-nlx-")
	la := netlink.NewLinkAttrs()
	la.Name = "vx0"
	if err := ns.Handle.LinkAdd(&netlink.Vxlan{LinkAttrs: la, VxlanId: 1, Port: 8472}); err != nil {
		t.Fatal(err)
	}
	l, err := ns.Handle.LinkByName("vx0")
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.Handle.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	if err := ns.Handle.AddrAdd(l, &netlink.Addr{IPNet: IPNet(netip.MustParsePrefix("10.9.0.0/32"))}); err != nil {
		t.Fatal(err)
	}
	c, err := OpenAt(ns.NsH)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return ns, c, l.Attrs().Index
}

func peerN(i int) (netip.Prefix, netip.Addr, [6]byte, netip.Addr) {
	sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(10 + i/256), byte(i % 256), 0}), 24)
	mac := [6]byte{0x0e, 0, 0, byte(i >> 8), byte(i), 1}
	pub := netip.AddrFrom4([4]byte{198, 51, 100, byte(1 + i%250)})
	return sn, sn.Addr(), mac, pub
}

// TestConnBatchAndDumps writes n peers' entries in pipelined batches, reads them back
// through the dumps and iproute2, and deletes them.
func TestConnBatchAndDumps(t *testing.T) {
	ns, c, idx := connLab(t)
	const n = 700 // several chunks
	var b Batch
	for i := range n {
		sn, gw, mac, pub := peerN(i)
		_ = sn
		b.NeighSet(i, idx, gw, mac)
		b.FDBSet(n+i, idx, mac, pub)
	}
	fails := 0
	if err := c.Run(&b, func(tag int, err error, _ uint32) {
		if err != nil {
			fails++
			t.Errorf("request %d: %v", tag, err)
		}
	}); err != nil {
		t.Fatal(err)
	}
	b.Reset()
	for i := range n {
		_, gw, _, _ := peerN(i)
		b.NexthopAdd(i, idx, gw, true)
	}
	ids := make([]uint32, n)
	calls := 0
	err := c.Run(&b, func(tag int, err error, id uint32) {
		calls++
		if err != nil || id == 0 {
			t.Errorf("nexthop %d: id %d, %v", tag, id, err)
		}
		ids[tag] = id
	})
	if err != nil {
		t.Fatal(err)
	}
	if calls != n {
		t.Fatalf("done called %d times, want %d", calls, n)
	}
	b.Reset()
	for i := range n {
		sn, _, _, _ := peerN(i)
		b.RouteReplace(i, Route{Dst: sn, NhID: ids[i]})
	}
	// One request that must fail in the middle of a chunk: a route to a missing nexthop.
	b.RouteReplace(-1, Route{Dst: netip.MustParsePrefix("10.200.0.0/24"), NhID: 0x7ffffff0})
	sn0, _, _, _ := peerN(0)
	b.RouteReplace(n, Route{Dst: netip.MustParsePrefix("10.201.0.0/24"), Gw: sn0.Addr(), Oif: idx, Flags: unix.RTNH_F_ONLINK})
	var badErr error
	if err := c.Run(&b, func(tag int, err error, _ uint32) {
		if tag == -1 {
			badErr = err
			return
		}
		if err != nil {
			t.Errorf("route %d: %v", tag, err)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if badErr == nil {
		t.Error("a route to a missing nexthop was accepted")
	} else {
		t.Logf("expected failure: %v", badErr)
	}

	neigh, fdb := 0, 0
	if err := c.Neighs(unix.AF_INET, idx, func(x *Neigh) {
		if x.State&unix.NUD_PERMANENT != 0 && x.HasMAC {
			neigh++
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.Neighs(unix.AF_BRIDGE, idx, func(x *Neigh) {
		if x.State&unix.NUD_PERMANENT != 0 && x.IP.Is4() && x.Flags&unix.NTF_SELF != 0 {
			fdb++
		}
	}); err != nil {
		t.Fatal(err)
	}
	nhs := map[uint32]Nexthop{}
	if err := c.Nexthops(idx, func(x *Nexthop) { nhs[x.ID] = *x }); err != nil {
		t.Fatal(err)
	}
	routes := map[netip.Prefix]Route{}
	if err := c.Routes(RouteFilter{Family: unix.AF_INET, Table: unix.RT_TABLE_MAIN, Oif: idx}, func(r *Route) { routes[r.Dst] = *r }); err != nil {
		t.Fatal(err)
	}
	if neigh != n || fdb != n || len(nhs) != n || len(routes) != n+1 {
		t.Fatalf("dumped %d neighbours, %d fdb, %d nexthops, %d routes; want %d each (+1 plain route)", neigh, fdb, len(nhs), len(routes), n)
	}
	for i := range n {
		sn, gw, _, _ := peerN(i)
		r := routes[sn]
		nh := nhs[r.NhID]
		if r.NhID != ids[i] || nh.Gw != gw || nh.Oif != idx || !nh.Onlink() || nh.Other {
			t.Fatalf("peer %d: route %+v nexthop %+v", i, r, nh)
		}
	}
	if r := routes[netip.MustParsePrefix("10.201.0.0/24")]; r.NhID != 0 || r.Gw != sn0.Addr() || !r.Onlink() || r.Extra {
		t.Errorf("plain route read back as %+v", r)
	}
	out, err := exec.Command("ip", "-n", ns.Name, "route", "show", "10.10.1.0/24").CombinedOutput()
	if err != nil {
		t.Fatalf("ip route: %v %s", err, out)
	}
	want := fmt.Sprintf("10.10.1.0/24 nhid %d via 10.10.1.0 dev vx0 onlink", ids[1])
	if strings.TrimSpace(string(out)) != want {
		t.Errorf("ip route show: %q, want %q", out, want)
	}
	// A main-table dump without device filter sees the same routes, not the local table's.
	all := 0
	if err := c.Routes(RouteFilter{Family: unix.AF_INET, Table: unix.RT_TABLE_MAIN}, func(r *Route) {
		all++
		if r.Table != unix.RT_TABLE_MAIN {
			t.Errorf("route of table %d in a main-table dump", r.Table)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if all != n+1 {
		t.Errorf("main table dump: %d routes, want %d", all, n+1)
	}

	b.Reset()
	for i := range n {
		sn, gw, mac, pub := peerN(i)
		b.RouteDel(i, Route{Dst: sn, NhID: ids[i]})
		b.NexthopDel(i, ids[i])
		b.FDBDel(i, idx, mac, pub)
		b.NeighDel(i, idx, gw)
	}
	b.RouteDel(-1, Route{Dst: netip.MustParsePrefix("10.201.0.0/24"), Gw: sn0.Addr(), Oif: idx})
	b.RouteDel(-2, Route{Dst: netip.MustParsePrefix("10.202.0.0/24")}) // absent
	var absent error
	if err := c.Run(&b, func(tag int, err error, _ uint32) {
		if tag == -2 {
			absent = err
			return
		}
		if err != nil {
			t.Errorf("delete %d: %v", tag, err)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if !IsNotFound(absent) {
		t.Errorf("deleting an absent route: %v, want a not-found error", absent)
	}
	left := 0
	count := func(*Neigh) { left++ }
	_ = c.Neighs(unix.AF_INET, idx, count)
	_ = c.Neighs(unix.AF_BRIDGE, idx, count)
	_ = c.Nexthops(idx, func(*Nexthop) { left++ })
	_ = c.Routes(RouteFilter{Family: unix.AF_INET, Table: unix.RT_TABLE_MAIN, Oif: idx}, func(*Route) { left++ })
	if left != 0 {
		t.Errorf("%d objects left after deleting everything", left)
	}
}
