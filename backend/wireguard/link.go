package wireguard

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannel-go/flannel/pkg/netlinkx"
)

// blackholeMetric puts a blackhole beneath each network route, so pod traffic never leaves
// unencrypted while the device is absent.
const blackholeMetric = 1000000

// v6DefaultMetric is the metric the kernel gives an IPv6 route added without one.
const v6DefaultMetric = 1024

// linkCounts says what healLink changed.
type linkCounts struct {
	device        int // MTU or up flag restored
	addrAdded     int
	addrRemoved   int
	routesAdded   int
	routesRemoved int
	strayRoutes   []strayRoute // removed; logged by the caller
}

// strayRoute is a route healLink removed, and why.
type strayRoute struct {
	route netlink.Route
	dev   string // its device; "" for a blackhole
	why   string
}

// Why healLink removes a route, as logged.
const (
	strayUnexplained = "no lease explains it"
	strayBypass      = "it sends pod traffic past WireGuard unencrypted"
)

// healLink converges the device's MTU, up flag, own addresses, network routes (no other)
// and the blackholes beneath, and removes the main table's routes into the networks
// through the external interface ext, which bypass the device (isBypass). Each family's
// main table is listed once.
func healLink(h nlHandle, d *devWant, mtu int, ext *net.Interface) (linkCounts, error) {
	var n linkCounts
	link, err := h.LinkByName(d.name)
	if err != nil {
		return n, fmt.Errorf("look up %s: %w", d.name, err)
	}
	var errs []error
	if link.Attrs().MTU != mtu {
		n.device++
		if err := h.LinkSetMTU(link, mtu); err != nil {
			errs = append(errs, fmt.Errorf("set MTU %d on %s: %w", mtu, d.name, err))
		}
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		n.device++
		if err := h.LinkSetUp(link); err != nil {
			errs = append(errs, fmt.Errorf("set %s up: %w", d.name, err))
		}
	}
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		nets := familyPrefixes(d.networks, fam == unix.AF_INET6)
		if len(nets) == 0 {
			continue
		}
		if err := healAddrs(h, link, d, fam, nets, &n); err != nil {
			errs = append(errs, err)
		}
		routes, err := linkRoutes(h, fam, link.Attrs().Index, ext.Index, nets)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := healRoutes(h, link, d, fam, nets, routes, &n); err != nil {
			errs = append(errs, err)
		}
		if err := healBlackholes(h, nets, routes, &n); err != nil {
			errs = append(errs, err)
		}
		if err := removeBypasses(h, ext, nets, routes, &n); err != nil {
			errs = append(errs, err)
		}
	}
	return n, errors.Join(errs...)
}

func familyPrefixes(ps []netip.Prefix, v6 bool) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if p.Addr().Is6() == v6 {
			out = append(out, p)
		}
	}
	return out
}

func inAny(nets []netip.Prefix, a netip.Addr) bool {
	for _, p := range nets {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func healAddrs(h nlHandle, link netlink.Link, d *devWant, fam int, nets []netip.Prefix, n *linkCounts) error {
	addrs, err := h.AddrList(link, fam)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", d.name, err)
	}
	want := familyPrefixes(d.addrs, fam == unix.AF_INET6)
	found := make([]bool, len(want))
	var errs []error
	for i := range addrs {
		p, ok := netlinkx.Prefix(addrs[i].IPNet)
		if !ok || !inAny(nets, p.Addr()) {
			continue // not ours: link-local addresses, anything outside the networks
		}
		keep := false
		for j, w := range want {
			if p == w {
				found[j], keep = true, true
			}
		}
		if keep {
			continue
		}
		n.addrRemoved++
		if err := h.AddrDel(link, &addrs[i]); err != nil && !netlinkx.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete address %s from %s: %w", p, d.name, err))
		}
	}
	for j, w := range want {
		if found[j] {
			continue
		}
		n.addrAdded++
		a := &netlink.Addr{IPNet: netlinkx.IPNet(w)}
		if fam == unix.AF_INET6 {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(link, a); err != nil && !netlinkx.IsExist(err) {
			errs = append(errs, fmt.Errorf("add address %s to %s: %w", w, d.name, err))
		}
	}
	return errors.Join(errs...)
}

// isNetworkRoute reports whether r is a network's route as healRoutes writes it.
func isNetworkRoute(r *netlink.Route, dst netip.Prefix, v6 bool) bool {
	if r.Gw != nil || r.Type != unix.RTN_UNICAST || len(r.MultiPath) != 0 {
		return false
	}
	if v6 {
		return r.Priority == v6DefaultMetric || r.Priority == 0
	}
	return r.Scope == netlink.SCOPE_LINK && r.Priority == 0
}

// dumpAttempts is how often a route dump the kernel interrupted is tried.
const dumpAttempts = 3

// linkRoutes lists, in one dump of the family's main table, the routes healLink judges:
// those through the device idx, the blackholes, and the bypasses of nets through ext; the
// others (a full table may hold many) are not kept.
func linkRoutes(h nlHandle, fam, idx, ext int, nets []netip.Prefix) ([]netlink.Route, error) {
	var out []netlink.Route
	err := netlinkx.Dump(dumpAttempts, "main-table routes", func() error {
		out = out[:0]
		return h.RouteListFilteredIter(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE, func(r netlink.Route) bool {
			if r.LinkIndex == idx || r.Type == unix.RTN_BLACKHOLE || isBypass(&r, ext, nets) {
				out = append(out, r)
			}
			return true
		})
	})
	return out, err
}

// healRoutes keeps, of routes (the family's main table), those through the device that
// healLink writes, and deletes its others.
func healRoutes(h nlHandle, link netlink.Link, d *devWant, fam int, nets []netip.Prefix, routes []netlink.Route, n *linkCounts) error {
	idx := link.Attrs().Index
	v6 := fam == unix.AF_INET6
	have := make([]bool, len(nets))
	var errs []error
	for i := range routes {
		r := &routes[i]
		if r.Protocol == unix.RTPROT_KERNEL || r.LinkIndex != idx {
			continue
		}
		dst, ok := netlinkx.Prefix(r.Dst)
		if ok && dst.Addr().IsLinkLocalUnicast() {
			continue // fe80::/64, the kernel's own
		}
		wanted := false
		for j, p := range nets {
			if ok && !have[j] && dst.Masked() == p && isNetworkRoute(r, p, v6) {
				have[j], wanted = true, true
				break
			}
		}
		if wanted {
			continue
		}
		n.removed(r, d.name, strayUnexplained)
		if err := h.RouteDel(r); err != nil && !netlinkx.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete route %v dev %s: %w", r.Dst, d.name, err))
		}
	}
	for j, p := range nets {
		if have[j] {
			continue
		}
		n.routesAdded++
		r := &netlink.Route{LinkIndex: idx, Dst: netlinkx.IPNet(p), Table: unix.RT_TABLE_MAIN}
		if !v6 {
			r.Scope = netlink.SCOPE_LINK
		}
		if err := h.RouteReplace(r); err != nil {
			errs = append(errs, fmt.Errorf("add route %s dev %s: %w", p, d.name, err))
		}
	}
	return errors.Join(errs...)
}

