// Package udp is the udp backend: flanneld carries the packets of the TUN device flannel0
// in UDP datagrams between the nodes' public addresses, as upstream (one inner IPv4 packet
// per datagram, leases without BackendType). A received packet reaches the TUN only when it
// came from a peer's PublicIP, from that peer's subnet, to ours; others are counted.
package udp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/claim"
	"github.com/flannel-go/flannel/pkg/kernelwatch"
	"github.com/flannel-go/flannel/pkg/netlinkx"
	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/pkg/tunx"
	"github.com/flannel-go/flannel/subnet"
)

// BackendType is the config Backend.Type; leases carry none, as upstream's.
const BackendType = "udp"

// deviceTemplate is the TUN name template; the kernel picks the first free flannel<N>.
const deviceTemplate = "flannel%d"

type nlHandle interface {
	LinkByName(name string) (netlink.Link, error)
	LinkDel(link netlink.Link) error
	LinkSetUp(link netlink.Link) error
	LinkSetMTU(link netlink.Link, mtu int) error
	AddrList(link netlink.Link, family int) ([]netlink.Addr, error)
	AddrAdd(link netlink.Link, addr *netlink.Addr) error
	AddrDel(link netlink.Link, addr *netlink.Addr) error
	RouteListFiltered(family int, filter *netlink.Route, filterMask uint64) ([]netlink.Route, error)
	RouteReplace(route *netlink.Route) error
	RouteDel(route *netlink.Route) error
}

var _ nlHandle = (*netlink.Handle)(nil)

// Backend is the udp backend; after Start it is also the running backend.Network.
type Backend struct {
	h       nlHandle
	ext     *backend.ExternalInterface
	cfg     Config
	network netip.Prefix
	mtu     int

	table  atomic.Pointer[table]
	counts counters

	mu      sync.Mutex
	conn    *net.UDPConn // bound by Prepare
	gso     bool
	gro     bool
	started bool
	dev     string // the TUN's name
	vnetHdr bool
	dp      *dataPath       // the running data path (set by Start)
	runCtx  context.Context // Start's context: the data path's lifetime
	own     netip.Prefix
	plog    backend.ProblemLog
	skipped []backend.Problem
	refused map[string]*refusal // peers whose datagrams the kernel refused, by key (refused.go)
	retry   bool                // Invalidate was called: a new resync period

	obs observe.Observer // nil until SetObserver (observe.go)
}

var (
	_ backend.Backend     = (*Backend)(nil)
	_ backend.Network     = (*Backend)(nil)
	_ backend.Claimer     = (*Backend)(nil)
	_ backend.Constructor = New
)

// New is the backend.Constructor.
func New(ext *backend.ExternalInterface, cfg *subnet.Config) (backend.Backend, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("udp: open netlink handle: %w", err)
	}
	b, err := newBackend(h, ext, cfg)
	if err != nil {
		h.Close()
		return nil, err
	}
	return b, nil
}

func newBackend(h nlHandle, ext *backend.ExternalInterface, cfg *subnet.Config) (*Backend, error) {
	if cfg == nil {
		return nil, errors.New("udp: nil network config")
	}
	if ext == nil || ext.Iface == nil || ext.Iface.Index <= 0 {
		return nil, errors.New("udp: no external interface")
	}
	c, err := parseConfig(cfg.Backend)
	if err != nil {
		return nil, err
	}
	switch {
	case cfg.EnableIPv6:
		return nil, errors.New("udp: IPv6 is not supported by the udp backend (as upstream); use vxlan or host-gw")
	case !cfg.EnableIPv4 || !cfg.Network.IsValid() || !cfg.Network.Addr().Is4():
		return nil, errors.New("udp: the udp backend needs an IPv4 Network")
	case !ext.IfaceAddr.IsValid() || !ext.IfaceAddr.Is4():
		return nil, errors.New("udp: the external interface has no IPv4 address")
	case !ext.ExtAddr.IsValid() || !ext.ExtAddr.Is4() || ext.ExtAddr.IsUnspecified():
		return nil, errors.New("udp: no IPv4 public address")
	case ext.Iface.MTU-overhead < minMTU:
		return nil, fmt.Errorf("udp: external interface MTU %d too small (flannel0 needs MTU - %d >= %d)", ext.Iface.MTU, overhead, minMTU)
	}
	klog.InfoS("UDP config", "Port", c.Port)
	return &Backend{h: h, ext: ext, cfg: c, network: cfg.Network.Masked(), mtu: ext.Iface.MTU - overhead,
		refused: make(map[string]*refusal)}, nil
}

