// Package vxlan is flannel's central backend: pods of every node reach each other
// through a Linux VXLAN device per address family, flannel.<VNI> (IPv4) and
// flannel-v6.<VNI> (IPv6), whose VTEP MAC each node advertises in its lease.
//
// For every peer lease the node needs three kernel objects on the device:
//
//	neighbour  <peer subnet address> lladdr <peer VtepMAC> PERMANENT   (no ARP needed)
//	fdb        <peer VtepMAC> dst <peer PublicIP> self permanent     (where to tunnel)
//	route      <peer subnet> via <peer subnet address> dev flannel.<VNI> onlink
//
// or, with DirectRouting and a peer reachable without a gateway, only the route
// <peer subnet> via <peer PublicIP> on the external interface.
//
// IPv4 onlink routes go through a kernel nexthop object per peer gateway ("nhid N via
// <gw> dev flannel.1 onlink"): the kernel hashes plain routes' next hops without the
// gateway, so n plain onlink routes on one device cost n² to insert, nexthop objects n.
// Kernels without nexthop objects get plain routes (the first nexthop dump tells).
//
// The backend is a reconciler, not an event replayer. Each Reconcile round works on
// three sets per family:
//
//   - desired: desiredFamily, a pure function of the config, our own lease and the peer
//     leases, yields the neighbour, FDB and route sets above. Unusable leases (another
//     backend, bad BackendData, no subnet of the family) are skipped and logged once per
//     distinct problem.
//   - actual: read from the kernel (per family one dump each of the nexthop objects,
//     routes, neighbours and FDB entries), unless the previous round applied every
//     change it needed and the backend's own subscription to kernel change notifications
//     has seen nothing since but the echo of its own writes: the actual state is then the
//     previous round's desired state (cache.go; a change by anyone else, a lost
//     notification, a failed request, a device repair and the daemon's periodic resync
//     all force the dumps). The dumps are filtered by the
//     kernel to our device (routes also on the external interface), keeping what we own:
//     nexthop objects, permanent neighbour and FDB entries on our devices, routes on our
//     devices (kernel-made routes excepted), and routes on the external interface whose
//     destination lies inside the flannel network (direct routes).
//   - diff: a pure function giving the minimal replace/delete operations. Whatever we own
//     that no lease explains is deleted; entries the kernel created (learned FDB entries,
//     dynamic ARP) are left alone.
//
// The operations are applied in pipelined netlink batches (pkg/netlinkx.Conn), in an
// order that keeps the data plane sound: route deletes first, then FDB and neighbour
// deletes; then neighbour sets, FDB sets, nexthop objects, and route sets last, so the
// kernel never needs to ARP for an onlink gateway; nexthop objects no route needs go
// after that. Each request's outcome is checked; failures are collected and the rest
// goes on. A request the kernel refuses for the values of one peer's lease refuses that
// peer as a whole, without failing the round (refused.go). A round with nothing to
// change writes nothing. The same loop covers start-up (adopting what an earlier run or
// upstream flanneld left), restart without loss, self-healing after manual changes and
// scale.
//
// Devices are adopted when compatible, keeping ifindex and MAC; when an attribute the
// library cannot change in place differs (VNI, port, local address, underlay link, GBP,
// learning) the device is recreated with the same MAC, so peers need no update.
//
// The ethtool ioctl is ours (ethtool.go): safchain/ethtool allocates 2.1 MB (149
// allocations) per read-and-set of the checksum feature, ours nothing; mdlayher/ethtool
// cannot set features.
package vxlan

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/claim"
	"github.com/flannel-go/flannel/pkg/kernelwatch"
	"github.com/flannel-go/flannel/pkg/netlinkx"
	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

// BackendType is the lease BackendType and config Backend.Type of this backend.
const BackendType = "vxlan"

// maxIfNameLen is the kernel's limit on interface names (IFNAMSIZ - 1).
const maxIfNameLen = 15