// healBlackholes adds "blackhole <network> metric 1000000" for each of nets that lacks one
// in routes (the family's main table) and deletes those at that metric for networks no
// longer configured (a changed Network): a more specific one would swallow pod traffic.
func healBlackholes(h nlHandle, nets []netip.Prefix, routes []netlink.Route, n *linkCounts) error {
	// configured reports whether r goes to one of nets.
	configured := func(r *netlink.Route) bool {
		dst, ok := netlinkx.Prefix(r.Dst)
		return ok && slices.Contains(nets, dst.Masked())
	}
	var errs []error
	for _, p := range nets {
		if slices.ContainsFunc(routes, func(r netlink.Route) bool {
			dst, ok := netlinkx.Prefix(r.Dst)
			return ourBlackhole(&r) && ok && dst.Masked() == p
		}) {
			continue
		}
		n.routesAdded++
		err := h.RouteAdd(&netlink.Route{Dst: netlinkx.IPNet(p), Type: unix.RTN_BLACKHOLE, Priority: blackholeMetric, Table: unix.RT_TABLE_MAIN})
		if err != nil && !netlinkx.IsExist(err) {
			errs = append(errs, fmt.Errorf("add blackhole route %s metric %d: %w", p, blackholeMetric, err))
		}
	}
	for i := range routes {
		r := &routes[i]
		if !ourBlackhole(r) || configured(r) {
			continue
		}
		n.removed(r, "", strayUnexplained)
		if err := h.RouteDel(r); err != nil && !netlinkx.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete blackhole route %v metric %d: %w", r.Dst, blackholeMetric, err))
		}
	}
	return errors.Join(errs...)
}

// listBlackholes lists the family's blackhole routes in the main table.
func listBlackholes(h nlHandle, fam int) ([]netlink.Route, error) {
	routes, err := h.RouteListFiltered(fam, &netlink.Route{Type: unix.RTN_BLACKHOLE, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_TYPE|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list blackhole routes: %w", err)
	}
	return routes, nil
}

// ourBlackhole reports whether r is a blackhole healBlackholes writes.
func ourBlackhole(r *netlink.Route) bool {
	return r.Type == unix.RTN_BLACKHOLE && r.Priority == blackholeMetric
}

// removeBypasses deletes, of routes (the family's main table), those isBypass selects.
func removeBypasses(h nlHandle, ext *net.Interface, nets []netip.Prefix, routes []netlink.Route, n *linkCounts) error {
	var errs []error
	for i := range routes {
		r := &routes[i]
		if !isBypass(r, ext.Index, nets) {
			continue
		}
		n.removed(r, ext.Name, strayBypass)
		if err := h.RouteDel(r); err != nil && !netlinkx.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete route %v via %v dev %s: %w", r.Dst, r.Gw, ext.Name, err))
		}
	}
	return errors.Join(errs...)
}

// isBypass reports whether r, a main-table route, sends traffic to one of nets or a part
// of it out of the external interface ext (an ifindex), past the devices and in the clear:
// the shape host-gw and vxlan's DirectRouting give their peers' routes ("<subnet> via
// <public IP> dev <ext>"). The kernel's own routes (an address's prefix) are not.
func isBypass(r *netlink.Route, ext int, nets []netip.Prefix) bool {
	if ext <= 0 || r.LinkIndex != ext || r.Protocol == unix.RTPROT_KERNEL || (r.Type != unix.RTN_UNICAST && r.Type != 0) {
		return false
	}
	dst, ok := netlinkx.Prefix(r.Dst)
	if !ok {
		return false // a default route
	}
	return slices.ContainsFunc(nets, func(p netip.Prefix) bool { return p.Bits() <= dst.Bits() && p.Contains(dst.Addr()) })
}

// removed counts r as removed and records it for the log.
func (n *linkCounts) removed(r *netlink.Route, dev, why string) {
	n.routesRemoved++
	n.strayRoutes = append(n.strayRoutes, strayRoute{route: *r, dev: dev, why: why})
}
