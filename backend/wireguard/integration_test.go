package wireguard

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/netlinkx"
	"github.com/flannel-go/flannel/pkg/netlinkx/nstest"
	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"

	"github.com/flannel-go/flannel/pkg/klogtest"
)

// The test kernel may lack WireGuard, so the kernel implementation runs against fakes at
// its two edges: fakeLinks makes "wireguard" links ifb links in a throwaway namespace, and
// fakeWG holds their WireGuard state. Everything between is the backend's own code.

// fakeLinks turns wireguard links into ifb links; unsupported makes the kernel refuse
// the link type.
type fakeLinks struct {
	*netlink.Handle
	unsupported bool
	mu          sync.Mutex
	adds        int // wireguard links created
}

func (f *fakeLinks) LinkAdd(l netlink.Link) error {
	if wl, ok := l.(*netlink.Wireguard); ok {
		if f.unsupported {
			return unix.EOPNOTSUPP
		}
		f.mu.Lock()
		f.adds++
		f.mu.Unlock()
		return f.Handle.LinkAdd(&netlink.Ifb{LinkAttrs: wl.LinkAttrs})
	}
	return f.Handle.LinkAdd(l)
}

func (f *fakeLinks) LinkByName(name string) (netlink.Link, error) {
	l, err := f.Handle.LinkByName(name)
	if d, ok := l.(*netlink.Ifb); ok && err == nil && strings.HasPrefix(name, "flannel-wg") {
		return &netlink.Wireguard{LinkAttrs: d.LinkAttrs}, nil
	}
	return l, err
}

func (f *fakeLinks) created() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.adds
}

// fakeWG is the kernel's WireGuard state of the fake devices, per link index.
type fakeWG struct {
	h   *netlink.Handle
	mu  sync.Mutex
	dev map[int]*wgtypes.Device
	ops []string // "set key", "set port", "add <key>", "update <key>", "remove <key>", "replace peers"
	// refuse makes a configuration that adds or changes one of these peers fail with
	// the error, changing nothing; tried counts those attempts.
	refuse map[wgtypes.Key]error
	tried  map[wgtypes.Key]int
}

func newFakeWG(h *netlink.Handle) *fakeWG { return &fakeWG{h: h, dev: map[int]*wgtypes.Device{}} }

func (f *fakeWG) state(name string) (*wgtypes.Device, error) {
	l, err := f.h.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("no device %s: %w", name, os.ErrNotExist)
	}
	d := f.dev[l.Attrs().Index]
	if d == nil {
		d = &wgtypes.Device{Name: name, Type: wgtypes.LinuxKernel}
		f.dev[l.Attrs().Index] = d
	}
	return d, nil
}

func (f *fakeWG) Device(name string) (*wgtypes.Device, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, err := f.state(name)
	if err != nil {
		return nil, err
	}
	c := *d
	c.Peers = nil
	for _, p := range d.Peers {
		p.AllowedIPs = slices.Clone(p.AllowedIPs)
		c.Peers = append(c.Peers, p)
	}
	return &c, nil
}

func (f *fakeWG) ConfigureDevice(name string, cfg wgtypes.Config) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, err := f.state(name)
	if err != nil {
		return err
	}
	for _, pc := range cfg.Peers {
		if err, ok := f.refuse[pc.PublicKey]; ok && !pc.Remove {
			if f.tried == nil {
				f.tried = map[wgtypes.Key]int{}
			}
			f.tried[pc.PublicKey]++
			return err
		}
	}
	if cfg.PrivateKey != nil {
		d.PrivateKey, d.PublicKey = *cfg.PrivateKey, cfg.PrivateKey.PublicKey()
		f.ops = append(f.ops, "set key")
	}
	if cfg.ListenPort != nil {
		d.ListenPort = *cfg.ListenPort
		f.ops = append(f.ops, "set port")
	}
	if cfg.ReplacePeers {
		d.Peers = nil
		f.ops = append(f.ops, "replace peers")
	}
	for _, pc := range cfg.Peers {
		i := slices.IndexFunc(d.Peers, func(p wgtypes.Peer) bool { return p.PublicKey == pc.PublicKey })
		switch {
		case pc.Remove:
			if i >= 0 {
				d.Peers = slices.Delete(d.Peers, i, i+1)
			}
			f.ops = append(f.ops, "remove "+pc.PublicKey.String())
			continue
		case i < 0 && pc.UpdateOnly:
			continue
		case i < 0:
			d.Peers = append(d.Peers, wgtypes.Peer{PublicKey: pc.PublicKey})
			i = len(d.Peers) - 1
			f.ops = append(f.ops, "add "+pc.PublicKey.String())
		case pc.PersistentKeepaliveInterval != nil && pc.Endpoint == nil && pc.PresharedKey == nil && !pc.ReplaceAllowedIPs && len(pc.AllowedIPs) == 0:
			f.ops = append(f.ops, fmt.Sprintf("keepalive %s %v", pc.PublicKey, *pc.PersistentKeepaliveInterval))
		default:
			f.ops = append(f.ops, "update "+pc.PublicKey.String())
		}
		p := &d.Peers[i]
		if pc.PresharedKey != nil {
			p.PresharedKey = *pc.PresharedKey
		}
		if pc.Endpoint != nil {
			p.Endpoint = pc.Endpoint
		}
		if pc.PersistentKeepaliveInterval != nil {
			p.PersistentKeepaliveInterval = *pc.PersistentKeepaliveInterval
		}
		if pc.ReplaceAllowedIPs {
			p.AllowedIPs = nil
		}
		p.AllowedIPs = append(p.AllowedIPs, pc.AllowedIPs...)
	}
	return nil
}