// Counts says how many objects a Reconcile round added (or replaced) and removed.
type Counts struct {
	NeighAdded, NeighRemoved   int
	FDBAdded, FDBRemoved       int
	RoutesAdded, RoutesRemoved int
	// Kernel nexthop objects the IPv4 peer routes use.
	NexthopsAdded, NexthopsRemoved int
	// Other counts device, MTU, MAC and address repairs.
	Other int
}

// Total is the number of changes.
func (c Counts) Total() int {
	return c.NeighAdded + c.NeighRemoved + c.FDBAdded + c.FDBRemoved + c.RoutesAdded + c.RoutesRemoved +
		c.NexthopsAdded + c.NexthopsRemoved + c.Other
}

// Backend is the vxlan backend; after Start it is also the running backend.Network.
// Its methods may be called from several goroutines; they serialise on one mutex and
// block on netlink requests, checking ctx between them.
type Backend struct {
	h      nlHandle
	c      rtConn
	batch  netlinkx.Batch // requests of the apply phase being built (reused)
	sysctl func(path, value string) error
	ext    *backend.ExternalInterface
	vc     Config
	fams   []*family // enabled families, IPv4 first

	mu       sync.Mutex
	prepared bool
	started  bool
	last     Counts // what the last Reconcile changed (LastCounts in export_test.go)
	retry    bool   // Invalidate was called: try the refused peers again (refused.go)
	plog     backend.ProblemLog
	// the peer problems of the round being made: leases skipped, peers refused; and the
	// peers reported as refused in it
	probs, refusedProbs []problem
	reported            map[string]struct{}
	kc                  kernelCache // cache.go

	observing // observer, ethtool and kernel release (observe.go, ethtool.go)
}

var (
	_ backend.Backend     = (*Backend)(nil)
	_ backend.Network     = (*Backend)(nil)
	_ backend.Claimer     = (*Backend)(nil)
	_ backend.Constructor = New
)

// New is the backend.Constructor: it parses the config and opens a netlink handle on
// the current network namespace. It changes nothing in the kernel.
func New(ext *backend.ExternalInterface, cfg *subnet.Config) (backend.Backend, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("vxlan: open netlink handle: %w", err)
	}
	c, err := netlinkx.Open()
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("vxlan: %w", err)
	}
	b, err := newBackend(h, c, nil, ext, cfg)
	if err != nil {
		h.Close()
		c.Close()
		return nil, err
	}
	b.ethtool = &ethtool{} // the handle's namespace is ours
	return b, nil
}

// NewWithHandle is New with an explicit netlink handle and raw netlink connection, both
// in the namespace to configure (netlink.NewHandleAt and netlinkx.OpenAt), and sysctl
// writer (nil: write the file under /proc/sys directly; write errors are logged and
// otherwise ignored). Handle and connection stay owned by the caller; Start subscribes the
// connection to change notifications (netlinkx.Conn.Subscribe, see cache.go). As the handle's
// namespace is not known, the ChecksumOffload option is not applied.
func NewWithHandle(h *netlink.Handle, c *netlinkx.Conn, sysctl func(path, value string) error, ext *backend.ExternalInterface, cfg *subnet.Config) (backend.Backend, error) {
	if h == nil || c == nil {
		return nil, errors.New("vxlan: nil netlink handle or connection")
	}
	return newBackend(h, c, sysctl, ext, cfg)
}

