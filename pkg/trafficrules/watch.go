package trafficrules

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

const unixRTMDelRoute = unix.RTM_DELROUTE

// watchNFTables signals each nf_tables change or loss in this namespace, coalesced, until ctx ends.
func watchNFTables(ctx context.Context) (<-chan struct{}, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("nfnetlink socket: %w", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1 << (unix.NFNLGRP_NFTABLES - 1)}); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("nfnetlink subscribe: %w", err)
	}
	f := os.NewFile(uintptr(fd), "nfnetlink-nftables")
	out := make(chan struct{}, 1)
	notify := func() {
		select {
		case out <- struct{}{}:
		default:
		}
	}
	go func() {
		<-ctx.Done()
		_ = f.Close()
	}()
	go func() {
		defer close(out)
		buf := make([]byte, 64<<10)
		for {
			_, err := f.Read(buf)
			if err != nil {
				if errors.Is(err, unix.ENOBUFS) {
					notify() // announcements were lost: check anyway
					continue
				}
				if ctx.Err() == nil {
					klog.ErrorS(err, "nf_tables watch failed")
				}
				return
			}
			notify()
		}
	}()
	return out, nil
}

// ensureBlackholes adds a blackhole route for each own subnet that has none.
func (m *Manager) ensureBlackholes() error {
	var errs []error
	for _, p := range m.blackholes {
		fam := netlink.FAMILY_V4
		if p.Addr().Is6() {
			fam = netlink.FAMILY_V6
		}
		dst := &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
		routes, err := m.nl.RouteListFiltered(fam, &netlink.Route{Dst: dst, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
		if err != nil {
			errs = append(errs, fmt.Errorf("list routes to %s: %w", p, err))
			continue
		}
		found := false
		for _, r := range routes {
			if r.Type == unix.RTN_BLACKHOLE {
				found = true
				break
			}
		}
		if found {
			continue
		}
		if err := m.nl.RouteAdd(&netlink.Route{Dst: dst, Type: unix.RTN_BLACKHOLE, Table: unix.RT_TABLE_MAIN}); err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("add blackhole route %s: %w", p, err))
			continue
		}
		klog.InfoS("Added blackhole route", "subnet", p)
	}
	return errors.Join(errs...)
}
