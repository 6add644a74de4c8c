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
	"github.com/flannel-go/flannel/pkg/netlinkx/nstest"
	"github.com/flannel-go/flannel/subnet"
)

// nsLab: a namespace with underlay veth u0 (192.0.2.1/24, 2001:db8::1/64) and a gateway
// route to 198.51.100.0/24, whose peers are not on-link.
type nsLab struct {
	ns  *nstest.NS
	h   *netlink.Handle
	u0  netlink.Link
	ext *backend.ExternalInterface
}

func newNSLab(t *testing.T) *nsLab {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a network namespace; skipped in -short mode")
	}
	ns := nstest.New(t, "fgtest-hg-")
	h := ns.Handle
	la := netlink.NewLinkAttrs()
	la.Name = "u0"
	la.MTU = 1500
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "u1"}); err != nil {
		t.Fatalf("veth: %v", err)
	}
	u0, _ := h.LinkByName("u0")
	u1, _ := h.LinkByName("u1")
	for _, l := range []netlink.Link{u0, u1} {
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range []string{"192.0.2.1/24", "2001:db8::1/64"} {
		if err := h.AddrAdd(u0, &netlink.Addr{IPNet: netlinkx.IPNet(netip.MustParsePrefix(a)), Flags: unix.IFA_F_NODAD}); err != nil {
			t.Fatalf("addr %s: %v", a, err)
		}
	}
	if err := h.RouteReplace(&netlink.Route{LinkIndex: u0.Attrs().Index,
		Dst: netlinkx.IPNet(netip.MustParsePrefix("198.51.100.0/24")), Gw: net.ParseIP("192.0.2.254")}); err != nil {
		t.Fatal(err)
	}
	return &nsLab{ns: ns, h: h, u0: u0, ext: &backend.ExternalInterface{
		Iface:       &net.Interface{Index: u0.Attrs().Index, Name: "u0", MTU: 1500},
		IfaceAddr:   netip.MustParseAddr("192.0.2.1"),
		ExtAddr:     netip.MustParseAddr("192.0.2.1"),
		IfaceV6Addr: netip.MustParseAddr("2001:db8::1"),
		ExtV6Addr:   netip.MustParseAddr("2001:db8::1"),
	}}
}

// routes lists "dst via gw" of the routes on u0 (both families), kernel routes excepted.
func (l *nsLab) routes(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		rs, err := l.h.RouteListFiltered(fam, &netlink.Route{LinkIndex: l.u0.Attrs().Index}, netlink.RT_FILTER_OIF)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if r.Protocol == unix.RTPROT_KERNEL || r.Dst == nil || r.Type != unix.RTN_UNICAST {
				continue
			}
			out = append(out, r.Dst.String()+" via "+r.Gw.String())
		}
	}
	slices.Sort(out)
	return out
}

