package wireguard

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannel-go/flannel/pkg/netlinkx"
	"github.com/flannel-go/flannel/subnet"
)

// RemoveLeftovers is this backend's backend.LeftoverRemover: it deletes, in the current
// network namespace, the devices and the blackholes beneath the networks that a wireguard
// run with lease prev left.
func RemoveLeftovers(prev *subnet.Lease, devices []string) error {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("wireguard: open netlink handle: %w", err)
	}
	defer h.Close()
	return removeLeftovers(h, prev, devices)
}

func removeLeftovers(h nlHandle, prev *subnet.Lease, devices []string) error {
	errs := []error{netlinkx.DeleteLinks(h, devices)}
	if prev == nil {
		prev = &subnet.Lease{} // no subnet: no network known
	}
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		sn, ok := prev.FamilySubnet(fam == unix.AF_INET6)
		if !ok {
			continue
		}
		routes, err := listBlackholes(h, fam)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, r := range leftoverBlackholes(routes, sn) {
			if err := h.RouteDel(&r); err != nil && !netlinkx.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("delete blackhole route %v metric %d: %w", r.Dst, blackholeMetric, err))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("wireguard: %w", err)
	}
	return nil
}

// leftoverBlackholes selects among routes ours beneath the network of a lease of subnet sn.
// The previous run recorded its lease, not its Network: ours that holds the subnet is that.
func leftoverBlackholes(routes []netlink.Route, sn netip.Prefix) []netlink.Route {
	var out []netlink.Route
	for _, r := range routes {
		dst, ok := netlinkx.Prefix(r.Dst)
		if ok && ourBlackhole(&r) && dst.Bits() <= sn.Bits() && dst.Contains(sn.Addr()) {
			out = append(out, r)
		}
	}
	return out
}
