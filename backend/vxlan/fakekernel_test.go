package vxlan

import (
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannel-go/flannel/pkg/netlinkx"
)

// fakeLinks is nlHandle in memory: the external interface (index 2) and our links.
type fakeLinks struct {
	ext   *netlink.Device
	links map[string]*netlink.Vxlan
	addrs map[string][]netlink.Addr
	next  int
}

var _ nlHandle = (*fakeLinks)(nil)

func newFakeLinks() *fakeLinks {
	ext := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: 2, Name: "eth0", MTU: 1500, Flags: net.FlagUp}}
	return &fakeLinks{ext: ext, links: map[string]*netlink.Vxlan{}, addrs: map[string][]netlink.Addr{}, next: 10}
}

func (k *fakeLinks) LinkByName(name string) (netlink.Link, error) {
	if l, ok := k.links[name]; ok {
		c := *l
		return &c, nil
	}
	return nil, unix.ENODEV
}

func (k *fakeLinks) LinkByIndex(i int) (netlink.Link, error) {
	if i == k.ext.Index {
		return k.ext, nil
	}
	for _, l := range k.links {
		if l.Index == i {
			c := *l
			return &c, nil
		}
	}
	return nil, unix.ENODEV
}

func (k *fakeLinks) LinkAdd(l netlink.Link) error {
	vx := *l.(*netlink.Vxlan)
	vx.Index = k.next
	k.next++
	if vx.Port == 0 {
		vx.Port = kernelDefaultPort
	}
	k.links[vx.Name] = &vx
	return nil
}

func (k *fakeLinks) stored(l netlink.Link) *netlink.Vxlan { return k.links[l.Attrs().Name] }

func (k *fakeLinks) LinkDel(l netlink.Link) error { delete(k.links, l.Attrs().Name); return nil }
func (k *fakeLinks) LinkSetUp(l netlink.Link) error {
	k.stored(l).Flags |= net.FlagUp
	return nil
}
func (k *fakeLinks) LinkSetMTU(l netlink.Link, mtu int) error { k.stored(l).MTU = mtu; return nil }
func (k *fakeLinks) LinkSetHardwareAddr(l netlink.Link, hw net.HardwareAddr) error {
	k.stored(l).HardwareAddr = hw
	return nil
}
func (k *fakeLinks) AddrList(l netlink.Link, _ int) ([]netlink.Addr, error) {
	return k.addrs[l.Attrs().Name], nil
}
func (k *fakeLinks) AddrAdd(l netlink.Link, a *netlink.Addr) error {
	k.addrs[l.Attrs().Name] = append(k.addrs[l.Attrs().Name], *a)
	return nil
}
func (k *fakeLinks) AddrDel(l netlink.Link, a *netlink.Addr) error {
	k.addrs[l.Attrs().Name] = slices.DeleteFunc(k.addrs[l.Attrs().Name], func(b netlink.Addr) bool { return b.Equal(*a) })
	return nil
}

// fakeRT is rtConn in memory, decoding batches as the kernel would and refusing what
// refuse says. Its subscription reports nothing: only the backend changes it.
type fakeRT struct {
	neigh  map[netip.Addr]hwAddr // on the vxlan device
	fdb    map[hwAddr]netip.Addr
	nh     map[uint32]netlinkx.Nexthop
	routes map[netip.Prefix]netlinkx.Route
	nextID uint32
	dev    int // the vxlan device's index

	// refuse answers each parsed request with the kernel's error, or nil.
	refuse func(typ uint16, n *netlinkx.Neigh, nh *netlinkx.Nexthop, r *netlinkx.Route) error
	// sockErr, when set, fails the socket: every request's outcome is unknown.
	sockErr error
	// log has one line per request the backend sent, e.g. "set fdb 0e:..:03 dst 192.0.2.3".
	log []string
}

var _ rtConn = (*fakeRT)(nil)

func newFakeRT() *fakeRT {
	return &fakeRT{neigh: map[netip.Addr]hwAddr{}, fdb: map[hwAddr]netip.Addr{}, nh: map[uint32]netlinkx.Nexthop{},
		routes: map[netip.Prefix]netlinkx.Route{}, nextID: 100, dev: 10}
}

func (k *fakeRT) Run(b *netlinkx.Batch, done func(tag int, err error, nhID uint32)) error {
	if k.sockErr != nil {
		b.Each(func(tag int, _ uint16, _ []byte) { done(tag, &netlinkx.SocketError{Err: k.sockErr}, 0) })
		return k.sockErr
	}
	b.Each(func(tag int, typ uint16, body []byte) {
		id, err := k.do(typ, body)
		done(tag, err, id)
	})
	return nil
}