func newBackend(h nlHandle, c rtConn, sysctl func(path, value string) error, ext *backend.ExternalInterface, cfg *subnet.Config) (*Backend, error) {
	if cfg == nil {
		return nil, errors.New("vxlan: nil network config")
	}
	if ext == nil || ext.Iface == nil || ext.Iface.Index <= 0 {
		return nil, errors.New("vxlan: no external interface")
	}
	vc, err := parseConfig(cfg.Backend, ext.Iface.MTU, cfg.EnableIPv6)
	if err != nil {
		return nil, err
	}
	if sysctl == nil {
		sysctl = func(path, value string) error { return os.WriteFile(path, []byte(value), 0o644) }
	}
	b := &Backend{h: h, c: c, sysctl: sysctl, ext: ext, vc: vc, reported: make(map[string]struct{})}
	var errs []error
	if cfg.EnableIPv4 {
		switch {
		case !ext.ExtAddr.IsValid() || !ext.ExtAddr.Is4() || ext.ExtAddr.IsUnspecified():
			errs = append(errs, errors.New("vxlan: IPv4 is enabled but there is no IPv4 public address"))
		case !cfg.Network.IsValid() || !cfg.Network.Addr().Is4():
			errs = append(errs, errors.New("vxlan: IPv4 is enabled but the config has no IPv4 Network"))
		default:
			b.fams = append(b.fams, newFamily(false, "flannel."+strconv.Itoa(vc.VNI), ext.ExtAddr, cfg.Network))
		}
	}
	if cfg.EnableIPv6 {
		switch {
		case !ext.ExtV6Addr.IsValid() || !ext.ExtV6Addr.Is6() || ext.ExtV6Addr.Is4In6() || ext.ExtV6Addr.IsUnspecified():
			errs = append(errs, errors.New("vxlan: IPv6 is enabled but there is no IPv6 public address"))
		case !cfg.IPv6Network.IsValid() || !cfg.IPv6Network.Addr().Is6():
			errs = append(errs, errors.New("vxlan: IPv6 is enabled but the config has no IPv6Network"))
		default:
			b.fams = append(b.fams, newFamily(true, "flannel-v6."+strconv.Itoa(vc.VNI), ext.ExtV6Addr, cfg.IPv6Network))
		}
	}
	for _, f := range b.fams {
		if len(f.name) > maxIfNameLen {
			errs = append(errs, fmt.Errorf("vxlan: device name %q for VNI %d is longer than the kernel's %d characters", f.name, vc.VNI, maxIfNameLen))
		}
	}
	if len(errs) == 0 && len(b.fams) == 0 {
		errs = append(errs, errors.New("vxlan: neither IPv4 nor IPv6 is enabled"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	// Logged once the backend is accepted: the daemon calls New again every second
	// while it refuses this node.
	klog.InfoS("VXLAN config", "VNI", vc.VNI, "Port", vc.Port, "GBP", vc.GBP, "Learning", vc.Learning,
		"DirectRouting", vc.DirectRouting, "ChecksumOffload", vc.ChecksumOffload)
	return b, nil
}

func newFamily(v6 bool, name string, local netip.Addr, network netip.Prefix) *family {
	f := &family{v6: v6, name: name, local: local, network: network.Masked(), nlFam: unix.AF_INET,
		want: newFamState(v6), act: newFamState(v6), nh: !v6, refused: make(map[netip.Prefix]*refusal)}
	if v6 {
		f.nlFam = unix.AF_INET6
	}
	return f
}

// Config returns the parsed backend config.
func (b *Backend) Config() Config { return b.vc }

// Claims names the devices (flannel.<VNI>, flannel-v6.<VNI>) and, per family, the VNI on
// the UDP port (kernelDefaultPort when Port is 0) its devices listen on, on every
// address: the kernel binds its VXLAN sockets to the wildcard.
func (b *Backend) Claims() claim.Set {
	port := b.vc.Port
	if port == 0 {
		port = kernelDefaultPort
	}
	var s claim.Set
	for _, f := range b.fams {
		fam := claim.IPv4
		if f.v6 {
			fam = claim.IPv6
		}
		s.Devices = append(s.Devices, claim.Device{Name: f.name, SetBy: "Backend.VNI"})
		s.Ports = append(s.Ports, claim.Port{Family: fam, Port: port, VNI: b.vc.VNI, SetBy: "Backend.Port"})
	}
	return s
}

// Prepare creates or adopts the devices and returns the lease attributes: PublicIP(v6),
// BackendType "vxlan" and {"VNI":n,"VtepMAC":"…"} per family. The MAC is the existing
// device's, else the previous lease's, else a new random one.
func (b *Backend) Prepare(ctx context.Context, prev *subnet.Lease) (*subnet.LeaseAttrs, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	attrs := &subnet.LeaseAttrs{BackendType: BackendType}
	for _, f := range b.fams {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		mtu, err := b.targetMTU(f)
		if err != nil {
			return nil, fmt.Errorf("vxlan: %w", err)
		}
		f.mtu = mtu
		f.mac = hwAddr{}
		res, _, err := b.ensureDevice(f, prevMAC(prev, f.v6))
		if err != nil {
			return nil, fmt.Errorf("vxlan: %w", err)
		}
		if res != devCreated {
			klog.InfoS("Adopted existing vxlan device", "device", f.name, "index", f.index, "mac", f.mac)
		}
		b.disableRA(f)
		b.applyChecksumOffload(f)
		b.reportDevice(res)
		data := marshalBackendData(b.vc.VNI, f.mac)
		if f.v6 {
			attrs.PublicIPv6 = f.local
			attrs.BackendV6Data = data
		} else {
			attrs.PublicIP = f.local
			attrs.BackendData = data
		}
	}
	b.prepared = true
	return attrs, nil
}

// prevMAC is the VtepMAC our previous lease advertised for a family, or zero.
func prevMAC(prev *subnet.Lease, v6 bool) hwAddr {
	if prev == nil || prev.Attrs.BackendType != BackendType {
		return hwAddr{}
	}
	raw := prev.Attrs.BackendData
	if v6 {
		raw = prev.Attrs.BackendV6Data
	}
	bd, err := parseBackendData(raw)
	if err != nil {
		return hwAddr{}
	}
	return bd.MAC
}

// Start puts the lease's subnet address on the devices and returns the running network.
func (b *Backend) Start(ctx context.Context, lease *subnet.Lease) (backend.Network, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.prepared {
		return nil, errors.New("vxlan: Start called before Prepare")
	}
	if lease == nil {
		return nil, errors.New("vxlan: nil lease")
	}
	for _, f := range b.fams {
		sn, ok := lease.FamilySubnet(f.v6)
		if !ok {
			return nil, fmt.Errorf("vxlan: lease %s has no %s subnet", lease.Key(), f.label())
		}
		f.own = sn
	}
	if _, err := b.heal(ctx); err != nil {
		return nil, err
	}
	b.subscribe()
	b.started = true
	return b, nil
}

// heal checks each device (exists, compatible, MAC, MTU, up) and its address, repairing
// what drifted. It returns the number of repairs.
func (b *Backend) heal(ctx context.Context) (int, error) {
	n := 0
	for _, f := range b.fams {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		res, link, err := b.ensureDevice(f, f.mac)
		if err != nil {
			return n, fmt.Errorf("vxlan: %w", err)
		}
		if res != devAdopted {
			n++
		}
		if res == devCreated {
			b.disableRA(f)
			b.applyChecksumOffload(f)
		}
		b.reportDevice(res)
		c, err := b.ensureAddr(f, link)
		n += c
		observe.Count(b.obs, observe.Address, observe.Repair, c)
		if err != nil {
			return n, fmt.Errorf("vxlan: %w", err)
		}
	}
	return n, nil
}

// MTU is the MTU pods get: the configured underlay MTU minus the overhead of the
// costliest enabled family, so that a packet of that size fits every device: MTU - 50
// for IPv4 only (as upstream), MTU - 70 as soon as IPv6 is enabled (upstream: - 50).
func (b *Backend) MTU() int {
	worst := overhead
	for _, f := range b.fams {
		worst = max(worst, familyOverhead(f.v6))
	}
	return b.vc.MTU - worst
}

// Devices names the vxlan devices of the enabled families.
func (b *Backend) Devices() []string {
	out := make([]string, 0, len(b.fams))
	for _, f := range b.fams {
		out = append(out, f.name)
	}
	return out
}

// RemoveDevices implements backend.Network through the backend's netlink handle.
func (b *Backend) RemoveDevices(names []string) error { return netlinkx.DeleteLinks(b.h, names) }

// WatchFilter selects the vxlan devices (with their addresses, routes, neighbour and
// FDB entries), the external interface (the underlay) and the main-table routes inside
// the flannel networks (direct routes, and a route moved off our device). The watch
// reads the change subscription the kernel cache reads (cache.go).
func (b *Backend) WatchFilter() kernelwatch.Filter {
	f := kernelwatch.Filter{Links: []string{b.ext.Iface.Name}, Feed: b.c.Feed()}
	for _, fam := range b.fams {
		f.Devices = append(f.Devices, fam.name)
		f.Networks = append(f.Networks, fam.network)
	}
	return f
}

// Reconcile converges the devices and the peers' neighbour, FDB and route entries to
// what the leases require (see the package comment). A peer the kernel refuses is
// skipped and reported (refused.go); the other failures are returned joined, and the
// daemon retries later.
func (b *Backend) Reconcile(ctx context.Context, peers subnet.Peers) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, err := b.round(ctx, peers)
	b.last = c
	b.report(c)
	return err
}

func (b *Backend) round(ctx context.Context, peers subnet.Peers) (Counts, error) {
	var c Counts
	if !b.started {
		return c, errors.New("vxlan: Reconcile called before Start")
	}
	other, err := b.heal(ctx)
	c.Other = other
	if err != nil {
		return c, err
	}
	// The kernel is read in full unless the last round left it as desired and no
	// change notification since says otherwise (cache.go).
	b.drainChanges()
	full := !b.kc.on || !b.kc.valid || b.kc.dirty || other > 0
	if klog.V(3).Enabled() {
		klog.InfoS("vxlan round", "readKernel", full, "cacheOn", b.kc.on, "valid", b.kc.valid, "dirty", b.kc.dirty, "repairs", other)
	}
	b.kc.valid, b.kc.dirty = false, false
	if full {
		b.kc.reads++
		for _, f := range b.fams {
			// The kernel holds about as many objects as the peers want: maps made for
			// them at once leave no garbage behind while they fill (after a round too
			// large to follow its own echo, the actual state is still the small one).
			f.act.size(peers.Len())
			if err := b.readActual(f); err != nil {
				return c, fmt.Errorf("vxlan: %w", err)
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return c, err
	}
	b.probs = b.probs[:0]
	retry := b.retry
	b.retry = false
	for _, f := range b.fams {
		p := famParams{
			V6: f.v6, VNI: b.vc.VNI, Dev: f.index, Ext: b.ext.Iface.Index, Network: f.network, Own: f.own,
			Direct: b.vc.DirectRouting, IsDirect: f.under.isDirect, Nexthops: f.nh,
		}
		b.probs = desiredFamily(p, peers, f.want, b.probs)
		f.holdBack(retry)
		diff(f.want, f.act, &f.ops)
	}

	var el errList
	refused := false
	b.kc.applying, b.kc.fdbEchoes = true, 0
	for _, f := range b.fams {
		refused = b.apply(ctx, f, &c, &el) || refused
		f.ops.shrink()
	}
	b.drainChanges()
	b.kc.applying = false
	b.settleRefusals(peers)
	backend.ReportSkipped(b.obs, b.plog.Round(b.probs, b.refusedProbs))
	// After a refusal the kernel holds less than the desired state: the next round
	// reads it back, with the refused objects held back.
	if b.kc.on && !b.kc.dirty && len(el.errs) == 0 && el.more == 0 && !refused {
		for _, f := range b.fams {
			f.promote()
		}
		b.kc.valid = true
	}
	if c.Total() > 0 {
		klog.V(2).InfoS("vxlan reconciled", "neighAdded", c.NeighAdded, "neighRemoved", c.NeighRemoved,
			"fdbAdded", c.FDBAdded, "fdbRemoved", c.FDBRemoved, "routesAdded", c.RoutesAdded,
			"routesRemoved", c.RoutesRemoved, "nexthopsAdded", c.NexthopsAdded, "nexthopsRemoved", c.NexthopsRemoved,
			"repairs", c.Other, "readKernel", full)
	}
	return c, el.err()
}
