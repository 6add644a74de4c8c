package kernelwatch

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannel-go/flannel/pkg/netlinkx"
	"github.com/flannel-go/flannel/pkg/netlinkx/nstest"
)

// kickRecorder is a kick function feeding a channel of capacity one, as the daemon's.
type kickRecorder chan struct{}

func (k kickRecorder) kick() {
	select {
	case k <- struct{}{}:
	default:
	}
}

func (k kickRecorder) expect(t *testing.T, what string) {
	t.Helper()
	select {
	case <-k:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no kick", what)
	}
}

func (k kickRecorder) none(t *testing.T, what string) {
	t.Helper()
	select {
	case <-k:
		t.Fatalf("%s: unexpected kick", what)
	case <-time.After(500 * time.Millisecond):
	}
}

// drain waits until the namespace has been quiet for 500 ms (late carrier changes).
func (k kickRecorder) drain() {
	for {
		select {
		case <-k:
		case <-time.After(500 * time.Millisecond):
			return
		}
	}
}

// Changes to owned and watched objects kick, others do not; Run ends with its context.
func TestRunInNamespace(t *testing.T) {
	ns := nstest.New(t, "fgkw")
	h := ns.Handle
	// No IPv6: its link-local addresses and DAD would change the device on their own.
	for _, p := range []string{"/proc/sys/net/ipv6/conf/all/disable_ipv6", "/proc/sys/net/ipv6/conf/default/disable_ipv6"} {
		_ = ns.Sysctl()(p, "1")
	}
	la := netlink.NewLinkAttrs()
	la.Name = "fl0"
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "eth9"}); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	link := func(name string) netlink.Link {
		t.Helper()
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	fl0, eth9 := link("fl0"), link("eth9")
	for _, l := range []netlink.Link{fl0, eth9} {
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.AddrAdd(eth9, &netlink.Addr{IPNet: netlinkx.IPNet(netip.MustParsePrefix("192.0.2.11/24"))}); err != nil {
		t.Fatal(err)
	}

	k := make(kickRecorder, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{
			Filter:    Filter{Devices: []string{"fl0"}, Links: []string{"eth9"}, Networks: []netip.Prefix{netip.MustParsePrefix("10.5.0.0/16")}},
			Namespace: &ns.NsH,
			// never hot: this test is about what kicks, not about back-off
			Backoff: Backoff{Window: time.Second, Threshold: 1 << 20, Base: time.Millisecond, Max: time.Millisecond, LargeBatch: 1 << 20},
		}, k.kick)
	}()
	k.expect(t, "start")
	k.drain()

	do := func(what string, f func() error) {
		t.Helper()
		if err := f(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	route := func(dst string, l netlink.Link) *netlink.Route {
		return &netlink.Route{Dst: netlinkx.IPNet(netip.MustParsePrefix(dst)), LinkIndex: l.Attrs().Index, Table: unix.RT_TABLE_MAIN}
	}
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 9}

	do("route outside the network on eth9", func() error { return h.RouteAdd(route("198.51.100.0/24", eth9)) })
	do("neighbour on eth9", func() error {
		return h.NeighAdd(&netlink.Neigh{LinkIndex: eth9.Attrs().Index, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
			IP: net.ParseIP("192.0.2.9"), HardwareAddr: mac})
	})
	do("address on eth9", func() error {
		return h.AddrAdd(eth9, &netlink.Addr{IPNet: netlinkx.IPNet(netip.MustParsePrefix("192.0.2.12/24"))})
	})
	k.none(t, "unrelated changes")

	for _, c := range []struct {
		what string
		f    func() error
	}{
		{"route inside the network on eth9", func() error { return h.RouteAdd(route("10.5.3.0/24", eth9)) }},
		{"route inside the network deleted", func() error { return h.RouteDel(route("10.5.3.0/24", eth9)) }},
		{"address on fl0", func() error {
			return h.AddrAdd(fl0, &netlink.Addr{IPNet: netlinkx.IPNet(netip.MustParsePrefix("10.5.1.0/32"))})
		}},
		{"route outside the network on fl0", func() error { return h.RouteAdd(route("192.168.9.0/24", fl0)) }},
		{"neighbour on fl0", func() error {
			return h.NeighAdd(&netlink.Neigh{LinkIndex: fl0.Attrs().Index, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
				IP: net.ParseIP("10.5.3.0"), HardwareAddr: mac})
		}},
		{"fl0 MTU", func() error { return h.LinkSetMTU(fl0, 1400) }},
		{"eth9 MTU", func() error { return h.LinkSetMTU(eth9, 1400) }},
		{"fl0 deleted", func() error { return h.LinkDel(fl0) }},
	} {
		do(c.what, c.f)
		k.expect(t, c.what)
		k.drain()
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not end with its context")
	}
}

// fl0Lab makes a throwaway namespace holding the veth pair fl0/eth9, fl0 up.
func fl0Lab(t *testing.T, tag string) (*nstest.NS, netlink.Link) {
	t.Helper()
	ns := nstest.New(t, tag)
	la := netlink.NewLinkAttrs()
	la.Name = "fl0"
	if err := ns.Handle.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "eth9"}); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	fl0, err := ns.Handle.LinkByName("fl0")
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.Handle.LinkSetUp(fl0); err != nil {
		t.Fatal(err)
	}
	return ns, fl0
}