func TestReconcileInNamespace(t *testing.T) {
	l := newNSLab(t)
	ctx := context.Background()
	cfg, err := subnet.ParseConfig(`{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"host-gw"}}`)
	if err != nil {
		t.Fatal(err)
	}
	be, err := NewWithHandle(l.h, l.ext, cfg)
	if err != nil {
		t.Fatal(err)
	}
	attrs, err := be.Prepare(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	own := subnet.Lease{EnableIPv4: true, EnableIPv6: true, Subnet: netip.MustParsePrefix("10.5.1.0/24"),
		IPv6Subnet: netip.MustParsePrefix("fd00:5:0:1::/64"), Attrs: *attrs}
	nw, err := be.Start(ctx, &own)
	if err != nil {
		t.Fatal(err)
	}
	b := nw.(*Backend)

	for _, r := range []struct{ dst, gw string }{{"10.5.9.0/24", "192.0.2.9"}, {"10.99.0.0/16", "192.0.2.9"}} {
		if err := l.h.RouteAdd(&netlink.Route{LinkIndex: l.u0.Attrs().Index, Dst: netlinkx.IPNet(netip.MustParsePrefix(r.dst)),
			Gw: net.ParseIP(r.gw)}); err != nil {
			t.Fatal(err)
		}
	}
	a := lease6("10.5.2.0/24", "fd00:5:0:2::/64", "2001:db8::2")
	a.Attrs.PublicIP = netip.MustParseAddr("192.0.2.2")
	far := lease("10.5.3.0/24", "198.51.100.7", BackendType) // behind a router: not on-link
	vx := lease("10.5.4.0/24", "192.0.2.4", "vxlan")
	peers := []subnet.Lease{own, a, far, vx}

	// A backend fresh from its constructor reads the drift without changing anything.
	ro, err := NewWithHandle(l.h, l.ext, cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkDrift(t, "before the first round", ro, &own, peers,
		[]string{"route 10.5.2.0/24 via 192.0.2.2 dev u0", "route 10.5.3.0/24 via 198.51.100.7 dev u0", "route fd00:5:0:2::/64 via 2001:db8::2 dev u0"},
		[]string{"route 10.5.9.0/24 via 192.0.2.9 dev u0"})

	if err := nw.Reconcile(ctx, subnet.PeersOf(peers...)); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	want := []string{"10.5.2.0/24 via 192.0.2.2", "10.99.0.0/16 via 192.0.2.9", "198.51.100.0/24 via 192.0.2.254", "fd00:5:0:2::/64 via 2001:db8::2"}
	if got := l.routes(t); !slices.Equal(got, want) {
		t.Fatalf("routes %q, want %q", got, want)
	}
	if unreach := b.refusedProbs; len(unreach) != 1 || unreach[0].Peer != far.Key() || !strings.Contains(unreach[0].Reason, "198.51.100.7") ||
		!strings.Contains(unreach[0].Reason, "not on-link") {
		t.Errorf("refused peers %+v, want one naming %s and 198.51.100.7", unreach, far.Key())
	}

	// Idempotent: a second round changes nothing.
	if err := nw.Reconcile(ctx, subnet.PeersOf(peers...)); err != nil {
		t.Fatal(err)
	}
	if c := b.LastCounts(); c.Added != 0 || c.Removed != 0 {
		t.Errorf("second round changed %+v", c)
	}

	// A route deleted by hand comes back; a changed gateway is repaired.
	if err := l.h.RouteDel(&netlink.Route{LinkIndex: l.u0.Attrs().Index, Dst: netlinkx.IPNet(netip.MustParsePrefix("10.5.2.0/24"))}); err != nil {
		t.Fatal(err)
	}
	if err := l.h.RouteReplace(&netlink.Route{LinkIndex: l.u0.Attrs().Index, Dst: netlinkx.IPNet(netip.MustParsePrefix("fd00:5:0:2::/64")),
		Gw: net.ParseIP("2001:db8::7")}); err != nil {
		t.Fatal(err)
	}
	// The peer behind a router stays missing: the kernel refuses its route.
	checkDrift(t, "after the changes by hand", ro, &own, peers,
		[]string{"route 10.5.2.0/24 via 192.0.2.2 dev u0", "route 10.5.3.0/24 via 198.51.100.7 dev u0", "route fd00:5:0:2::/64 via 2001:db8::2 dev u0"}, nil)
	if err := nw.Reconcile(ctx, subnet.PeersOf(peers...)); err != nil {
		t.Fatal(err)
	}
	if got := l.routes(t); !slices.Equal(got, want) {
		t.Fatalf("after repair: routes %q, want %q", got, want)
	}
	checkDrift(t, "after repair", b, &own, peers, []string{"route 10.5.3.0/24 via 198.51.100.7 dev u0"}, nil)

	// The lease goes: so does its route.
	if err := nw.Reconcile(ctx, subnet.PeersOf(own, far)); err != nil {
		t.Fatal(err)
	}
	if got, want := l.routes(t), []string{"10.99.0.0/16 via 192.0.2.9", "198.51.100.0/24 via 192.0.2.254"}; !slices.Equal(got, want) {
		t.Fatalf("after removal: routes %q, want %q", got, want)
	}
}

// checkDrift compares what a backend's Drift reports, in any order.
func checkDrift(t *testing.T, what string, be backend.Backend, own *subnet.Lease, peers []subnet.Lease, missing, stale []string) {
	t.Helper()
	d, err := be.(backend.DriftReader).Drift(context.Background(), own, subnet.PeersOf(peers...))
	if err != nil {
		t.Fatalf("%s: Drift: %v", what, err)
	}
	gotMissing, gotStale := d.Strings()
	if !slices.Equal(gotMissing, missing) || !slices.Equal(gotStale, stale) {
		t.Errorf("%s: missing %q stale %q, want %q and %q", what, gotMissing, gotStale, missing, stale)
	}
}