func (f *fakeWG) Close() error { return nil }

func (f *fakeWG) takeOps() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ops := f.ops
	f.ops = nil
	return ops
}

// removePeer removes a peer as wg(8) would, behind the backend's back.
func (f *fakeWG) removePeer(t *testing.T, name string, k wgtypes.Key) {
	t.Helper()
	if err := f.ConfigureDevice(name, wgtypes.Config{Peers: []wgtypes.PeerConfig{{PublicKey: k, Remove: true}}}); err != nil {
		t.Fatal(err)
	}
	f.takeOps()
}

// fakeUserspace records that the userspace implementation was chosen; its devices are
// fake kernel devices (no TUN may be made outside the test's namespace).
type fakeUserspace struct {
	kernelImpl
	opened []string
}

func (u *fakeUserspace) name() string { return implUserspace }

func (u *fakeUserspace) open(name string, mtu, port int) (wgDev, bool, error) {
	u.opened = append(u.opened, name)
	d, _, err := (&kernelImpl{h: &fakeLinks{Handle: u.h.(*fakeLinks).Handle}, wg: u.wg}).open(name, mtu, port)
	return d, true, err
}

type rig struct {
	t      *testing.T
	ns     *nstest.NS
	links  *fakeLinks
	wg     *fakeWG
	ext    *backend.ExternalInterface
	cfg    *subnet.Config
	keyDir string
	obs    *countObserver
}

type countObserver struct {
	observe.Nop
	mu      sync.Mutex
	n       map[string]int
	impls   []string
	refused map[string]int
}

func (c *countObserver) PeerProgrammingFailures(reason string, n int) {
	c.mu.Lock()
	if c.refused == nil {
		c.refused = map[string]int{}
	}
	c.refused[reason] += n
	c.mu.Unlock()
}

func (c *countObserver) KernelObjects(k observe.Kind, op observe.Op, n int) {
	c.mu.Lock()
	c.n[string(k)+"/"+string(op)] += n
	c.mu.Unlock()
}

func (c *countObserver) WireguardImplementation(impl string) {
	c.mu.Lock()
	c.impls = append(c.impls, impl)
	c.mu.Unlock()
}

func (c *countObserver) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.n
	c.n = map[string]int{}
	return n
}

func newRig(t *testing.T, backendJSON string) *rig {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a network namespace; skipped in -short mode")
	}
	ns := nstest.New(t, "fgtest-wg-")
	h := ns.Handle
	la := netlink.NewLinkAttrs()
	la.Name, la.MTU = "u0", 1500
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "u1"}); err != nil {
		t.Fatal(err)
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
			t.Fatal(err)
		}
	}
	cfg, err := subnet.ParseConfig(`{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:1000::/56","Backend":` + backendJSON + `}`)
	if err != nil {
		t.Fatal(err)
	}
	return &rig{t: t, ns: ns, links: &fakeLinks{Handle: h}, wg: newFakeWG(h), cfg: cfg, keyDir: t.TempDir(),
		obs: &countObserver{n: map[string]int{}},
		ext: &backend.ExternalInterface{Iface: &net.Interface{Index: u0.Attrs().Index, Name: "u0", MTU: 1500},
			IfaceAddr: netip.MustParseAddr("192.0.2.1"), ExtAddr: netip.MustParseAddr("192.0.2.1"),
			IfaceV6Addr: netip.MustParseAddr("2001:db8::1"), ExtV6Addr: netip.MustParseAddr("2001:db8::1")}}
}