// A receive buffer overflow kicks, and later changes are still seen.
func TestOverflowKeepsWatching(t *testing.T) {
	ns, fl0 := fl0Lab(t, "fgkwo")
	h := ns.Handle
	w := &watcher{cfg: Config{Filter: Filter{Devices: []string{"fl0"}}, Namespace: &ns.NsH, Settle: time.Millisecond,
		Backoff: DefaultBackoff(), RetryDelay: time.Second},
		pending: make(map[Object]struct{}), wake: make(chan struct{}, 1)}
	w.m = newMatcher(w.cfg.Filter)
	s, err := w.subscribe()
	if err != nil {
		t.Fatal(err)
	}
	// The smallest buffer the kernel allows, and a reader that starts late.
	s.feed.SetReceiveBuffer(1)
	for i := range 2000 {
		dst := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)}), 32)
		if err := h.RouteAdd(&netlink.Route{Dst: netlinkx.IPNet(dst), LinkIndex: fl0.Attrs().Index, Table: unix.RT_TABLE_MAIN}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	readerDone := make(chan struct{})
	go func() { defer close(readerDone); w.read(ctx, s) }()
	k := make(kickRecorder, 1)
	dispatchDone := make(chan struct{})
	go func() { defer close(dispatchDone); w.dispatch(ctx, k.kick) }()
	k.expect(t, "start")
	deadline := time.Now().Add(10 * time.Second)
	for w.overflows.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no overflow reported")
		}
		time.Sleep(10 * time.Millisecond)
	}
	k.expect(t, "after the overflow")
	k.drain()
	if err := h.LinkSetMTU(fl0, 1400); err != nil {
		t.Fatal(err)
	}
	k.expect(t, "a change after the overflow")
	cancel()
	<-readerDone
	<-dispatchDone
}

// A burst within the settle time is one kick.
func TestBurstIsOneKick(t *testing.T) {
	ns, fl0 := fl0Lab(t, "fgkwb")
	h := ns.Handle
	k := make(kickRecorder, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Filter: Filter{Devices: []string{"fl0"}}, Namespace: &ns.NsH, Settle: time.Second}, k.kick)
	}()
	k.expect(t, "start")
	k.drain()
	time.Sleep(time.Second) // a late carrier change settles
	k.drain()
	start := time.Now()
	for i := range 50 {
		dst := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 9, 0, byte(i)}), 32)
		if err := h.RouteAdd(&netlink.Route{Dst: netlinkx.IPNet(dst), LinkIndex: fl0.Attrs().Index, Table: unix.RT_TABLE_MAIN}); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Skipf("the burst took %v, longer than half the settle time; cannot judge", d)
	}
	k.expect(t, "burst")
	select {
	case <-k:
		t.Fatal("a second kick for one burst")
	case <-time.After(2 * time.Second):
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
