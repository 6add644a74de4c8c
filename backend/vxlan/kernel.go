package vxlan

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/netlinkx"
	"github.com/flannel-go/flannel/pkg/observe"
)

// nlHandle is the part of *netlink.Handle for devices and addresses; calls cannot be cancelled.
type nlHandle interface {
	LinkByName(name string) (netlink.Link, error)
	LinkByIndex(index int) (netlink.Link, error)
	LinkAdd(link netlink.Link) error
	LinkDel(link netlink.Link) error
	LinkSetUp(link netlink.Link) error
	LinkSetMTU(link netlink.Link, mtu int) error
	LinkSetHardwareAddr(link netlink.Link, hw net.HardwareAddr) error
	AddrList(link netlink.Link, family int) ([]netlink.Addr, error)
	AddrAdd(link netlink.Link, addr *netlink.Addr) error
	AddrDel(link netlink.Link, addr *netlink.Addr) error
}

var _ nlHandle = (*netlink.Handle)(nil)

// rtConn is the part of *netlinkx.Conn used for per-peer objects, in nlHandle's namespace.
type rtConn interface {
	Run(b *netlinkx.Batch, done func(tag int, err error, nhID uint32)) error
	Routes(fl netlinkx.RouteFilter, f func(r *netlinkx.Route)) error
	Neighs(family uint8, ifindex int, f func(n *netlinkx.Neigh)) error
	Nexthops(oif int, f func(nh *netlinkx.Nexthop)) error
	Subscribe() error
	Unsubscribe() error
	PortID() (uint32, error)
	Changes(f func(ch *netlinkx.Change)) (lost bool, err error)
	Feed() *netlinkx.Feed
}

var _ rtConn = (*netlinkx.Conn)(nil)

const dumpAttempts = 3

// maxReportedErrors caps the failures one reconcile returns in full; the rest are counted.
const maxReportedErrors = 16

// family is one address family's device and the scratch space its rounds reuse.
type family struct {
	v6      bool
	name    string       // device name
	local   netip.Addr   // our public address, the device's local address
	network netip.Prefix // the flannel network of this family
	nlFam   int          // unix.AF_INET or unix.AF_INET6
	mtu     int          // device MTU we maintain
	mac     hwAddr       // the advertised VTEP MAC (fixed once Prepare returned)
	index   int          // device ifindex, refreshed every round
	own     netip.Prefix // our lease's subnet (set by Start)

	want, act famState
	ops       ops
	under     lpm                       // underlay routes, for DirectRouting
	refused   map[netip.Prefix]*refusal // refused peers by subnet (refused.go)
	fails     []failure                 // an apply phase's refusals
	nh        bool                      // onlink routes use nexthop objects (off for good without kernel support)
}

func (f *family) label() string {
	if f.v6 {
		return "IPv6"
	}
	return "IPv4"
}

func randomMAC() (hwAddr, error) {
	var m hwAddr
	if _, err := rand.Read(m[:]); err != nil {
		return m, fmt.Errorf("random MAC: %w", err)
	}
	m[0] = (m[0] | 0x02) &^ 0x01
	return m, nil
}

// mismatch says why an existing device cannot be adopted as is, or "".
func (b *Backend) mismatch(f *family, vx *netlink.Vxlan) string {
	wantPort := b.vc.Port
	if wantPort == 0 {
		wantPort = kernelDefaultPort
	}
	local, _ := netlinkx.Addr(vx.SrcAddr)
	switch {
	case vx.VxlanId != b.vc.VNI:
		return fmt.Sprintf("VNI %d, want %d", vx.VxlanId, b.vc.VNI)
	case vx.Port != wantPort:
		return fmt.Sprintf("port %d, want %d", vx.Port, wantPort)
	case local != f.local:
		return fmt.Sprintf("local address %v, want %v", local, f.local)
	case vx.VtepDevIndex != b.ext.Iface.Index:
		return fmt.Sprintf("underlay link index %d, want %d", vx.VtepDevIndex, b.ext.Iface.Index)
	case vx.GBP != b.vc.GBP:
		return fmt.Sprintf("gbp %v, want %v", vx.GBP, b.vc.GBP)
	case vx.Learning != b.vc.Learning:
		return fmt.Sprintf("learning %v, want %v", vx.Learning, b.vc.Learning)
	case len(vx.Group) > 0 && !vx.Group.IsUnspecified():
		return fmt.Sprintf("remote/group %v set", vx.Group)
	case vx.FlowBased:
		return "external (flow based) mode"
	case vx.L2miss || vx.L3miss || vx.Proxy:
		return "l2miss/l3miss/proxy set"
	}
	return ""
}

// targetMTU is the configured MTU minus the family's overhead, clamped to the underlay's.
func (b *Backend) targetMTU(f *family) (int, error) {
	lower, err := b.h.LinkByIndex(b.ext.Iface.Index)
	if err != nil {
		return 0, fmt.Errorf("read external interface (index %d): %w", b.ext.Iface.Index, err)
	}
	want := b.vc.MTU - familyOverhead(f.v6)
	if lim := lower.Attrs().MTU - familyOverhead(f.v6); lim < want {
		klog.InfoS("vxlan device MTU limited by the external interface", "device", f.name,
			"configured", want, "limit", lim, "externalInterfaceMTU", lower.Attrs().MTU)
		want = max(lim, minDeviceMTU)
	}
	return want, nil
}

type devResult int

const (
	devAdopted  devResult = iota // existing device, nothing written
	devRepaired                  // existing device, MAC/MTU/up fixed in place
	devCreated                   // created (possibly after deleting an incompatible one)
)

// ensureDevice makes f's device exist, up, with our attributes, f.mtu and f.mac (zero: the
// existing device's, else fallback); an incompatible device is recreated with its MAC.
func (b *Backend) ensureDevice(f *family, fallback hwAddr) (devResult, netlink.Link, error) {
	l, err := b.h.LinkByName(f.name)
	if err != nil && !netlinkx.IsNotFound(err) {
		return devAdopted, nil, fmt.Errorf("look up %s: %w", f.name, err)
	}
	if err == nil {
		vx, ok := l.(*netlink.Vxlan)
		if !ok {
			return devAdopted, nil, fmt.Errorf("device %q exists but is of type %q, not vxlan; remove it or choose another VNI", f.name, l.Type())
		}
		devMAC, macOK := hwFrom(vx.HardwareAddr)
		if why := b.mismatch(f, vx); why != "" {
			if f.mac == (hwAddr{}) && macOK {
				f.mac = devMAC
			}
			klog.InfoS("vxlan device exists with incompatible configuration; recreating it", "device", f.name, "reason", why, "mac", f.mac)
			if err := b.h.LinkDel(vx); err != nil && !netlinkx.IsNotFound(err) {
				return devCreated, nil, fmt.Errorf("delete incompatible %s: %w", f.name, err)
			}
			l, err := b.createDevice(f, fallback)
			return devCreated, l, err
		}
		res := devAdopted
		if f.mac == (hwAddr{}) && macOK {
			f.mac = devMAC
		}
		if f.mac != devMAC {
			klog.InfoS("vxlan device has another MAC than advertised; restoring it", "device", f.name, "have", vx.HardwareAddr, "want", f.mac)
			if err := b.h.LinkSetHardwareAddr(vx, f.mac[:]); err != nil {
				return devRepaired, nil, fmt.Errorf("set MAC %s on %s: %w", f.mac, f.name, err)
			}
			res = devRepaired
		}
		if vx.MTU != f.mtu {
			if t, err := b.targetMTU(f); err == nil {
				f.mtu = t // the underlay MTU may have changed since
			}
		}
		if vx.MTU != f.mtu {
			if err := b.h.LinkSetMTU(vx, f.mtu); err != nil {
				return devRepaired, nil, fmt.Errorf("set MTU %d on %s: %w", f.mtu, f.name, err)
			}
			res = devRepaired
		}
		if vx.Flags&net.FlagUp == 0 {
			if err := b.h.LinkSetUp(vx); err != nil {
				return devRepaired, nil, fmt.Errorf("set %s up: %w", f.name, err)
			}
			res = devRepaired
		}
		f.index = vx.Index
		return res, vx, nil
	}
	l, err = b.createDevice(f, fallback)
	return devCreated, l, err
}

// createDevice creates f's device with f.mac (zero: fallback) and sets it up.
func (b *Backend) createDevice(f *family, fallback hwAddr) (netlink.Link, error) {
	if f.mac == (hwAddr{}) {
		f.mac = fallback
	}
	if f.mac == (hwAddr{}) {
		m, err := randomMAC()
		if err != nil {
			return nil, err
		}
		f.mac = m
	}
	la := netlink.NewLinkAttrs()
	la.Name = f.name
	la.MTU = f.mtu
	la.HardwareAddr = append(net.HardwareAddr(nil), f.mac[:]...)
	vx := &netlink.Vxlan{
		LinkAttrs:    la,
		VxlanId:      b.vc.VNI,
		VtepDevIndex: b.ext.Iface.Index,
		SrcAddr:      f.local.AsSlice(),
		Port:         b.vc.Port, // 0 is not sent: the kernel default applies
		Learning:     b.vc.Learning,
		GBP:          b.vc.GBP,
	}
	if err := b.h.LinkAdd(vx); err != nil {
		return nil, fmt.Errorf("create vxlan device %s (VNI %d, local %v): %w", f.name, b.vc.VNI, f.local, err)
	}
	l, err := b.h.LinkByName(f.name)
	if err != nil {
		return nil, fmt.Errorf("read back %s: %w", f.name, err)
	}
	if got, _ := hwFrom(l.Attrs().HardwareAddr); got != f.mac {
		// a udev MAC policy may have changed it; the advertised MAC must win
		if err := b.h.LinkSetHardwareAddr(l, f.mac[:]); err != nil {
			return nil, fmt.Errorf("%s's mac address wanted: %s, but got: %v (%w)", f.name, f.mac, l.Attrs().HardwareAddr, err)
		}
	}
	if err := b.h.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("set %s up: %w", f.name, err)
	}
	f.index = l.Attrs().Index
	klog.InfoS("Created vxlan device", "device", f.name, "index", f.index, "mac", f.mac, "mtu", f.mtu,
		"VNI", b.vc.VNI, "local", f.local)
	return l, nil
}

// disableRA writes accept_ra=0, best effort (IPv6 may be disabled).
func (b *Backend) disableRA(f *family) {
	p := "/proc/sys/net/ipv6/conf/" + f.name + "/accept_ra"
	if err := b.sysctl(p, "0"); err != nil {
		klog.V(2).InfoS("Could not disable router advertisements", "path", p, "err", err)
	}
}

// wantAddr is the device's one address in the network: the subnet's network address.
func (f *family) wantAddr() netip.Prefix {
	bits := 32
	if f.v6 {
		bits = 128
	}
	return netip.PrefixFrom(f.own.Addr(), bits)
}

// staleAddr: another address inside the network (IPv6 link-local excepted) goes.
func (f *family) staleAddr(p netip.Prefix) bool {
	return f.network.Contains(p.Addr()) && !(f.v6 && p.Addr().IsLinkLocalUnicast())
}

func (b *Backend) ensureAddr(f *family, l netlink.Link) (changes int, err error) {
	want := f.wantAddr()
	addrs, err := b.h.AddrList(l, f.nlFam)
	if err != nil {
		return 0, fmt.Errorf("list addresses of %s: %w", f.name, err)
	}
	found := false
	var errs []error
	for i := range addrs {
		a := &addrs[i]
		p, ok := netlinkx.Prefix(a.IPNet)
		if !ok {
			continue
		}
		if p == want {
			found = true
			continue
		}
		if !f.staleAddr(p) {
			continue
		}
		changes++
		klog.InfoS("Removing stale address from vxlan device", "device", f.name, "address", p)
		if err := b.h.AddrDel(l, a); err != nil && !netlinkx.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete address %s from %s: %w", p, f.name, err))
		}
	}
	if !found {
		changes++
		na := &netlink.Addr{IPNet: netlinkx.IPNet(want)}
		if f.v6 {
			na.Flags = unix.IFA_F_NODAD
		}
		if err := b.h.AddrAdd(l, na); err != nil && !netlinkx.IsExist(err) {
			errs = append(errs, fmt.Errorf("add address %s to %s: %w", want, f.name, err))
		}
	}
	return changes, errors.Join(errs...)
}

// sizeActual makes f's actual state for n peers at once (growing step by step leaves
// garbage), with nexthop maps only where nexthop objects are used.
func (f *family) sizeActual(n int) {
	f.act.size(n)
	if f.nh {
		f.act.sizeNexthops(n)
	}
}

// readActual fills f.act with what we may own, as the kernel filters it (DirectRouting:
// the whole main table, the rest into f.under).
func (b *Backend) readActual(f *family) error {
	act := f.act
	if f.nh {
		err := netlinkx.Dump(dumpAttempts, f.label()+" nexthops", func() error {
			act.resetNexthops()
			return b.c.Nexthops(f.index, func(n *netlinkx.Nexthop) {
				if int(n.Family) != f.nlFam || n.Oif != f.index {
					return
				}
				act.addNexthop(n.Gw, n.ID, n.Onlink() && !n.Other)
			})
		})
		if err != nil && netlinkx.IsNoNexthops(errors.Unwrap(err)) {
			klog.InfoS("The kernel has no nexthop objects; peer routes are plain routes", "device", f.name, "err", err)
			f.nh = false
			act.resetNexthops()
			err = nil
		}
		if err != nil {
			return err
		}
	}
	ext := b.ext.Iface.Index
	collect := b.vc.DirectRouting
	var oif int // the device the current dump is filtered on (0: none)
	seen := func(r *netlinkx.Route) {
		if r.Multipath {
			if collect {
				f.under.add(r.Dst.Masked(), false, int(r.Priority))
			}
			return
		}
		dst := r.Dst.Masked()
		if !dst.IsValid() {
			return
		}
		link := r.Oif
		if link == 0 && r.NhID != 0 {
			link = oif // nexthop_compat_mode off: the filter matched the nexthop's device
		}
		owned := false
		if r.Type == unix.RTN_UNICAST && r.Protocol != unix.RTPROT_KERNEL {
			switch link {
			case f.index:
				owned = true
			case ext:
				owned = f.network.Contains(dst.Addr()) && dst.Bits() >= f.network.Bits()
			}
		}
		if owned {
			act.addRoute(f.fromKernelRoute(r, dst, link))
		} else if collect && link != f.index {
			direct := r.Type == unix.RTN_UNICAST && !r.Gw.IsValid() && !r.Via && r.NhID == 0 && link == ext
			f.under.add(dst, direct, int(r.Priority))
		}
	}
	err := netlinkx.Dump(dumpAttempts, f.label()+" routes", func() error {
		act.resetRoutes()
		f.under.reset()
		fl := netlinkx.RouteFilter{Family: uint8(f.nlFam), Table: unix.RT_TABLE_MAIN}
		if collect {
			oif = 0
			return b.c.Routes(fl, seen)
		}
		for _, oif = range []int{f.index, ext} {
			fl.Oif = oif
			if err := b.c.Routes(fl, seen); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	err = netlinkx.Dump(dumpAttempts, f.label()+" neighbours", func() error {
		act.resetNeighs()
		return b.c.Neighs(uint8(f.nlFam), f.index, func(n *netlinkx.Neigh) {
			// Multicast entries are the kernel's own (NUD_NOARP, e.g. ff02::16 for MLD).
			if n.Ifindex != f.index || n.State&staticNUD == 0 || !n.IP.IsValid() || n.IP.IsMulticast() {
				return
			}
			// A foreign lladdr or a static non-permanent entry reads as zero: replaced or removed.
			var mac hwAddr
			if n.HasMAC && n.State&unix.NUD_PERMANENT != 0 {
				mac = n.MAC
			}
			act.setNeigh(n.IP.Unmap(), mac)
		})
	})
	if err != nil {
		return err
	}
	return netlinkx.Dump(dumpAttempts, f.label()+" fdb", func() error {
		act.resetFDB()
		return b.c.Neighs(unix.AF_BRIDGE, f.index, func(n *netlinkx.Neigh) {
			if n.Ifindex != f.index || n.State&staticNUD == 0 || !n.HasMAC || !n.IP.IsValid() {
				return
			}
			act.addFDB(n.MAC, n.IP)
		})
	})
}

// staticNUD: states no protocol machine manages; on our device ours to keep or remove.
const staticNUD = unix.NUD_PERMANENT | unix.NUD_NOARP

// fromKernelRoute converts a kernel route on link. Using the nexthop object kept for its
// gateway reads as ViaNH; any other nexthop object marks it Extra, to be replaced.
func (f *family) fromKernelRoute(r *netlinkx.Route, dst netip.Prefix, link int) route {
	rt := route{
		Dst:    dst,
		Gw:     r.Gw.Unmap(),
		Link:   link,
		Onlink: r.Onlink(),
		Prio:   int(r.Priority),
		NhID:   r.NhID,
		Scope:  r.Scope,
		Tos:    int(r.Tos),
		Extra:  r.Extra,
	}
	if r.NhID != 0 {
		if gw, ok := f.act.nexthopGw(r.NhID); ok {
			rt.Gw, rt.Link, rt.Onlink, rt.ViaNH = gw, f.index, true, true
		} else {
			rt.Extra = true
		}
	}
	return rt
}

// toKernelRoute addresses the route by nexthop id when nhID is set, else gateway+device.
func toKernelRoute(r route, nhID uint32) netlinkx.Route {
	kr := netlinkx.Route{Dst: r.Dst, Priority: uint32(r.Prio), Tos: uint8(r.Tos), Table: unix.RT_TABLE_MAIN}
	if nhID != 0 {
		kr.NhID = nhID
		return kr
	}
	kr.Gw, kr.Oif = r.Gw, r.Link
	if r.Onlink {
		kr.Flags = unix.RTNH_F_ONLINK
	}
	return kr
}

type errList struct {
	errs []error
	more int
}

func (e *errList) add(err error) {
	if len(e.errs) < maxReportedErrors {
		e.errs = append(e.errs, err)
		return
	}
	e.more++
}

func (e *errList) err() error {
	if e.more > 0 {
		return errors.Join(append(e.errs, fmt.Errorf("and %d more errors", e.more))...)
	}
	return errors.Join(e.errs...)
}

// Request kinds, in the high bits of a batch tag (the low bits index the op list).
const (
	tagDelRoute = iota << 24
	tagDelFDB
	tagDelNeigh
	tagSetNeigh
	tagSetFDB
	tagAddNH
	tagSetRoute
	tagDelNH
	tagDelRefused   // a route of ours to a refused peer (index into ops.delRefused)
	tagDelRefusedNH // the nexthop object only a refused peer's route used
	tagKindMask     = 0xff << 24
)

// apply carries out f.ops in three pipelined batches past failures: deletes and the
// objects routes need; routes whose objects succeeded; routes and nexthops of peers refused
// meanwhile, and nexthop deletes. It reports whether the kernel refused a peer.
func (b *Backend) apply(ctx context.Context, f *family, c *Counts, el *errList) (refused bool) {
	o := &f.ops
	o.delRefused = o.delRefused[:0]
	bt := &b.batch
	var failedGw map[netip.Addr]bool
	var failedMAC map[hwAddr]bool
	fail := func(m *map[netip.Addr]bool, a netip.Addr) {
		if *m == nil {
			*m = make(map[netip.Addr]bool)
		}
		(*m)[a] = true
	}
	f.fails = f.fails[:0]
	refuse := func(err error, fl failure) bool {
		fl.reason = backend.RefusalReason(err)
		if fl.reason == "" {
			return false
		}
		f.fails = append(f.fails, fl)
		return true
	}
	var newlyRefused []netip.Prefix
	settle := func() {
		newlyRefused = append(newlyRefused, f.attribute(f.fails)...)
		refused = refused || len(f.fails) > 0
		f.fails = f.fails[:0]
	}
	run := func(phase string) bool {
		if bt.Len() == 0 {
			return true
		}
		err := b.c.Run(bt, func(tag int, err error, id uint32) {
			i := tag &^ tagKindMask
			switch tag & tagKindMask {
			case tagDelRoute:
				r := o.delRoutes[i]
				if err != nil && !netlinkx.IsNotFound(err) {
					el.add(fmt.Errorf("delete route %s via %v dev %d: %w", r.Dst, r.Gw, r.Link, err))
					return
				}
				c.RoutesRemoved++
			case tagDelFDB:
				e := o.delFDB[i]
				if err != nil && !netlinkx.IsNotFound(err) {
					el.add(fmt.Errorf("delete fdb %s dst %v on %s: %w", e.MAC, e.Dst, f.name, err))
					return
				}
				c.FDBRemoved++
				if err == nil {
					b.kc.fdbEchoes++
				}
			case tagDelNeigh:
				e := o.delNeigh[i]
				if err != nil && !netlinkx.IsNotFound(err) {
					el.add(fmt.Errorf("delete neighbour %v on %s: %w", e.IP, f.name, err))
					return
				}
				c.NeighRemoved++
			case tagSetNeigh:
				e := o.setNeigh[i]
				if err != nil {
					fail(&failedGw, e.IP)
					what := fmt.Sprintf("%v lladdr %s dev %s", e.IP, e.MAC, f.name)
					if !refuse(err, failure{part: observe.Neigh, ip: e.IP, text: f.refusalText(observe.Neigh, what, err)}) {
						el.add(fmt.Errorf("set neighbour %s: %w", what, err))
					}
					return
				}
				c.NeighAdded++
			case tagSetFDB:
				e := o.setFDB[i]
				if err != nil {
					if failedMAC == nil {
						failedMAC = make(map[hwAddr]bool)
					}
					failedMAC[e.MAC] = true
					what := fmt.Sprintf("%s dst %v dev %s", e.MAC, e.Dst, f.name)
					if !refuse(err, failure{part: observe.FDB, mac: e.MAC, text: f.refusalText(observe.FDB, what, err)}) {
						el.add(fmt.Errorf("set fdb %s: %w", what, err))
					}
					return
				}
				c.FDBAdded++
				b.kc.fdbEchoes++
			case tagAddNH:
				gw := o.addNH[i]
				if err != nil {
					what := fmt.Sprintf("via %v dev %s onlink", gw, f.name)
					if !refuse(err, failure{part: observe.Nexthop, ip: gw, text: f.refusalText(observe.Nexthop, what, err)}) {
						el.add(fmt.Errorf("add nexthop %s: %w", what, err))
					}
					return
				}
				f.act.setNH(gw, id)
				c.NexthopsAdded++
			case tagSetRoute:
				r := o.setRoute(i)
				if err != nil {
					what := fmt.Sprintf("%s via %v dev %s", r.Dst, r.Gw, b.linkName(f, r.Link))
					if !refuse(err, failure{part: observe.Route, dst: r.Dst, text: f.refusalText(observe.Route, what, err)}) {
						el.add(fmt.Errorf("replace route %s: %w", what, err))
					}
					return
				}
				c.RoutesAdded++
			case tagDelRefused:
				r := o.delRefused[i]
				switch {
				case err == nil:
					c.RoutesRemoved++
				case !netlinkx.IsNotFound(err):
					el.add(fmt.Errorf("delete route %s via %v dev %d of a refused peer: %w", r.Dst, r.Gw, r.Link, err))
				}
			case tagDelRefusedNH:
				switch {
				case err == nil:
					c.NexthopsRemoved++
				case !netlinkx.IsNotFound(err):
					el.add(fmt.Errorf("delete nexthop id %d of a refused peer on %s: %w", o.delRefusedNH[i], f.name, err))
				}
			case tagDelNH:
				if err != nil && !netlinkx.IsNotFound(err) {
					el.add(fmt.Errorf("delete nexthop id %d on %s: %w", o.delNH[i], f.name, err))
					return
				}
				c.NexthopsRemoved++
			}
		})
		bt.Reset()
		b.drainChanges() // keep the echo of big rounds from overflowing the socket
		if err != nil {
			el.add(fmt.Errorf("%s on %s: %w", phase, f.name, err))
			return false
		}
		if err := ctx.Err(); err != nil {
			el.add(err)
			return false
		}
		return true
	}

	// Reading the echo of a very large round costs more than the dumps it saves.
	if b.kc.on && o.len() > bigRound {
		if err := b.c.Unsubscribe(); err != nil {
			klog.V(2).InfoS("Leaving the kernel change groups failed", "err", err)
		}
		defer func() {
			if err := b.c.Subscribe(); err != nil {
				klog.ErrorS(err, "Cannot subscribe to kernel changes again; every reconcile reads the kernel in full")
				b.kc.on = false
			}
			b.kc.dirty = true
		}()
	}

	ok := true
	full := func(phase string) bool {
		if bt.Len() >= applyChunk {
			ok = run(phase)
		}
		return !ok
	}
	const p1 = "delete and set neighbours, fdb, nexthops"
	bt.Reset()
	for i, r := range o.delRoutes {
		bt.RouteDel(tagDelRoute|i, toKernelRoute(r, r.NhID))
		if full(p1) {
			return
		}
	}
	for i, e := range o.delFDB {
		bt.FDBDel(tagDelFDB|i, f.index, e.MAC, e.Dst)
		if full(p1) {
			return
		}
	}
	for i, e := range o.delNeigh {
		bt.NeighDel(tagDelNeigh|i, f.index, e.IP)
		if full(p1) {
			return
		}
	}
	for i, e := range o.setNeigh {
		bt.NeighSet(tagSetNeigh|i, f.index, e.IP, e.MAC)
		if full(p1) {
			return
		}
	}
	for i, e := range o.setFDB {
		bt.FDBSet(tagSetFDB|i, f.index, e.MAC, e.Dst)
		if full(p1) {
			return
		}
	}
	for i, gw := range o.addNH {
		bt.NexthopAdd(tagAddNH|i, f.index, gw, true)
		if full(p1) {
			return
		}
	}
	ok = run(p1)
	settle()
	if !ok {
		return
	}
	const p2 = "set routes"
	for i := range o.setRoutes {
		r := o.setRoute(i)
		if f.refused[r.Dst] != nil {
			continue // refused in this round; reported
		}
		if r.Onlink && (failedGw[r.Gw] || (failedMAC != nil && failedMAC[f.wantNeigh(r.Gw)])) {
			continue // its neighbour or FDB entry is missing; already reported
		}
		var id uint32
		if r.ViaNH {
			if id, _ = f.act.getNH(r.Gw); id == 0 {
				continue // its nexthop object is missing; already reported
			}
		}
		bt.RouteReplace(tagSetRoute|i, toKernelRoute(r, id))
		if full(p2) {
			return
		}
	}
	ok = run(p2)
	settle()
	if !ok {
		return
	}
	const p3 = "delete routes of refused peers and nexthops"
	for _, dst := range newlyRefused {
		if r, ok := f.act.getRoute(dst); ok {
			o.delRefused = append(o.delRefused, r)
		}
	}
	for i, r := range o.delRefused {
		bt.RouteDel(tagDelRefused|i, toKernelRoute(r, r.NhID))
		if full(p3) {
			return
		}
	}
	o.delRefusedNH = f.unusedNexthops(newlyRefused, o.delRefusedNH[:0])
	for i, id := range o.delRefusedNH {
		bt.NexthopDel(tagDelRefusedNH|i, id)
		if full(p3) {
			return
		}
	}
	for i, id := range o.delNH {
		bt.NexthopDel(tagDelNH|i, id)
		if full(p3) {
			return
		}
	}
	run(p3)
	return
}

func (b *Backend) linkName(f *family, idx int) string {
	if idx == b.ext.Iface.Index {
		return b.ext.Iface.Name
	}
	return f.name
}

func (f *family) wantNeigh(ip netip.Addr) hwAddr {
	m, _ := f.want.getNeigh(ip)
	return m
}

// bigRound: above this many changes a round does not follow its own echo.
const bigRound = 40000

const applyChunk = 1024

// lpm tells from a main-table dump whether an address is on-link on the external interface.
type lpm struct {
	byLen [129]map[netip.Prefix]lpmEntry
	lens  []int // prefix lengths present, longest first (built lazily)
	dirty bool
}

type lpmEntry struct {
	direct bool
	prio   int
}

func (t *lpm) reset() {
	for i := range t.byLen {
		if t.byLen[i] != nil {
			clear(t.byLen[i])
		}
	}
	t.lens = t.lens[:0]
	t.dirty = true
}

func (t *lpm) add(p netip.Prefix, direct bool, prio int) {
	if !p.IsValid() {
		return
	}
	m := t.byLen[p.Bits()]
	if m == nil {
		m = make(map[netip.Prefix]lpmEntry)
		t.byLen[p.Bits()] = m
	}
	if e, ok := m[p]; ok && e.prio <= prio {
		return // the kernel prefers the lower metric
	}
	m[p] = lpmEntry{direct, prio}
	t.dirty = true
}

func (t *lpm) isDirect(a netip.Addr) bool {
	if t.dirty {
		t.lens = t.lens[:0]
		for l := len(t.byLen) - 1; l >= 0; l-- {
			if len(t.byLen[l]) > 0 {
				t.lens = append(t.lens, l)
			}
		}
		t.dirty = false
	}
	for _, l := range t.lens {
		if l > a.BitLen() {
			continue
		}
		p, err := a.Prefix(l)
		if err != nil {
			continue
		}
		if e, ok := t.byLen[l][p]; ok {
			return e.direct
		}
	}
	return false
}
