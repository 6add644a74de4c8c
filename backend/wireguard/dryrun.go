package wireguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/netlinkx"
	"github.com/flannel-go/flannel/pkg/observe"
)

// dryRun is an nlHandle that changes nothing: reads go to h (after checking ctx), and each
// address or route change is recorded in drift (additions missing, deletions stale), so
// that healLink run on it reports what it would do. Link changes (MTU, up) are not
// recorded, and links named in absent read as new empty devices: what a round creates.
type dryRun struct {
	h      nlHandle
	ctx    context.Context
	absent []string       // devices a round would create
	names  map[int]string // link index (negative: absent) to name: the links looked up, the external interface
	drift  backend.Drift
}

var _ nlHandle = (*dryRun)(nil)

var errDryRunLink = errors.New("wireguard: a dry run neither creates nor deletes links")

func (d *dryRun) LinkByName(name string) (netlink.Link, error) {
	if err := d.ctx.Err(); err != nil {
		return nil, err
	}
	if d.names == nil {
		d.names = map[int]string{}
	}
	if i := slices.Index(d.absent, name); i >= 0 {
		la := netlink.NewLinkAttrs()
		la.Name, la.Index, la.Flags = name, -1-i, net.FlagUp
		d.names[la.Index] = name
		return &netlink.Wireguard{LinkAttrs: la}, nil
	}
	l, err := d.h.LinkByName(name)
	if err == nil {
		d.names[l.Attrs().Index] = name
	}
	return l, err
}

func (d *dryRun) LinkAdd(netlink.Link) error         { return errDryRunLink }
func (d *dryRun) LinkDel(netlink.Link) error         { return errDryRunLink }
func (d *dryRun) LinkSetUp(netlink.Link) error       { return nil }
func (d *dryRun) LinkSetMTU(netlink.Link, int) error { return nil }
func (d *dryRun) AddrAdd(l netlink.Link, a *netlink.Addr) error {
	return d.addr(&d.drift.Missing, l, a)
}
func (d *dryRun) AddrDel(l netlink.Link, a *netlink.Addr) error { return d.addr(&d.drift.Stale, l, a) }
func (d *dryRun) RouteAdd(r *netlink.Route) error               { return d.route(&d.drift.Missing, r) }
func (d *dryRun) RouteReplace(r *netlink.Route) error           { return d.route(&d.drift.Missing, r) }
func (d *dryRun) RouteDel(r *netlink.Route) error               { return d.route(&d.drift.Stale, r) }

func (d *dryRun) AddrList(l netlink.Link, family int) ([]netlink.Addr, error) {
	if err := d.ctx.Err(); err != nil {
		return nil, err
	}
	if l.Attrs().Index < 0 {
		return nil, nil
	}
	return d.h.AddrList(l, family)
}

func (d *dryRun) RouteListFiltered(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	if err := d.ctx.Err(); err != nil {
		return nil, err
	}
	return d.h.RouteListFiltered(family, filter, mask)
}

func (d *dryRun) RouteListFilteredIter(family int, filter *netlink.Route, mask uint64, f func(netlink.Route) bool) error {
	if err := d.ctx.Err(); err != nil {
		return err
	}
	return d.h.RouteListFilteredIter(family, filter, mask, f)
}

func (d *dryRun) addr(to *[]backend.Object, l netlink.Link, a *netlink.Addr) error {
	p, ok := netlinkx.Prefix(a.IPNet)
	if !ok {
		return fmt.Errorf("address %v of %s", a.IPNet, l.Attrs().Name)
	}
	*to = append(*to, backend.Object{Kind: observe.Address, Device: l.Attrs().Name, Dst: p})
	return nil
}

func (d *dryRun) route(to *[]backend.Object, r *netlink.Route) error {
	dst, ok := netlinkx.Prefix(r.Dst)
	if !ok { // a default route
		dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if r.Family == unix.AF_INET6 {
			dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
	}
	o := backend.Object{Kind: observe.Route, Device: d.names[r.LinkIndex], Dst: dst, Detail: routeForm(r)}
	if gw, ok := netip.AddrFromSlice(r.Gw); ok {
		o.Gateway = gw.Unmap()
	}
	*to = append(*to, o)
	return nil
}

// routeForm is what tells r from a route to the same destination through the same
// device: its type unless unicast, and its metric; e.g. "blackhole metric 1000000".
func routeForm(r *netlink.Route) string {
	var f []string
	switch r.Type {
	case 0, unix.RTN_UNICAST:
	case unix.RTN_BLACKHOLE:
		f = append(f, "blackhole")
	case unix.RTN_UNREACHABLE:
		f = append(f, "unreachable")
	case unix.RTN_PROHIBIT:
		f = append(f, "prohibit")
	case unix.RTN_THROW:
		f = append(f, "throw")
	default:
		f = append(f, fmt.Sprintf("type %d", r.Type))
	}
	if r.Priority != 0 {
		f = append(f, fmt.Sprintf("metric %d", r.Priority))
	}
	return strings.Join(f, " ")
}
