// Package hostgw is the host-gw backend, as upstream: no device, a route per peer subnet via
// its public address on the external interface, so all nodes must share an L2 segment. A
// route the kernel refuses skips its peer (Documentation/differences-from-upstream.md).
package hostgw

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/kernelwatch"
	"github.com/flannel-go/flannel/pkg/netlinkx"
	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

// BackendType is the lease BackendType and config Backend.Type of this backend.
const BackendType = "host-gw"

// CheckBackendData admits peer leases without backend data (subnet.RuleOptions).
func CheckBackendData(data json.RawMessage) error {
	if len(data) == 0 || string(data) == "null" {
		return nil
	}
	return errors.New("host-gw leases carry no backend data")
}

// natError is upstream's refusal when the public address is not the interface's.
const natError = "your PublicIP differs from interface IP, meaning that probably you're on a NAT, which is not supported by host-gw backend"

const dumpAttempts = 3

type nlHandle interface {
	RouteListFilteredIter(family int, filter *netlink.Route, filterMask uint64, f func(netlink.Route) bool) error
	RouteReplace(route *netlink.Route) error
	RouteDel(route *netlink.Route) error
	LinkByName(name string) (netlink.Link, error)
	LinkDel(link netlink.Link) error
}

var _ nlHandle = (*netlink.Handle)(nil)

// family is the per-family state and the scratch space of rounds.
type family struct {
	v6      bool
	nlFam   int
	network netip.Prefix
	own     netip.Prefix
	want    map[netip.Prefix]route
	act     []route
	ops     ops
	refused map[netip.Prefix]refusal // by destination, held back from want (holdBack)
}

type refusal struct {
	rt     route  // the desired route, with its Peer
	reason string // observe.Refused*
	text   string // the problem in words, for the log
}

func (f *family) label() string {
	if f.v6 {
		return "IPv6"
	}
	return "IPv4"
}

// Counts says how many routes a Reconcile round replaced and removed.
type Counts struct{ Added, Removed int }

// Backend is the host-gw backend; after Start it is also the running backend.Network.
type Backend struct {
	h    nlHandle
	ext  *backend.ExternalInterface
	fams []*family

	mu      sync.Mutex
	started bool
	last    Counts // what the last Reconcile changed (LastCounts in export_test.go)
	retry   bool   // Invalidate was called: try the refused peers again
	plog    backend.ProblemLog
	// this round's problems; fresh: peers whose refusal was already reported this round
	skipped, refusedProbs []backend.Problem
	fresh                 map[string]struct{}

	obs observe.Observer // nil until SetObserver (observe.go)
}

var (
	_ backend.Backend     = (*Backend)(nil)
	_ backend.Network     = (*Backend)(nil)
	_ backend.Constructor = New
)

// New is the backend.Constructor; as upstream it refuses a public address behind NAT.
func New(ext *backend.ExternalInterface, cfg *subnet.Config) (backend.Backend, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("host-gw: open netlink handle: %w", err)
	}
	b, err := newBackend(h, ext, cfg)
	if err != nil {
		h.Close()
		return nil, err
	}
	return b, nil
}

// NewWithHandle is New with a netlink handle that stays the caller's.
func NewWithHandle(h *netlink.Handle, ext *backend.ExternalInterface, cfg *subnet.Config) (backend.Backend, error) {
	if h == nil {
		return nil, errors.New("host-gw: nil netlink handle")
	}
	return newBackend(h, ext, cfg)
}

