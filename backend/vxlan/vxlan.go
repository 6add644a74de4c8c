// Package vxlan is the vxlan backend with upstream's devices (flannel.<VNI>,
// flannel-v6.<VNI>), lease data and per-peer neighbour, FDB and onlink route entries (with
// DirectRouting, a plain route to an on-link peer). Neighbour and FDB entries go in before
// the routes needing them, so the kernel never ARPs for a gateway; learned entries are left
// alone, and incompatible devices are recreated with the same MAC.
package vxlan

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
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

const maxIfNameLen = 15

// Counts says how many objects a Reconcile round added (or replaced) and removed.
type Counts struct {
	NeighAdded, NeighRemoved       int
	FDBAdded, FDBRemoved           int
	RoutesAdded, RoutesRemoved     int
	NexthopsAdded, NexthopsRemoved int
	Other                          int // device, MTU, MAC and address repairs
}

// Total is the number of changes.
func (c Counts) Total() int {
	return c.NeighAdded + c.NeighRemoved + c.FDBAdded + c.FDBRemoved + c.RoutesAdded + c.RoutesRemoved +
		c.NexthopsAdded + c.NexthopsRemoved + c.Other
}

// Backend is the vxlan backend; after Start also the running backend.Network. Its methods
// serialise on one mutex and block on netlink, checking ctx between requests.
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
	// this round's skipped leases and refused peers; reported: refusals already counted
	probs, refusedProbs []problem
	reported            map[string]struct{}
	kc                  kernelCache // cache.go
	inc                 incState    // incremental.go

	observing // observer, ethtool and kernel release (observe.go, ethtool.go)
}

var (
	_ backend.Backend     = (*Backend)(nil)
	_ backend.Network     = (*Backend)(nil)
	_ backend.Claimer     = (*Backend)(nil)
	_ backend.Constructor = New
)

// New is the backend.Constructor for the current network namespace.
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

// NewWithHandle is New with the caller's netlink handle and connection in the namespace to
// configure (Start subscribes c) and a sysctl writer (nil: /proc/sys); no ChecksumOffload.
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
	b := &Backend{h: h, c: c, sysctl: sysctl, ext: ext, vc: vc, reported: make(map[string]struct{}),
		inc: incState{seed: maphash.MakeSeed(), newMACs: make(map[hwAddr]struct{})}}
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
	// Logged only once accepted: the daemon calls New every second while it refuses us.
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

// Claims names the devices and, per family, the VNI on the UDP port on every address: the
// kernel binds VXLAN sockets to the wildcard.
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

// Prepare creates or adopts the devices and returns the lease attributes, VtepMAC being
// the existing device's, else the previous lease's, else a new random one.
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

// Start puts the lease's subnet address on the devices and returns the network.
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

// heal repairs the devices and their addresses and returns the number of repairs.
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

// MTU is the pods' MTU fitting every device: MTU - 50 with IPv4 only, as upstream, MTU - 70
// with IPv6 (Documentation/differences-from-upstream.md).
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

// RemoveDevices implements backend.Network.
func (b *Backend) RemoveDevices(names []string) error { return netlinkx.DeleteLinks(b.h, names) }

// WatchFilter selects the devices, the external interface and the routes in the networks,
// on the Feed the kernel cache reads.
func (b *Backend) WatchFilter() kernelwatch.Filter {
	f := kernelwatch.Filter{Links: []string{b.ext.Iface.Name}, Feed: b.c.Feed()}
	for _, fam := range b.fams {
		f.Devices = append(f.Devices, fam.name)
		f.Networks = append(f.Networks, fam.network)
	}
	return f
}

// Reconcile converges the devices and the peers' entries to the leases.
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
	b.drainChanges()
	full := !b.kc.on || !b.kc.valid || b.kc.dirty || other > 0
	if klog.V(3).Enabled() {
		klog.InfoS("vxlan round", "readKernel", full, "cacheOn", b.kc.on, "valid", b.kc.valid, "dirty", b.kc.dirty, "repairs", other)
	}
	b.kc.valid, b.kc.dirty = false, false
	if full {
		b.kc.reads++
		for _, f := range b.fams {
			// Sized for the peers at once: growing step by step leaves garbage.
			f.sizeActual(peers.Len())
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
	delta := b.incremental(full, retry)
	qualified := false
	for _, f := range b.fams {
		p := famParams{
			V6: f.v6, VNI: b.vc.VNI, Dev: f.index, Ext: b.ext.Iface.Index, Network: f.network, Own: f.own,
			Direct: b.vc.DirectRouting, IsDirect: f.under.isDirect, Nexthops: f.nh,
		}
		if delta {
			if delta = b.deltaRound(f, &p, peers); delta {
				b.inc.rounds++
				qualified = true
				continue
			}
			b.inc.fallback++
		}
		b.probs = desiredFamily(p, peers, f.want, b.probs)
		qualified = b.deltaConfig() && qualifies(f, b.probs) && b.inc.notePrints(peers, f.own.Bits())
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
	// After a refusal the kernel holds less than desired: read it next round.
	b.inc.ok = false
	if b.kc.on && !b.kc.dirty && len(el.errs) == 0 && el.more == 0 && !refused {
		for _, f := range b.fams {
			if delta {
				promoteDelta(f, &b.inc)
			} else {
				f.promote()
			}
		}
		b.kc.valid = true
		b.inc.last, b.inc.next = b.inc.next, b.inc.last
		b.inc.ok = qualified
	}
	if c.Total() > 0 {
		klog.V(2).InfoS("vxlan reconciled", "neighAdded", c.NeighAdded, "neighRemoved", c.NeighRemoved,
			"fdbAdded", c.FDBAdded, "fdbRemoved", c.FDBRemoved, "routesAdded", c.RoutesAdded,
			"routesRemoved", c.RoutesRemoved, "nexthopsAdded", c.NexthopsAdded, "nexthopsRemoved", c.NexthopsRemoved,
			"repairs", c.Other, "readKernel", full, "incremental", delta)
	}
	return c, el.err()
}