// Config returns the parsed backend config.
func (b *Backend) Config() Config { return b.cfg }

// Claims names the UDP port Prepare binds; the TUN is never adopted, so it is not claimed.
func (b *Backend) Claims() claim.Set {
	return claim.Set{Ports: []claim.Port{{Family: claim.IPv4, Port: b.cfg.Port, Addr: b.ext.IfaceAddr, SetBy: "Backend.Port"}}}
}

// Prepare probes /dev/net/tun and binds the UDP socket (closed when ctx ends), so a node
// that cannot run the backend fails before writing a lease, unlike upstream.
func (b *Backend) Prepare(ctx context.Context, _ *subnet.Lease) (*subnet.LeaseAttrs, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	fd, err := unix.Open(tunx.CloneDevice, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("udp: cannot open %s (is the tun module loaded and CAP_NET_ADMIN granted?): %w", tunx.CloneDevice, err)
	}
	_ = unix.Close(fd)
	if b.conn == nil {
		conn, gso, gro, err := listen(ctx, netip.AddrPortFrom(b.ext.IfaceAddr, uint16(b.cfg.Port)))
		if err != nil {
			return nil, err
		}
		b.conn, b.gso, b.gro = conn, gso, gro
		go func() {
			<-ctx.Done()
			_ = conn.Close()
		}()
	}
	return &subnet.LeaseAttrs{PublicIP: b.ext.ExtAddr}, nil
}

// listen binds the UDP socket with large buffers and reports whether UDP GSO and GRO work.
func listen(ctx context.Context, at netip.AddrPort) (conn *net.UDPConn, gso, gro bool, err error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			s := int(fd)
			if unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, socketBuffer) != nil {
				_ = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RCVBUF, socketBuffer)
			}
			if unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, socketBuffer) != nil {
				_ = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_SNDBUF, socketBuffer)
			}
			_, e := unix.GetsockoptInt(s, unix.IPPROTO_UDP, unix.UDP_SEGMENT)
			gso = e == nil
			if unix.SetsockoptInt(s, unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil {
				v, e := unix.GetsockoptInt(s, unix.IPPROTO_UDP, unix.UDP_GRO)
				gro = e == nil && v == 1
			}
		})
	}}
	pc, err := lc.ListenPacket(ctx, "udp4", at.String())
	if err != nil {
		return nil, false, false, fmt.Errorf("udp: bind %s: %w", at, err)
	}
	return pc.(*net.UDPConn), gso, gro, nil
}