func newBackend(h nlHandle, ext *backend.ExternalInterface, cfg *subnet.Config) (*Backend, error) {
	if cfg == nil {
		return nil, errors.New("host-gw: nil network config")
	}
	if ext == nil || ext.Iface == nil || ext.Iface.Index <= 0 {
		return nil, errors.New("host-gw: no external interface")
	}
	if ext.ExtAddr != ext.IfaceAddr || (cfg.EnableIPv6 && ext.ExtV6Addr != ext.IfaceV6Addr) {
		return nil, errors.New(natError)
	}
	b := &Backend{h: h, ext: ext, fresh: make(map[string]struct{})}
	var errs []error
	if cfg.EnableIPv4 {
		switch {
		case !ext.ExtAddr.IsValid() || !ext.ExtAddr.Is4() || ext.ExtAddr.IsUnspecified():
			errs = append(errs, errors.New("host-gw: IPv4 is enabled but there is no IPv4 public address"))
		case !cfg.Network.IsValid() || !cfg.Network.Addr().Is4():
			errs = append(errs, errors.New("host-gw: IPv4 is enabled but the config has no IPv4 Network"))
		default:
			b.fams = append(b.fams, &family{nlFam: unix.AF_INET, network: cfg.Network.Masked(),
				want: make(map[netip.Prefix]route), refused: make(map[netip.Prefix]refusal)})
		}
	}
	if cfg.EnableIPv6 {
		switch {
		case !ext.ExtV6Addr.IsValid() || !ext.ExtV6Addr.Is6() || ext.ExtV6Addr.Is4In6() || ext.ExtV6Addr.IsUnspecified():
			errs = append(errs, errors.New("host-gw: IPv6 is enabled but there is no IPv6 public address"))
		case !cfg.IPv6Network.IsValid() || !cfg.IPv6Network.Addr().Is6():
			errs = append(errs, errors.New("host-gw: IPv6 is enabled but the config has no IPv6Network"))
		default:
			b.fams = append(b.fams, &family{v6: true, nlFam: unix.AF_INET6, network: cfg.IPv6Network.Masked(),
				want: make(map[netip.Prefix]route), refused: make(map[netip.Prefix]refusal)})
		}
	}
	if len(errs) == 0 && len(b.fams) == 0 {
		errs = append(errs, errors.New("host-gw: neither IPv4 nor IPv6 is enabled"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return b, nil
}

// Prepare returns BackendType and the public addresses of the enabled families.
func (b *Backend) Prepare(ctx context.Context, _ *subnet.Lease) (*subnet.LeaseAttrs, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	attrs := &subnet.LeaseAttrs{BackendType: BackendType}
	for _, f := range b.fams {
		if f.v6 {
			attrs.PublicIPv6 = b.ext.ExtV6Addr
		} else {
			attrs.PublicIP = b.ext.ExtAddr
		}
	}
	return attrs, nil
}

// Start records the own subnets (never routed as peers) and returns the network.
func (b *Backend) Start(ctx context.Context, lease *subnet.Lease) (backend.Network, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if lease == nil {
		return nil, errors.New("host-gw: nil lease")
	}
	for _, f := range b.fams {
		sn, ok := lease.FamilySubnet(f.v6)
		if !ok {
			return nil, fmt.Errorf("host-gw: lease %s has no %s subnet", lease.Key(), f.label())
		}
		f.own = sn
	}
	b.started = true
	return b, ctx.Err()
}

// MTU is the external interface's MTU: host-gw adds no header.
func (b *Backend) MTU() int { return b.ext.Iface.MTU }

// Devices is empty: host-gw owns no link.
func (b *Backend) Devices() []string { return nil }

// RemoveDevices implements backend.Network.
func (b *Backend) RemoveDevices(names []string) error { return netlinkx.DeleteLinks(b.h, names) }

// WatchFilter selects the external interface (down flushes our routes) and routes in the networks.
func (b *Backend) WatchFilter() kernelwatch.Filter {
	f := kernelwatch.Filter{Links: []string{b.ext.Iface.Name}}
	for _, fam := range b.fams {
		f.Networks = append(f.Networks, fam.network)
	}
	return f
}

// Reconcile converges our routes to the peer leases.
func (b *Backend) Reconcile(ctx context.Context, peers subnet.Peers) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.started {
		return errors.New("host-gw: Reconcile called before Start")
	}
	var c Counts
	var errs []error
	retry := b.retry
	b.retry = false
	b.skipped = b.skipped[:0]
	b.refusedProbs = b.refusedProbs[:0]
	clear(b.fresh)
	for _, f := range b.fams {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := b.readActual(f); err != nil {
			return fmt.Errorf("host-gw: %w", err)
		}
		p := params{V6: f.v6, Ext: b.ext.Iface.Index, Network: f.network, Own: f.own}
		b.skipped = desired(p, peers, f.want, b.skipped)
		f.holdBack(retry)
		diff(f.want, f.act, &f.ops)
		errs = append(errs, b.apply(ctx, f, &c)...)
		for _, r := range f.refused {
			b.refusedProbs = append(b.refusedProbs, backend.Problem{Peer: r.rt.Peer, Reason: r.text})
		}
	}
	backend.ReportSkipped(b.obs, b.plog.Round(b.skipped, b.refusedProbs))
	b.last = c
	b.report(c)
	if c.Added+c.Removed > 0 {
		klog.V(2).InfoS("host-gw reconciled", "routesAdded", c.Added, "routesRemoved", c.Removed)
	}
	return errors.Join(errs...)
}

// Invalidate makes the next Reconcile retry refused routes (before the periodic resync).
func (b *Backend) Invalidate() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.retry = true
}

// holdBack keeps refused routes out of want while the leases still want exactly them and
// forgets the others (all with retry); our route to a held-back destination is deleted.
func (f *family) holdBack(retry bool) {
	for dst, r := range f.refused {
		if w, ok := f.want[dst]; retry || !ok || w != r.rt {
			delete(f.refused, dst)
			continue
		}
		delete(f.want, dst)
	}
}

// readActual reads our routes: main-table unicast, not kernel-made, on the external interface.
func (b *Backend) readActual(f *family) error {
	ext := b.ext.Iface.Index
	filter := &netlink.Route{LinkIndex: ext, Table: unix.RT_TABLE_MAIN}
	return netlinkx.Dump(dumpAttempts, f.label()+" routes", func() error {
		f.act = f.act[:0]
		return b.h.RouteListFilteredIter(f.nlFam, filter, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE, func(r netlink.Route) bool {
			if r.LinkIndex != ext || len(r.MultiPath) > 0 || r.Type != unix.RTN_UNICAST || r.Protocol == unix.RTPROT_KERNEL || r.Dst == nil {
				return true
			}
			dst, ok := netlinkx.Prefix(r.Dst)
			if !ok {
				return true
			}
			dst = dst.Masked()
			if !f.network.Contains(dst.Addr()) || dst.Bits() < f.network.Bits() {
				return true
			}
			gw, _ := netlinkx.Addr(r.Gw)
			f.act = append(f.act, route{
				Dst: dst, Gw: gw, Link: r.LinkIndex, Prio: r.Priority,
				Onlink: r.Flags&int(netlink.FLAG_ONLINK) != 0, Scope: uint8(r.Scope), Tos: r.Tos,
				Extra: r.Src != nil || r.Encap != nil || r.Via != nil || r.NewDst != nil || r.Realm != 0 ||
					r.MTU != 0 || r.AdvMSS != 0 || r.Hoplimit != 0 || r.InitCwnd != 0 || r.InitRwnd != 0 ||
					r.Congctl != "",
			})
			return true
		})
	})
}

func toKernel(r route) *netlink.Route {
	kr := &netlink.Route{
		Dst:       netlinkx.IPNet(r.Dst),
		LinkIndex: r.Link,
		Priority:  r.Prio,
		Scope:     netlink.Scope(r.Scope),
		Tos:       r.Tos,
		Table:     unix.RT_TABLE_MAIN,
	}
	if r.Gw.IsValid() {
		kr.Gw = r.Gw.AsSlice()
	}
	if r.Onlink {
		kr.Flags = int(netlink.FLAG_ONLINK)
	}
	return kr
}

// apply deletes, then replaces, past failures; a refused replace holds its peer back and
// deletes our old route to it.
func (b *Backend) apply(ctx context.Context, f *family, c *Counts) []error {
	var errs []error
	for i, r := range f.ops.del {
		if i%256 == 255 && ctx.Err() != nil {
			return append(errs, ctx.Err())
		}
		if err := b.h.RouteDel(toKernel(r)); err != nil && !netlinkx.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("host-gw: delete route %s via %v: %w", r.Dst, r.Gw, err))
			continue
		}
		c.Removed++
	}
	for i, r := range f.ops.set {
		if i%256 == 255 && ctx.Err() != nil {
			return append(errs, ctx.Err())
		}
		err := b.h.RouteReplace(toKernel(r))
		if err == nil {
			c.Added++
			continue
		}
		reason := backend.RefusalReason(err)
		if reason == "" {
			errs = append(errs, fmt.Errorf("host-gw: replace route %s via %v dev %s (peer %s): %w", r.Dst, r.Gw, b.ext.Iface.Name, r.Peer, err))
			continue
		}
		f.refused[r.Dst] = refusal{rt: r, reason: reason, text: b.refusalText(r, reason, err)}
		if _, dup := b.fresh[r.Peer]; !dup {
			b.fresh[r.Peer] = struct{}{}
			if b.obs != nil {
				b.obs.PeerProgrammingFailures(reason, 1)
			}
		}
		for _, old := range f.act {
			if old.Dst != r.Dst {
				continue
			}
			switch err := b.h.RouteDel(toKernel(old)); {
			case err == nil:
				c.Removed++
			case !netlinkx.IsNotFound(err): // already gone (deleted above)
				errs = append(errs, fmt.Errorf("host-gw: delete route %s via %v of refused peer %s: %w", old.Dst, old.Gw, r.Peer, err))
			}
		}
	}
	return errs
}

func (b *Backend) refusalText(r route, reason string, err error) string {
	if reason == observe.RefusedUnreachable {
		return fmt.Sprintf("public address %v is not on-link on %s (the peer is on another L2 segment?): the kernel refuses the route %s via %v (%v); host-gw needs all nodes on one L2 network",
			r.Gw, b.ext.Iface.Name, r.Dst, r.Gw, err)
	}
	return fmt.Sprintf("the kernel refuses the route %s via %v dev %s: %v", r.Dst, r.Gw, b.ext.Iface.Name, err)
}
