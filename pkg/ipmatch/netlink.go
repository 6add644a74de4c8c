package ipmatch

import (
	"errors"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannel-go/flannel/pkg/netlinkx"
)

// netlinkKernel reads through netlink sockets opened per call, in the calling thread's namespace.
type netlinkKernel struct{}

// dumpAttempts bounds the retries of a dump the kernel interrupted as the tables changed.
const dumpAttempts = 5

func dump[T any](what string, list func() (T, error)) (T, error) {
	var v T
	err := netlinkx.Dump(dumpAttempts, what, func() (err error) {
		v, err = list()
		return err
	})
	return v, err
}

func (netlinkKernel) links() ([]linkInfo, error) {
	ls, err := dump("links", netlink.LinkList)
	if err != nil {
		return nil, err
	}
	addrs, err := dump("addresses", func() ([]netlink.Addr, error) {
		return netlink.AddrList(nil, netlink.FAMILY_ALL)
	})
	if err != nil {
		return nil, err
	}
	out := make([]linkInfo, 0, len(ls))
	byIndex := make(map[int]int, len(ls))
	for _, l := range ls {
		a := l.Attrs()
		byIndex[a.Index] = len(out)
		out = append(out, linkInfo{Index: a.Index, Name: a.Name, MTU: a.MTU, HardwareAddr: a.HardwareAddr, Flags: a.Flags})
	}
	for _, ad := range addrs {
		i, ok := byIndex[ad.LinkIndex]
		if !ok || ad.IPNet == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(ad.IP)
		if !ok {
			continue
		}
		out[i].Addrs = append(out[i].Addrs, addrInfo{Addr: ip.Unmap(), Flags: ad.Flags})
	}
	slices.SortStableFunc(out, func(x, y linkInfo) int { return x.Index - y.Index })
	return out, nil
}

func (netlinkKernel) routes(family int) ([]routeInfo, error) {
	rs, err := dump("routes", func() ([]netlink.Route, error) {
		return netlink.RouteList(nil, family)
	})
	if err != nil {
		return nil, err
	}
	out := make([]routeInfo, 0, len(rs))
	for _, r := range rs {
		out = append(out, toRouteInfo(r))
	}
	return out, nil
}

func (netlinkKernel) routeTo(dst netip.Addr) (routeInfo, error) {
	rs, err := netlink.RouteGet(net.IP(dst.AsSlice()))
	if err != nil {
		return routeInfo{}, err
	}
	if len(rs) == 0 {
		return routeInfo{}, errors.New("no route")
	}
	return toRouteInfo(rs[0]), nil
}

func toRouteInfo(r netlink.Route) routeInfo {
	ri := routeInfo{
		LinkIndex: r.LinkIndex,
		Priority:  r.Priority,
		Unicast:   r.Type == unix.RTN_UNICAST,
	}
	if r.Dst == nil {
		ri.Default = true
	} else if ones, _ := r.Dst.Mask.Size(); ones == 0 {
		ri.Default = true
	}
	if ri.LinkIndex == 0 && len(r.MultiPath) > 0 && r.MultiPath[0] != nil {
		ri.LinkIndex = r.MultiPath[0].LinkIndex
	}
	if src, ok := netip.AddrFromSlice(r.Src); ok {
		ri.Src = src.Unmap()
	}
	return ri
}