// Start creates flannel0 for the lease and starts the data path; both end with ctx.
func (b *Backend) Start(ctx context.Context, lease *subnet.Lease) (backend.Network, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conn == nil {
		return nil, errors.New("udp: Start called before Prepare")
	}
	if b.started {
		return nil, errors.New("udp: already started")
	}
	if lease == nil || !lease.Subnet.IsValid() || !lease.Subnet.Addr().Is4() {
		return nil, errors.New("udp: the lease has no IPv4 subnet")
	}
	b.own = lease.Subnet.Masked()
	dev, name, vnet, err := tunx.Open(deviceTemplate)
	if err != nil {
		return nil, fmt.Errorf("udp: %w", err)
	}
	b.dev, b.vnetHdr = name, vnet
	if _, err := b.heal(); err != nil {
		_ = dev.Close()
		return nil, err
	}
	b.acceptLocal()
	conn, err := newRawBatchConn(b.conn)
	if err != nil {
		_ = dev.Close()
		return nil, fmt.Errorf("udp: socket: %w", err)
	}
	obs := observe.Or(b.obs)
	for r := range numDropReasons {
		obs.PacketsDropped(r.String(), 0) // the series exist from the start
	}
	d := &dataPath{
		tun:    dev,
		conn:   conn,
		tunIP:  b.own.Addr().As4(),
		own:    net4Of(b.own),
		table:  &b.table,
		gro:    b.gro,
		mtu:    b.mtu,
		counts: &b.counts,
		obs:    obs,
	}
	d.gso.Store(b.gso)
	b.dp, b.runCtx = d, ctx
	sock := b.conn
	go func() {
		<-ctx.Done()
		b.mu.Lock()
		_ = d.device().Close()
		b.mu.Unlock()
		_ = sock.Close()
	}()
	go d.tunToUDP(ctx)
	go d.udpToTUN(ctx)
	b.started = true
	klog.InfoS("udp backend started", "device", name, "address", netip.PrefixFrom(b.own.Addr(), 32), "mtu", b.mtu,
		"listen", b.conn.LocalAddr(), "tunOffloads", vnet, "udpGSO", b.gso, "udpGRO", b.gro)
	if b.ext.ExtAddr != b.ext.IfaceAddr {
		klog.InfoS("udp: the public IP is not the address datagrams are sent from; peers drop them unless the path between the nodes rewrites their source to the public IP (1:1 NAT)",
			"publicIP", b.ext.ExtAddr, "sendsFrom", b.ext.IfaceAddr)
	}
	return b, nil
}

// heal converges flannel0's MTU, up state, /32 address and network route, recreating a
// device removed by hand once the data path runs; it returns the number of repairs.
func (b *Backend) heal() (int, error) {
	n := 0
	link, err := b.h.LinkByName(b.dev)
	if netlinkx.IsNotFound(err) && b.dp != nil && b.runCtx.Err() == nil {
		n++
		link, err = b.recreate()
	}
	if err != nil {
		if netlinkx.IsNotFound(err) {
			return 0, fmt.Errorf("udp: %s vanished; restart flanneld to recreate it", b.dev)
		}
		return 0, fmt.Errorf("udp: look up %s: %w", b.dev, err)
	}
	var errs []error
	if link.Attrs().MTU != b.mtu {
		n++
		if err := b.h.LinkSetMTU(link, b.mtu); err != nil {
			errs = append(errs, fmt.Errorf("udp: set MTU %d on %s: %w", b.mtu, b.dev, err))
		}
	}
	want := netip.PrefixFrom(b.own.Addr(), 32)
	addrs, err := b.h.AddrList(link, unix.AF_INET)
	if err != nil {
		return n, fmt.Errorf("udp: list addresses of %s: %w", b.dev, err)
	}
	found := false
	for i := range addrs {
		p, ok := netlinkx.Prefix(addrs[i].IPNet)
		if !ok {
			continue
		}
		if p == want {
			found = true
			continue
		}
		if b.network.Contains(p.Addr()) {
			n++
			if err := b.h.AddrDel(link, &addrs[i]); err != nil && !netlinkx.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("udp: delete address %s from %s: %w", p, b.dev, err))
			}
		}
	}
	if !found {
		n++
		if err := b.h.AddrAdd(link, &netlink.Addr{IPNet: netlinkx.IPNet(want)}); err != nil && !netlinkx.IsExist(err) {
			errs = append(errs, fmt.Errorf("udp: add address %s to %s: %w", want, b.dev, err))
		}
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		n++
		if err := b.h.LinkSetUp(link); err != nil {
			errs = append(errs, fmt.Errorf("udp: set %s up: %w", b.dev, err))
		}
	}
	idx := link.Attrs().Index
	routes, err := b.h.RouteListFiltered(unix.AF_INET, &netlink.Route{LinkIndex: idx, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return n, fmt.Errorf("udp: list routes of %s: %w", b.dev, err)
	}
	have := false
	for i := range routes {
		r := &routes[i]
		if dst, ok := netlinkx.Prefix(r.Dst); !have && ok && dst.Masked() == b.network && r.Gw == nil && r.Type == unix.RTN_UNICAST &&
			r.Scope == netlink.SCOPE_UNIVERSE && r.Priority == 0 && len(r.MultiPath) == 0 {
			have = true
			continue
		}
		if r.Protocol == unix.RTPROT_KERNEL || r.LinkIndex != idx {
			continue
		}
		n++
		klog.InfoS("udp: removing a route on the TUN device that no lease explains", "device", b.dev, "dst", r.Dst, "gateway", r.Gw)
		if err := b.h.RouteDel(r); err != nil && !netlinkx.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("udp: delete route %v dev %s: %w", r.Dst, b.dev, err))
		}
	}
	if !have {
		n++
		if err := b.h.RouteReplace(&netlink.Route{LinkIndex: idx, Dst: netlinkx.IPNet(b.network),
			Scope: netlink.SCOPE_UNIVERSE, Table: unix.RT_TABLE_MAIN}); err != nil {
			errs = append(errs, fmt.Errorf("udp: add route %s dev %s: %w", b.network, b.dev, err))
		}
	}
	return n, errors.Join(errs...)
}

// recreate replaces a removed TUN device and starts a reader for it (the old one ended).
func (b *Backend) recreate() (netlink.Link, error) {
	dev, name, _, err := tunx.Open(deviceTemplate)
	if err != nil {
		return nil, fmt.Errorf("recreate TUN: %w", err)
	}
	old := b.dp.device()
	b.dp.replaceTUN(dev)
	_ = old.Close()
	klog.InfoS("udp: the TUN device was removed; recreated it", "old", b.dev, "device", name)
	b.dev = name
	b.acceptLocal()
	go b.dp.tunToUDP(b.runCtx)
	return b.h.LinkByName(name)
}

// acceptLocal lets Linux ≥ 6.0 accept our ICMP unreachables, sent from the TUN's own
// address; best effort, as only those answers are lost without it.
func (b *Backend) acceptLocal() {
	p := "/proc/sys/net/ipv4/conf/" + b.dev + "/accept_local"
	if err := os.WriteFile(p, []byte("1"), 0o644); err != nil {
		klog.InfoS("udp: could not set accept_local; ICMP unreachable answers may be dropped by the kernel", "path", p, "err", err)
	}
}

// MTU is the external interface's MTU minus 28 (outer IPv4 and UDP headers).
func (b *Backend) MTU() int { return b.mtu }

// Devices names the TUN device once started.
func (b *Backend) Devices() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dev == "" {
		return nil
	}
	return []string{b.dev}
}

// RemoveDevices implements backend.Network.
func (b *Backend) RemoveDevices(names []string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return netlinkx.DeleteLinks(b.h, names)
}

// WatchFilter selects the TUN, the external interface and routes inside the network.
func (b *Backend) WatchFilter() kernelwatch.Filter {
	b.mu.Lock()
	defer b.mu.Unlock()
	f := kernelwatch.Filter{Links: []string{b.ext.Iface.Name}, Networks: []netip.Prefix{b.network}}
	if b.dev != "" {
		f.Devices = []string{b.dev}
	}
	return f
}

// Stats reports the data path counters.
func (b *Backend) Stats() Stats { return b.counts.snapshot() }

// Reconcile repairs flannel0 and swaps in the peer table built from the leases.
func (b *Backend) Reconcile(ctx context.Context, peers subnet.Peers) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.started {
		return errors.New("udp: Reconcile called before Start")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	t, probs := buildTable(peers, b.network, b.own, b.cfg.Port)
	refused := b.collectRefusals(b.table.Swap(t), t, b.retry)
	b.retry = false
	b.skipped = b.skipped[:0]
	for _, p := range probs {
		b.skipped = append(b.skipped, backend.Problem{Peer: p.Peer, Reason: p.Reason, Skip: p.Skip})
	}
	backend.ReportSkipped(b.obs, b.plog.Round(b.skipped, refused))
	n, err := b.heal()
	observe.Count(b.obs, observe.Device, observe.Repair, n)
	if n > 0 {
		klog.V(2).InfoS("udp: repaired the TUN device", "device", b.dev, "repairs", n)
	}
	klog.V(4).InfoS("udp reconciled", "peers", t.len())
	return err
}
