package kernelwatch

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/flannel-go/flannel/pkg/netlinkx"
)

// Filter names the kernel objects a backend owns or depends on; others are ignored.
type Filter struct {
	// Devices are owned links: each with its addresses, main routes, nexthops, neighbours, FDB.
	Devices []string
	// Links are further links whose own state matters (going down flushes routes unannounced).
	Links []string
	// Networks select main-table routes by destination, whatever their device.
	Networks []netip.Prefix
	// Feed, when set, is the backend's own subscription, which Run shares.
	Feed *netlinkx.Feed
}

// Kind is the type of a kernel object.
type Kind uint8

const (
	KindLink Kind = iota + 1
	KindAddr
	KindRoute
	KindNeigh
	KindFDB
	KindNexthop
)

// Object identifies a kernel object as far as a notification says; comparable, printable.
type Object struct {
	Kind   Kind
	Device string       // link name (links; objects on a device)
	Prefix netip.Prefix // route destination; address with its prefix length
	IP     netip.Addr   // neighbour address; FDB remote
	MAC    [6]byte      // neighbour/FDB link-layer address
	ID     uint32       // nexthop id
}

func (o Object) String() string {
	var b strings.Builder
	switch o.Kind {
	case KindLink:
		b.WriteString("link " + o.Device)
		return b.String()
	case KindAddr:
		fmt.Fprintf(&b, "address %s", o.Prefix)
	case KindRoute:
		fmt.Fprintf(&b, "route %s", o.Prefix)
	case KindNeigh:
		fmt.Fprintf(&b, "neighbour %s lladdr %s", o.IP, net.HardwareAddr(o.MAC[:]))
	case KindFDB:
		fmt.Fprintf(&b, "fdb %s dst %s", net.HardwareAddr(o.MAC[:]), o.IP)
	case KindNexthop:
		fmt.Fprintf(&b, "nexthop id %d", o.ID)
	default:
		return "unknown object"
	}
	if o.Device != "" {
		b.WriteString(" dev " + o.Device)
	}
	return b.String()
}

// matcher decides which notifications concern a Filter, tracking the watched links' ifindexes.
type matcher struct {
	devices  map[string]bool // name -> true for owned devices, false for Links
	networks []netip.Prefix
	index    map[int]string // ifindex -> name, for the watched links present now
}

func newMatcher(f Filter) *matcher {
	m := &matcher{devices: make(map[string]bool), index: make(map[int]string)}
	for _, n := range f.Links {
		m.devices[n] = false
	}
	for _, n := range f.Devices {
		m.devices[n] = true
	}
	for _, p := range f.Networks {
		if p.IsValid() {
			m.networks = append(m.networks, p.Masked())
		}
	}
	return m
}

func (m *matcher) setLinks(links map[int]string) {
	clear(m.index)
	for i, n := range links {
		if _, ok := m.devices[n]; ok {
			m.index[i] = n
		}
	}
}

// owned returns the name of the owned device with that index, or "".
func (m *matcher) owned(ifindex int) string {
	n, ok := m.index[ifindex]
	if !ok || !m.devices[n] {
		return ""
	}
	return n
}