func (k *fakeRT) do(typ uint16, body []byte) (uint32, error) {
	refuse := func(n *netlinkx.Neigh, nh *netlinkx.Nexthop, r *netlinkx.Route) error {
		if k.refuse == nil {
			return nil
		}
		return k.refuse(typ, n, nh, r)
	}
	switch typ {
	case unix.RTM_NEWNEIGH, unix.RTM_DELNEIGH:
		var n netlinkx.Neigh
		if err := netlinkx.ParseNeigh(body, &n); err != nil {
			return 0, err
		}
		fdb := n.Family == unix.AF_BRIDGE
		switch {
		case typ == unix.RTM_NEWNEIGH && fdb:
			k.log = append(k.log, fmt.Sprintf("set fdb %s dst %s", hwAddr(n.MAC), n.IP))
			if err := refuse(&n, nil, nil); err != nil {
				return 0, err
			}
			k.fdb[n.MAC] = n.IP
		case typ == unix.RTM_NEWNEIGH:
			k.log = append(k.log, fmt.Sprintf("set neigh %s lladdr %s", n.IP, hwAddr(n.MAC)))
			if err := refuse(&n, nil, nil); err != nil {
				return 0, err
			}
			k.neigh[n.IP] = n.MAC
		case fdb:
			k.log = append(k.log, fmt.Sprintf("del fdb %s", hwAddr(n.MAC)))
			if _, ok := k.fdb[n.MAC]; !ok {
				return 0, unix.ENOENT
			}
			delete(k.fdb, n.MAC)
		default:
			k.log = append(k.log, fmt.Sprintf("del neigh %s", n.IP))
			if _, ok := k.neigh[n.IP]; !ok {
				return 0, unix.ENOENT
			}
			delete(k.neigh, n.IP)
		}
	case unix.RTM_NEWNEXTHOP:
		var nh netlinkx.Nexthop
		if err := netlinkx.ParseNexthop(body, &nh); err != nil {
			return 0, err
		}
		k.log = append(k.log, fmt.Sprintf("add nexthop via %s", nh.Gw))
		if err := refuse(nil, &nh, nil); err != nil {
			return 0, err
		}
		k.nextID++
		nh.ID = k.nextID
		k.nh[nh.ID] = nh
		return nh.ID, nil
	case unix.RTM_DELNEXTHOP:
		var nh netlinkx.Nexthop
		if err := netlinkx.ParseNexthop(body, &nh); err != nil {
			return 0, err
		}
		old, ok := k.nh[nh.ID]
		k.log = append(k.log, fmt.Sprintf("del nexthop via %s", old.Gw))
		if !ok {
			return 0, unix.ENOENT
		}
		delete(k.nh, nh.ID)
		for dst, r := range k.routes {
			if r.NhID == nh.ID {
				delete(k.routes, dst)
			}
		}
	case unix.RTM_NEWROUTE:
		var r netlinkx.Route
		if err := netlinkx.ParseRoute(body, &r); err != nil {
			return 0, err
		}
		k.log = append(k.log, fmt.Sprintf("set route %s", r.Dst))
		if err := refuse(nil, nil, &r); err != nil {
			return 0, err
		}
		if r.NhID != 0 {
			nh, ok := k.nh[r.NhID]
			if !ok {
				return 0, unix.EINVAL
			}
			r.Gw, r.Oif = nh.Gw, nh.Oif // as the kernel's nexthop_compat_mode shows it
		}
		r.Table = unix.RT_TABLE_MAIN
		k.routes[r.Dst] = r
	case unix.RTM_DELROUTE:
		var r netlinkx.Route
		if err := netlinkx.ParseRoute(body, &r); err != nil {
			return 0, err
		}
		k.log = append(k.log, fmt.Sprintf("del route %s", r.Dst))
		if _, ok := k.routes[r.Dst]; !ok {
			return 0, unix.ESRCH
		}
		delete(k.routes, r.Dst)
	default:
		return 0, unix.EOPNOTSUPP
	}
	return 0, nil
}

func (k *fakeRT) Routes(fl netlinkx.RouteFilter, f func(r *netlinkx.Route)) error {
	for _, r := range k.routes {
		if r.Family == fl.Family && (fl.Oif == 0 || r.Oif == fl.Oif) {
			f(&r)
		}
	}
	return nil
}

func (k *fakeRT) Neighs(fam uint8, ifindex int, f func(n *netlinkx.Neigh)) error {
	if ifindex != k.dev {
		return nil
	}
	if fam == unix.AF_BRIDGE {
		for mac, dst := range k.fdb {
			f(&netlinkx.Neigh{Family: fam, Ifindex: ifindex, State: unix.NUD_PERMANENT, Flags: unix.NTF_SELF, IP: dst, MAC: mac, HasMAC: true})
		}
		return nil
	}
	for ip, mac := range k.neigh {
		if ip.Is4() == (fam == unix.AF_INET) {
			f(&netlinkx.Neigh{Family: fam, Ifindex: ifindex, State: unix.NUD_PERMANENT, IP: ip, MAC: mac, HasMAC: true})
		}
	}
	return nil
}

func (k *fakeRT) Nexthops(oif int, f func(nh *netlinkx.Nexthop)) error {
	for _, nh := range k.nh {
		if oif == 0 || nh.Oif == oif {
			f(&nh)
		}
	}
	return nil
}

func (k *fakeRT) Subscribe() error                                { return nil }
func (k *fakeRT) Unsubscribe() error                              { return nil }
func (k *fakeRT) PortID() (uint32, error)                         { return 77, nil }
func (k *fakeRT) Changes(func(ch *netlinkx.Change)) (bool, error) { return false, nil }
func (k *fakeRT) Feed() *netlinkx.Feed                            { return nil }

// peerState: "n" neighbour, "f" FDB entry, "h" nexthop, "r" route held, "-" each missing.
func (k *fakeRT) peerState(dst netip.Prefix, mac hwAddr, pub netip.Addr) string {
	gw := dst.Addr()
	s := []byte("----")
	if m, ok := k.neigh[gw]; ok && m == mac {
		s[0] = 'n'
	}
	if d, ok := k.fdb[mac]; ok && d == pub {
		s[1] = 'f'
	}
	for _, nh := range k.nh {
		if nh.Gw == gw {
			s[2] = 'h'
		}
	}
	if r, ok := k.routes[dst]; ok && r.Gw == gw {
		s[3] = 'r'
	}
	return string(s)
}