// backend builds a backend on the rig (a new daemon run).
func (r *rig) backend() *Backend {
	r.t.Helper()
	b, err := newBackend(r.links, Options{KeyFile: filepath.Join(r.keyDir, "wgkey")}, r.ext, r.cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	b.newKernel = func() (wgClient, error) { return r.wg, nil }
	b.newUserspace = func(context.Context) implementation {
		return &fakeUserspace{kernelImpl: kernelImpl{h: r.links, wg: r.wg}}
	}
	b.poll = 20 * time.Millisecond
	b.SetObserver(r.obs)
	return b
}

var ownLease = &subnet.Lease{EnableIPv4: true, EnableIPv6: true, Subnet: netip.MustParsePrefix("10.5.1.0/24"),
	IPv6Subnet: netip.MustParsePrefix("2001:db8:1000:1::/64")}

// start runs Prepare and Start as the daemon does.
func (r *rig) start(ctx context.Context, b *Backend) {
	r.t.Helper()
	if _, err := b.Prepare(ctx, nil); err != nil {
		r.t.Fatal(err)
	}
	if _, err := b.Start(ctx, ownLease); err != nil {
		r.t.Fatal(err)
	}
}

// peerLeases are dual-stack wireguard leases of nodes 2.. n+1, in upstream's format.
func peerLeases(t *testing.T, keys ...wgtypes.Key) subnet.Peers {
	var ls []subnet.Lease
	for i, k := range keys {
		n := i + 2
		ls = append(ls, upstreamLease(t, fmt.Sprintf("10.5.%d.0-24&2001:db8:1000:%d::-64", n, n),
			fmt.Sprintf(`{"PublicIP":"192.0.2.%d","PublicIPv6":"2001:db8::%d","BackendType":"wireguard","BackendData":{"PublicKey":"%s","Port":51820},"BackendV6Data":{"PublicKey":"%s","Port":51821}}`,
				n, n, k, k)))
	}
	return subnet.PeersOf(ls...)
}

func (r *rig) peers(dev string) []wgtypes.Peer {
	r.t.Helper()
	d, err := r.wg.Device(dev)
	if err != nil {
		r.t.Fatal(err)
	}
	return d.Peers
}

func (r *rig) ifindex(dev string) int {
	r.t.Helper()
	l, err := r.ns.Handle.LinkByName(dev)
	if err != nil {
		r.t.Fatal(err)
	}
	return l.Attrs().Index
}

// A restart adopts the kernel devices with their peers: nothing is created or written and
// the ifindexes are the first run's. (Upstream recreates the devices at every start.)
func TestKernelRestartIsHitless(t *testing.T) {
	r := newRig(t, `{"Type":"wireguard","PSK":"`+testPSK+`","PersistentKeepaliveInterval":25}`)
	ctx1, stop1 := context.WithCancel(context.Background())
	b1 := r.backend()
	r.start(ctx1, b1)
	peers := peerLeases(t, k2, k3)
	if err := b1.Reconcile(ctx1, peers); err != nil {
		t.Fatal(err)
	}
	for _, dev := range []string{"flannel-wg", "flannel-wg-v6"} {
		if got := r.peers(dev); len(got) != 2 {
			t.Fatalf("%s: %d peers after the first run", dev, len(got))
		}
	}
	idx4, idx6 := r.ifindex("flannel-wg"), r.ifindex("flannel-wg-v6")
	before4, before6 := r.peers("flannel-wg"), r.peers("flannel-wg-v6")
	stop1() // the daemon stops: a kernel device stays
	created := r.links.created()
	r.wg.takeOps()
	r.obs.take()

	ctx2, stop2 := context.WithCancel(context.Background())
	defer stop2()
	b2 := r.backend()
	r.start(ctx2, b2)
	if err := b2.Reconcile(ctx2, peers); err != nil {
		t.Fatal(err)
	}
	if n := r.links.created() - created; n != 0 {
		t.Errorf("the restart created %d devices", n)
	}
	if ops := r.wg.takeOps(); len(ops) != 0 {
		t.Errorf("the restart wrote to the devices: %q", ops)
	}
	if n := r.obs.take(); len(n) != 0 {
		t.Errorf("the restart changed kernel objects: %v", n)
	}
	if r.ifindex("flannel-wg") != idx4 || r.ifindex("flannel-wg-v6") != idx6 {
		t.Error("a device was recreated")
	}
	if !slices.EqualFunc(r.peers("flannel-wg"), before4, peerEqual) || !slices.EqualFunc(r.peers("flannel-wg-v6"), before6, peerEqual) {
		t.Error("the peers changed across the restart")
	}
	if impls := r.obs.impls; !slices.Equal(impls, []string{"kernel", "kernel"}) {
		t.Errorf("implementation reported %q", impls)
	}
}

func peerEqual(a, b wgtypes.Peer) bool {
	return a.PublicKey == b.PublicKey && a.Endpoint.String() == b.Endpoint.String() && a.PresharedKey == b.PresharedKey &&
		a.PersistentKeepaliveInterval == b.PersistentKeepaliveInterval && fmt.Sprint(a.AllowedIPs) == fmt.Sprint(b.AllowedIPs)
}

// Peers converge one by one: a lease added adds its peer and starts a handshake, a lease
// gone removes its peer, the others are untouched.
func TestReconcileChangesPeersOneByOne(t *testing.T) {
	r := newRig(t, `{"Type":"wireguard"}`)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	b := r.backend()
	r.start(ctx, b)
	if err := b.Reconcile(ctx, peerLeases(t, k2, k3)); err != nil {
		t.Fatal(err)
	}
	r.wg.takeOps()
	if err := b.Reconcile(ctx, peerLeases(t, k2, k4)); err != nil {
		t.Fatal(err)
	}
	ops := r.wg.takeOps()
	slices.Sort(ops)
	// per device: k4 added, its handshake started (keepalive on and off), k3 removed
	want := []string{"add " + k4.String(), "add " + k4.String(), "remove " + k3.String(), "remove " + k3.String(),
		"keepalive " + k4.String() + " 1s", "keepalive " + k4.String() + " 1s", "keepalive " + k4.String() + " 0s", "keepalive " + k4.String() + " 0s"}
	slices.Sort(want)
	if !slices.Equal(ops, want) {
		t.Errorf("operations %q, want %q", ops, want)
	}
	// k4's lease is the second one now: same subnets as k3's were, so AllowedIPs moved
	for _, p := range r.peers("flannel-wg") {
		if p.PublicKey == k4 && (len(p.AllowedIPs) != 1 || p.AllowedIPs[0].String() != "10.5.3.0/24" || p.Endpoint.String() != "192.0.2.3:51820") {
			t.Errorf("peer %+v", p)
		}
	}
	if err := b.Reconcile(ctx, peerLeases(t, k2, k4)); err != nil {
		t.Fatal(err)
	}
	if ops := r.wg.takeOps(); len(ops) != 0 {
		t.Errorf("a round without changes wrote %q", ops)
	}
}

// The link side: MTU - 80, up, own addresses, network and blackhole routes; a stale
// address and route go, a deleted route and blackhole come back.
func TestLinkState(t *testing.T) {
	r := newRig(t, `{"Type":"wireguard","MTU":1400}`)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	b := r.backend()
	r.start(ctx, b)
	h := r.ns.Handle
	check := func() {
		t.Helper()
		for dev, want := range map[string][]string{
			"flannel-wg":    {"10.5.1.0/32", "10.5.0.0/16"},
			"flannel-wg-v6": {"2001:db8:1000:1::/128", "2001:db8:1000::/56"},
		} {
			l, err := h.LinkByName(dev)
			if err != nil {
				t.Fatal(err)
			}
			if l.Attrs().MTU != 1320 || l.Attrs().Flags&net.FlagUp == 0 {
				t.Errorf("%s: mtu %d flags %v", dev, l.Attrs().MTU, l.Attrs().Flags)
			}
			fam := unix.AF_INET
			if strings.HasSuffix(dev, "v6") {
				fam = unix.AF_INET6
			}
			addrs, _ := h.AddrList(l, fam)
			var got []string
			for _, a := range addrs {
				if p, ok := netlinkx.Prefix(a.IPNet); ok && !p.Addr().IsLinkLocalUnicast() {
					got = append(got, p.String())
				}
			}
			if !slices.Equal(got, want[:1]) {
				t.Errorf("%s addresses %v, want %v", dev, got, want[:1])
			}
			routes, _ := h.RouteListFiltered(fam, &netlink.Route{Dst: netlinkx.IPNet(netip.MustParsePrefix(want[1])), Table: unix.RT_TABLE_MAIN},
				netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
			var dev0, hole bool
			for _, rt := range routes {
				dev0 = dev0 || rt.LinkIndex == l.Attrs().Index && rt.Type == unix.RTN_UNICAST
				hole = hole || rt.Type == unix.RTN_BLACKHOLE && rt.Priority == blackholeMetric
			}
			if !dev0 || !hole {
				t.Errorf("%s: route through the device %v, blackhole %v: %+v", dev, dev0, hole, routes)
			}
		}
	}
	check()
	l, _ := h.LinkByName("flannel-wg")
	if err := h.AddrAdd(l, &netlink.Addr{IPNet: netlinkx.IPNet(netip.MustParsePrefix("10.5.77.0/32"))}); err != nil {
		t.Fatal(err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: netlinkx.IPNet(netip.MustParsePrefix("10.5.99.0/24"))}); err != nil {
		t.Fatal(err)
	}
	if err := h.RouteDel(&netlink.Route{Dst: netlinkx.IPNet(netip.MustParsePrefix("10.5.0.0/16")), Type: unix.RTN_BLACKHOLE, Priority: blackholeMetric}); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetMTU(l, 1280); err != nil {
		t.Fatal(err)
	}
	r.obs.take()
	if err := b.Reconcile(ctx, subnet.Peers{}); err != nil {
		t.Fatal(err)
	}
	check()
	if rs, _ := h.RouteListFiltered(unix.AF_INET, &netlink.Route{Dst: netlinkx.IPNet(netip.MustParsePrefix("10.5.99.0/24"))}, netlink.RT_FILTER_DST); len(rs) != 0 {
		t.Errorf("stale route kept: %+v", rs)
	}
	if n := r.obs.take(); n["address/remove"] != 1 || n["route/remove"] != 1 || n["route/add"] != 1 || n["device/repair"] != 1 {
		t.Errorf("reported %v", n)
	}
}

// A peer removed by wg(8) is seen by Watch's poll and restored; a device deleted by hand
// is recreated with every peer.
func TestDriftIsRepaired(t *testing.T) {
	r := newRig(t, `{"Type":"wireguard"}`)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	b := r.backend()
	r.start(ctx, b)
	peers := peerLeases(t, k2, k3)
	if err := b.Reconcile(ctx, peers); err != nil {
		t.Fatal(err)
	}
	kicks := make(chan struct{}, 1)
	go b.Watch(ctx, func() {
		select {
		case kicks <- struct{}{}:
		default:
		}
	}, func(subnet.LeaseAttrs) { t.Error("advertised without a key change") })
	select {
	case <-kicks:
		t.Fatal("kicked while converged")
	case <-time.After(200 * time.Millisecond):
	}
	r.wg.removePeer(t, "flannel-wg-v6", k3)
	select {
	case <-kicks:
	case <-time.After(10 * time.Second):
		t.Fatal("the poll did not notice the removed peer")
	}
	r.obs.take()
	if err := b.Reconcile(ctx, peers); err != nil {
		t.Fatal(err)
	}
	if got := r.peers("flannel-wg-v6"); len(got) != 2 {
		t.Errorf("peers after the repair: %d", len(got))
	}
	if n := r.obs.take(); n["peer/add"] != 1 {
		t.Errorf("reported %v, want one peer added", n)
	}
	// the device deleted by hand
	l, _ := r.ns.Handle.LinkByName("flannel-wg")
	if err := r.ns.Handle.LinkDel(l); err != nil {
		t.Fatal(err)
	}
	if err := b.Reconcile(ctx, peers); err != nil {
		t.Fatal(err)
	}
	if got := r.peers("flannel-wg"); len(got) != 2 {
		t.Errorf("peers of the recreated device: %d", len(got))
	}
	d, _ := r.wg.Device("flannel-wg")
	if d.PrivateKey != b.key || d.ListenPort != 51820 {
		t.Error("the recreated device lacks its key or port")
	}
}

// A new key file is advertised by Watch with a round asked for, which puts the key on
// every device without touching a peer.
func TestKeyRotation(t *testing.T) {
	r := newRig(t, `{"Type":"wireguard"}`)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	b := r.backend()
	r.start(ctx, b)
	peers := peerLeases(t, k2)
	if err := b.Reconcile(ctx, peers); err != nil {
		t.Fatal(err)
	}
	r.wg.takeOps()
	adv := make(chan subnet.LeaseAttrs, 4)
	kicked := make(chan struct{}, 8)
	go b.Watch(ctx, func() { kicked <- struct{}{} }, func(a subnet.LeaseAttrs) { adv <- a })
	path := filepath.Join(r.keyDir, "wgkey")
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(peerPriv.String()+"\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	var a subnet.LeaseAttrs
	select {
	case a = <-adv:
	case <-time.After(10 * time.Second):
		t.Fatal("the new key was not advertised")
	}
	pub := peerPriv.PublicKey().String()
	if want := `{"PublicKey":"` + pub + `","Port":51820}`; string(a.BackendData) != want || string(a.BackendV6Data) != `{"PublicKey":"`+pub+`","Port":51821}` {
		t.Errorf("advertised %s / %s", a.BackendData, a.BackendV6Data)
	}
	select {
	case <-kicked:
	case <-time.After(10 * time.Second):
		t.Fatal("no round asked for")
	}
	if err := b.Reconcile(ctx, peers); err != nil {
		t.Fatal(err)
	}
	if ops := r.wg.takeOps(); !slices.Equal(ops, []string{"set key", "set key"}) {
		t.Errorf("operations %q, want the key set on both devices only", ops)
	}
	// a key file made readable by others is refused; the key stays
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	select {
	case a := <-adv:
		t.Errorf("advertised %s from a refused key file", a.BackendData)
	default:
	}
	if b.key != peerPriv {
		t.Error("the key changed")
	}
}

// The implementation: the kernel's where it exists, else (auto) userspace, logged and
// reported; forced kernel without it is a clear error; forced userspace never tries it.
func TestImplementationChoice(t *testing.T) {
	for _, tt := range []struct {
		name, impl  string
		unsupported bool
		want        string // implementation, or error text
		err         bool
	}{
		{"auto, kernel has it", "auto", false, "kernel", false},
		{"auto, kernel lacks it", "auto", true, "userspace", false},
		{"forced userspace", "userspace", false, "userspace", false},
		{"forced kernel, kernel lacks it", "kernel", true, "Implementation is kernel, but create flannel-wg: the kernel has no WireGuard", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, `{"Type":"wireguard","Implementation":"`+tt.impl+`"}`)
			r.links.unsupported = tt.unsupported
			kernelTried := false
			b := r.backend()
			b.newKernel = func() (wgClient, error) { kernelTried = true; return r.wg, nil }
			ctx, stop := context.WithCancel(context.Background())
			defer stop()
			_, err := b.Prepare(ctx, nil)
			if tt.err {
				if err == nil || !strings.Contains(err.Error(), "wireguard: "+tt.want) || !strings.Contains(err.Error(), "modprobe wireguard") {
					t.Fatalf("error %v, want %q and the fix", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if b.impl.name() != tt.want || !slices.Equal(r.obs.impls, []string{tt.want}) {
				t.Errorf("implementation %s, reported %q, want %s", b.impl.name(), r.obs.impls, tt.want)
			}
			if tt.impl == "userspace" && kernelTried {
				t.Error("the kernel was tried although Implementation is userspace")
			}
			if want := tt.want + " WireGuard: flannel-wg, flannel-wg-v6"; b.Describe() != want {
				t.Errorf("Describe = %q, want %q", b.Describe(), want)
			}
		})
	}
}

// Switching to the kernel implementation removes a device of the other kind with the
// name (a userspace device's TUN), but only once the kernel has shown it can make one.
func TestKernelReplacesOtherKind(t *testing.T) {
	r := newRig(t, `{"Type":"wireguard"}`)
	la := netlink.NewLinkAttrs()
	la.Name = "flannel-wg"
	if err := r.ns.Handle.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	r.start(ctx, r.backend())
	l, err := r.links.LinkByName("flannel-wg")
	if err != nil || l.Type() != "wireguard" {
		t.Fatalf("flannel-wg is %v (%v)", l, err)
	}
	if _, err := r.ns.Handle.LinkByName("flannel-wg-p"); err == nil {
		t.Error("the probe device was left behind")
	}
}

// Neither the private key nor the PSK reaches the log, at the highest verbosity,
// through a whole life: start, peers, a refused key file, rotation.
func TestSecretsNeverLogged(t *testing.T) {
	buf := klogtest.Capture(t, 10)
	r := newRig(t, `{"Type":"wireguard","PSK":"`+testPSK+`"}`)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	b := r.backend()
	r.start(ctx, b)
	first := b.key
	if err := b.Reconcile(ctx, peerLeases(t, k2, k3)); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(r.keyDir, "wgkey")
	_ = os.Chmod(path, 0o644)
	b.checkKeyFile()
	_ = os.Chmod(path, 0o400)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	b.checkKeyFile()
	if err := os.WriteFile(path, []byte(peerPriv.String()), 0o400); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.checkKeyFile(); !ok {
		t.Fatal("rotation not seen")
	}
	if err := b.Reconcile(ctx, peerLeases(t, k2)); err != nil {
		t.Fatal(err)
	}
	_, _ = parseConfig([]byte(`{"PSK":"`+testPSK[:40]+`"}`), 1500, true, false)
	klog.Flush()
	log := buf.String()
	if !strings.Contains(log, "WireGuard") {
		t.Fatalf("nothing logged? %q", log)
	}
	psk := mustKey(testPSK)
	for what, k := range map[string]wgtypes.Key{"first private key": first, "second private key": peerPriv, "PSK": psk} {
		for _, form := range []string{k.String(), hex.EncodeToString(k[:]), k.String()[:20]} {
			if strings.Contains(log, form) {
				t.Errorf("the log holds the %s (%s)", what, form)
			}
		}
	}
	if !strings.Contains(log, peerPriv.PublicKey().String()) {
		t.Error("the new public key was not logged")
	}
}

// A refused peer is skipped: the round succeeds, the others are programmed, the refusal is
// reported per attempt and not retried until Invalidate, and the poll sees no drift. A
// failure that is not the peer's fails the round.
func TestRefusedPeerIsSkipped(t *testing.T) {
	r := newRig(t, `{"Type":"wireguard"}`)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	b := r.backend()
	r.start(ctx, b)
	r.wg.mu.Lock()
	r.wg.refuse = map[wgtypes.Key]error{k3: unix.EINVAL}
	r.wg.mu.Unlock()
	peers := peerLeases(t, k2, k3)
	if err := b.Reconcile(ctx, peers); err != nil {
		t.Fatalf("a refused peer failed the round: %v", err)
	}
	for _, dev := range []string{"flannel-wg", "flannel-wg-v6"} {
		if got := r.peers(dev); len(got) != 1 || got[0].PublicKey != k2 {
			t.Errorf("%s peers %v, want k2 only", dev, got)
		}
	}
	tried := func() int { r.wg.mu.Lock(); defer r.wg.mu.Unlock(); return r.wg.tried[k3] }
	if r.obs.refused["invalid"] != 1 {
		t.Errorf("refusals reported %v, want one invalid", r.obs.refused)
	}
	before := tried()
	if err := b.Reconcile(ctx, peers); err != nil {
		t.Fatal(err)
	}
	if tried() != before || r.obs.refused["invalid"] != 1 {
		t.Errorf("the refused peer was tried again (%d -> %d) or reported again (%v) without a lease change", before, tried(), r.obs.refused)
	}
	if b.drifted() {
		t.Error("the held-back peer counts as drift: the poll would kick every second")
	}
	// the resync tries it again; the obstacle gone, it is programmed
	r.wg.mu.Lock()
	r.wg.refuse = nil
	r.wg.mu.Unlock()
	b.Invalidate()
	if err := b.Reconcile(ctx, peers); err != nil {
		t.Fatal(err)
	}
	if got := r.peers("flannel-wg"); len(got) != 2 {
		t.Errorf("after the resync: %d peers", len(got))
	}
	// a failure that is not the peer's fails the round
	r.wg.mu.Lock()
	r.wg.refuse = map[wgtypes.Key]error{k4: unix.ENOMEM}
	r.wg.mu.Unlock()
	if err := b.Reconcile(ctx, peerLeases(t, k2, k3, k4)); err == nil {
		t.Error("ENOMEM did not fail the round")
	}
}