func (m *matcher) inNetworks(p netip.Prefix) bool {
	for _, n := range m.networks {
		if p.Addr().BitLen() == n.Addr().BitLen() && p.Bits() >= n.Bits() && n.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// match reports the watched object a notification concerns; malformed or unrelated: !ok.
func (m *matcher) match(typ uint16, data []byte) (Object, bool) {
	switch typ {
	case unix.RTM_NEWLINK, unix.RTM_DELLINK:
		return m.link(typ == unix.RTM_DELLINK, data)
	case unix.RTM_NEWADDR, unix.RTM_DELADDR:
		return m.addr(data)
	case unix.RTM_NEWROUTE, unix.RTM_DELROUTE:
		return m.route(data)
	case unix.RTM_NEWNEIGH, unix.RTM_DELNEIGH:
		return m.neigh(data)
	case unix.RTM_NEWNEXTHOP, unix.RTM_DELNEXTHOP:
		return m.nexthop(data)
	}
	return Object{}, false
}

func (m *matcher) link(del bool, data []byte) (Object, bool) {
	if len(data) < unix.SizeofIfInfomsg {
		return Object{}, false
	}
	idx := int(int32(binary.NativeEndian.Uint32(data[4:8])))
	var name string
	_ = netlinkx.Attrs(data[unix.SizeofIfInfomsg:], func(t uint16, v []byte) {
		if t == unix.IFLA_IFNAME {
			name = unix.ByteSliceToString(v)
		}
	})
	old, known := m.index[idx]
	_, watched := m.devices[name]
	switch {
	case del:
		delete(m.index, idx)
	case watched:
		m.index[idx] = name
	case known:
		delete(m.index, idx) // renamed away from a watched name
	}
	if known && old != name && name != "" {
		return Object{Kind: KindLink, Device: old}, true
	}
	if watched {
		return Object{Kind: KindLink, Device: name}, true
	}
	if known {
		return Object{Kind: KindLink, Device: old}, true
	}
	return Object{}, false
}

func (m *matcher) addr(data []byte) (Object, bool) {
	if len(data) < unix.SizeofIfAddrmsg {
		return Object{}, false
	}
	dev := m.owned(int(binary.NativeEndian.Uint32(data[4:8])))
	if dev == "" {
		return Object{}, false
	}
	bits := int(data[1])
	var a netip.Addr
	_ = netlinkx.Attrs(data[unix.SizeofIfAddrmsg:], func(t uint16, v []byte) {
		if t == unix.IFA_LOCAL || (t == unix.IFA_ADDRESS && !a.IsValid()) {
			if x, ok := netip.AddrFromSlice(v); ok {
				a = x
			}
		}
	})
	o := Object{Kind: KindAddr, Device: dev}
	if a.IsValid() {
		if p, err := a.Prefix(bits); err == nil {
			o.Prefix = netip.PrefixFrom(a, p.Bits())
		}
	}
	return o, true
}

func (m *matcher) route(data []byte) (Object, bool) {
	if len(data) < unix.SizeofRtMsg {
		return Object{}, false
	}
	fam, dstLen, table := data[0], int(data[1]), uint32(data[4])
	var dst []byte
	var oifs []int
	_ = netlinkx.Attrs(data[unix.SizeofRtMsg:], func(t uint16, v []byte) {
		switch t {
		case unix.RTA_DST:
			dst = v
		case unix.RTA_TABLE:
			if len(v) >= 4 {
				table = binary.NativeEndian.Uint32(v)
			}
		case unix.RTA_OIF:
			if len(v) >= 4 {
				oifs = append(oifs, int(binary.NativeEndian.Uint32(v)))
			}
		case unix.RTA_MULTIPATH:
			// struct rtnexthop { u16 len; u8 flags; u8 hops; s32 ifindex; } + attributes
			for len(v) >= unix.SizeofRtNexthop {
				l := int(binary.NativeEndian.Uint16(v[0:2]))
				oifs = append(oifs, int(int32(binary.NativeEndian.Uint32(v[4:8]))))
				if l < unix.SizeofRtNexthop || align(l) >= len(v) {
					break
				}
				v = v[align(l):]
			}
		}
	})
	if table != unix.RT_TABLE_MAIN {
		return Object{}, false
	}
	var p netip.Prefix
	switch fam {
	case unix.AF_INET:
		p = prefixOf(dst, 4, dstLen)
	case unix.AF_INET6:
		p = prefixOf(dst, 16, dstLen)
	default:
		return Object{}, false
	}
	if !p.IsValid() {
		return Object{}, false
	}
	o := Object{Kind: KindRoute, Prefix: p}
	for _, i := range oifs {
		if dev := m.owned(i); dev != "" {
			o.Device = dev
			return o, true
		}
	}
	return o, m.inNetworks(p)
}

// prefixOf builds a destination from RTA_DST (absent: default route); zero if malformed.
func prefixOf(b []byte, size, bits int) netip.Prefix {
	var a netip.Addr
	switch {
	case len(b) == 0 && size == 4:
		a = netip.IPv4Unspecified()
	case len(b) == 0:
		a = netip.IPv6Unspecified()
	case len(b) == size:
		a, _ = netip.AddrFromSlice(b)
	default:
		return netip.Prefix{}
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return netip.Prefix{}
	}
	return p
}

func (m *matcher) neigh(data []byte) (Object, bool) {
	var n netlinkx.Neigh
	if len(data) < unix.SizeofNdMsg {
		return Object{}, false
	}
	_ = netlinkx.ParseNeigh(data, &n) // a malformed attribute: what came before it
	dev := m.owned(n.Ifindex)
	if dev == "" {
		return Object{}, false
	}
	o := Object{Kind: KindNeigh, Device: dev, IP: n.IP.Unmap()}
	if n.Family == unix.AF_BRIDGE {
		o.Kind = KindFDB
	}
	if n.HasMAC {
		o.MAC = n.MAC
	}
	if o.Kind == KindNeigh && o.IP.IsMulticast() {
		// the kernel's NOARP multicast entries (IPv6 ND): never a backend's
		return Object{}, false
	}
	return o, true
}

func (m *matcher) nexthop(data []byte) (Object, bool) {
	var nh netlinkx.Nexthop
	if len(data) < unix.SizeofNhmsg {
		return Object{}, false
	}
	_ = netlinkx.ParseNexthop(data, &nh) // a malformed attribute: what came before it
	o := Object{Kind: KindNexthop, ID: nh.ID, Device: m.owned(nh.Oif)}
	return o, o.Device != ""
}

func align(l int) int { return (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }
