package netlinkx

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Attribute and flag numbers of the kernel's uapi that golang.org/x/sys/unix lacks.
const (
	rtaNhID = 30  // RTA_NH_ID: the route uses nexthop object <id>
	nhaFDB  = 0xb // NHA_FDB: a nexthop for the bridge FDB, not for routes
)

// native is the byte order of netlink headers and host-order attributes.
var native = binary.NativeEndian

// Route is a route as far as backends recognise, compare and delete their own.
type Route struct {
	Family   uint8
	Dst      netip.Prefix // zero prefix of the family for a default route
	Gw       netip.Addr   // RTA_GATEWAY (also reported for nexthop-object routes in compat mode)
	Oif      int          // output interface index (0 when absent)
	Priority uint32       // metric
	Table    uint32
	Protocol uint8
	Scope    uint8
	Type     uint8
	Tos      uint8
	Flags    uint32 // rtm_flags (RTNH_F_ONLINK, ...)
	NhID     uint32 // nexthop object id (RTA_NH_ID), 0 for a plain route
	// Multipath: several next hops (RTA_MULTIPATH).
	Multipath bool
	// Via (RTA_VIA, a gateway of another family) also sets Extra.
	Via bool
	// Extra: attributes the writers here never set (prefsrc, encap, realm, metrics, ...).
	Extra bool
}

// Onlink reports whether the route has RTNH_F_ONLINK.
func (r *Route) Onlink() bool { return r.Flags&unix.RTNH_F_ONLINK != 0 }

// Neigh is a neighbour or (family AF_BRIDGE) FDB entry.
type Neigh struct {
	Family  uint8
	Ifindex int
	State   uint16
	Flags   uint8
	IP      netip.Addr // NDA_DST (the remote of an FDB entry)
	MAC     [6]byte    // NDA_LLADDR when it is 6 bytes long
	HasMAC  bool       // NDA_LLADDR present and 6 bytes long
}

// Nexthop is a kernel nexthop object (RTM_NEWNEXTHOP, Linux ≥ 5.3).
type Nexthop struct {
	ID     uint32
	Family uint8
	Flags  uint32 // RTNH_F_ONLINK, ...
	Oif    int
	Gw     netip.Addr
	// Other: kinds this package does not write (groups, blackholes, FDB, encap).
	Other bool
}

// Onlink reports whether the nexthop has RTNH_F_ONLINK.
func (n *Nexthop) Onlink() bool { return n.Flags&unix.RTNH_F_ONLINK != 0 }

var errShort = errors.New("netlink message too short")

// Attrs calls f for each attribute of b (type without flag bits) up to a malformed one, reported.
func Attrs(b []byte, f func(typ uint16, val []byte)) error {
	for len(b) >= unix.SizeofRtAttr {
		l := int(native.Uint16(b[0:2]))
		typ := native.Uint16(b[2:4]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
		if l < unix.SizeofRtAttr || l > len(b) {
			return errors.New("malformed netlink attribute")
		}
		f(typ, b[unix.SizeofRtAttr:l])
		al := (l + unix.NLA_ALIGNTO - 1) &^ (unix.NLA_ALIGNTO - 1)
		if al > len(b) {
			break
		}
		b = b[al:]
	}
	return nil
}

func addrOf(family uint8, v []byte) (netip.Addr, bool) {
	switch {
	case family == unix.AF_INET && len(v) == 4:
		return netip.AddrFrom4([4]byte(v)), true
	case family == unix.AF_INET6 && len(v) == 16:
		return netip.AddrFrom16([16]byte(v)), true
	case family == unix.AF_BRIDGE && len(v) == 4:
		return netip.AddrFrom4([4]byte(v)), true
	case family == unix.AF_BRIDGE && len(v) == 16:
		return netip.AddrFrom16([16]byte(v)).Unmap(), true
	}
	return netip.Addr{}, false
}

func u32(v []byte) (uint32, bool) {
	if len(v) < 4 {
		return 0, false
	}
	return native.Uint32(v), true
}

// ParseRoute decodes the body of an RTM_NEWROUTE message (after the netlink header).
func ParseRoute(b []byte, r *Route) error {
	if len(b) < unix.SizeofRtMsg {
		return errShort
	}
	*r = Route{
		Family: b[0], Tos: b[3], Table: uint32(b[4]), Protocol: b[5], Scope: b[6], Type: b[7],
		Flags: native.Uint32(b[8:12]),
	}
	dstLen := int(b[1])
	var dst netip.Addr
	err := Attrs(b[unix.SizeofRtMsg:], func(typ uint16, v []byte) {
		switch typ {
		case unix.RTA_DST:
			dst, _ = addrOf(r.Family, v)
		case unix.RTA_GATEWAY:
			r.Gw, _ = addrOf(r.Family, v)
		case unix.RTA_OIF:
			if x, ok := u32(v); ok {
				r.Oif = int(x)
			}
		case unix.RTA_PRIORITY:
			r.Priority, _ = u32(v)
		case unix.RTA_TABLE:
			if x, ok := u32(v); ok {
				r.Table = x
			}
		case rtaNhID:
			r.NhID, _ = u32(v)
		case unix.RTA_MULTIPATH:
			r.Multipath = true
		case unix.RTA_METRICS:
			// an empty nest is not sent; any content is a metric we never set
			r.Extra = r.Extra || len(v) > 0
		case unix.RTA_VIA:
			r.Via, r.Extra = true, true
		case unix.RTA_PREFSRC, unix.RTA_ENCAP, unix.RTA_ENCAP_TYPE, unix.RTA_NEWDST, unix.RTA_FLOW:
			r.Extra = true
		}
	})
	if err != nil {
		return err
	}
	if !dst.IsValid() {
		switch r.Family {
		case unix.AF_INET:
			dst = netip.IPv4Unspecified()
		case unix.AF_INET6:
			dst = netip.IPv6Unspecified()
		default:
			return nil
		}
	}
	if dstLen > dst.BitLen() {
		return errors.New("route destination length out of range")
	}
	r.Dst = netip.PrefixFrom(dst, dstLen)
	return nil
}

// ParseNeigh decodes the body of an RTM_NEWNEIGH message.
func ParseNeigh(b []byte, n *Neigh) error {
	if len(b) < unix.SizeofNdMsg {
		return errShort
	}
	*n = Neigh{Family: b[0], Ifindex: int(int32(native.Uint32(b[4:8]))), State: native.Uint16(b[8:10]), Flags: b[10]}
	return Attrs(b[unix.SizeofNdMsg:], func(typ uint16, v []byte) {
		switch typ {
		case unix.NDA_DST:
			n.IP, _ = addrOf(n.Family, v)
		case unix.NDA_LLADDR:
			if len(v) == 6 {
				n.MAC, n.HasMAC = [6]byte(v), true
			}
		}
	})
}

// ParseNexthop decodes the body of an RTM_NEWNEXTHOP message.
func ParseNexthop(b []byte, nh *Nexthop) error {
	if len(b) < unix.SizeofNhmsg {
		return errShort
	}
	*nh = Nexthop{Family: b[0], Flags: native.Uint32(b[4:8])}
	return Attrs(b[unix.SizeofNhmsg:], func(typ uint16, v []byte) {
		switch typ {
		case unix.NHA_ID:
			nh.ID, _ = u32(v)
		case unix.NHA_OIF:
			if x, ok := u32(v); ok {
				nh.Oif = int(x)
			}
		case unix.NHA_GATEWAY:
			nh.Gw, _ = addrOf(nh.Family, v)
		case unix.NHA_GROUP, unix.NHA_BLACKHOLE, unix.NHA_ENCAP, unix.NHA_ENCAP_TYPE, nhaFDB:
			nh.Other = true
		}
	})
}

// Batch is netlink requests in one buffer, each with a tag Conn.Run reports back; zero is ready.
type Batch struct {
	buf  []byte
	msgs []batchMsg
	cur  int // start of the message being built
}

type batchMsg struct {
	off, end int
	tag      int
	echo     bool // a reply (echo) is expected on success
}

// Reset empties the batch, keeping its storage.
func (b *Batch) Reset() {
	b.buf = b.buf[:0]
	b.msgs = b.msgs[:0]
}

// Len is the number of requests in the batch.
func (b *Batch) Len() int { return len(b.msgs) }

// Each calls f with each request's tag, type and body (valid during the call), for fake kernels.
func (b *Batch) Each(f func(tag int, typ uint16, body []byte)) {
	for _, m := range b.msgs {
		f(m.tag, native.Uint16(b.buf[m.off+4:]), b.buf[m.off+unix.SizeofNlMsghdr:m.end])
	}
}

func (b *Batch) begin(typ, flags uint16, tag int, echo bool) {
	b.cur = len(b.buf)
	b.buf = append(b.buf, make([]byte, unix.SizeofNlMsghdr)...)
	native.PutUint16(b.buf[b.cur+4:], typ)
	native.PutUint16(b.buf[b.cur+6:], flags|unix.NLM_F_REQUEST)
	b.msgs = append(b.msgs, batchMsg{off: b.cur, tag: tag, echo: echo})
}

func (b *Batch) raw(p ...byte) { b.buf = append(b.buf, p...) }

func (b *Batch) attr(typ uint16, v []byte) {
	l := unix.SizeofRtAttr + len(v)
	b.buf = native.AppendUint16(b.buf, uint16(l))
	b.buf = native.AppendUint16(b.buf, typ)
	b.buf = append(b.buf, v...)
	for len(b.buf)%unix.NLA_ALIGNTO != 0 {
		b.buf = append(b.buf, 0)
	}
}

func (b *Batch) attrU32(typ uint16, v uint32) { b.attr(typ, native.AppendUint32(nil, v)) }

func (b *Batch) attrAddr(typ uint16, a netip.Addr) {
	if a.Is4() {
		v := a.As4()
		b.attr(typ, v[:])
		return
	}
	v := a.As16()
	b.attr(typ, v[:])
}

func (b *Batch) end() {
	native.PutUint32(b.buf[b.cur:], uint32(len(b.buf)-b.cur))
	b.msgs[len(b.msgs)-1].end = len(b.buf)
}

func family(a netip.Addr) uint8 {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

func (b *Batch) ndmsg(fam uint8, ifindex int, state uint16, flags uint8) {
	b.raw(fam, 0, 0, 0)
	b.buf = native.AppendUint32(b.buf, uint32(int32(ifindex)))
	b.buf = native.AppendUint16(b.buf, state)
	b.raw(flags, 0)
}

// NeighSet adds "neigh replace <ip> lladdr <mac> dev <ifindex> nud permanent".
func (b *Batch) NeighSet(tag, ifindex int, ip netip.Addr, mac [6]byte) {
	b.begin(unix.RTM_NEWNEIGH, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, tag, false)
	b.ndmsg(family(ip), ifindex, unix.NUD_PERMANENT, 0)
	b.attrAddr(unix.NDA_DST, ip)
	b.attr(unix.NDA_LLADDR, mac[:])
	b.end()
}

// NeighDel adds "neigh del <ip> dev <ifindex>".
func (b *Batch) NeighDel(tag, ifindex int, ip netip.Addr) {
	b.begin(unix.RTM_DELNEIGH, 0, tag, false)
	b.ndmsg(family(ip), ifindex, 0, 0)
	b.attrAddr(unix.NDA_DST, ip)
	b.end()
}

// FDBSet adds "bridge fdb replace <mac> dev <ifindex> dst <dst> self permanent".
func (b *Batch) FDBSet(tag, ifindex int, mac [6]byte, dst netip.Addr) {
	b.begin(unix.RTM_NEWNEIGH, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, tag, false)
	b.ndmsg(unix.AF_BRIDGE, ifindex, unix.NUD_PERMANENT, unix.NTF_SELF)
	b.attr(unix.NDA_LLADDR, mac[:])
	b.attrAddr(unix.NDA_DST, dst)
	b.end()
}

// FDBDel adds "bridge fdb del <mac> dev <ifindex> dst <dst> self".
func (b *Batch) FDBDel(tag, ifindex int, mac [6]byte, dst netip.Addr) {
	b.begin(unix.RTM_DELNEIGH, 0, tag, false)
	b.ndmsg(unix.AF_BRIDGE, ifindex, 0, unix.NTF_SELF)
	b.attr(unix.NDA_LLADDR, mac[:])
	if dst.IsValid() {
		b.attrAddr(unix.NDA_DST, dst)
	}
	b.end()
}

func (b *Batch) rtmsg(r *Route, protocol, scope, typ uint8) {
	b.raw(family(r.Dst.Addr()), uint8(r.Dst.Bits()), 0, r.Tos, unix.RT_TABLE_MAIN, protocol, scope, typ)
	b.buf = native.AppendUint32(b.buf, r.Flags)
	b.attrAddr(unix.RTA_DST, r.Dst.Addr())
	if r.Table != 0 && r.Table != unix.RT_TABLE_MAIN {
		b.attrU32(unix.RTA_TABLE, r.Table)
	}
	if r.Priority != 0 {
		b.attrU32(unix.RTA_PRIORITY, r.Priority)
	}
	if r.NhID != 0 {
		b.attrU32(rtaNhID, r.NhID)
		return
	}
	if r.Gw.IsValid() {
		b.attrAddr(unix.RTA_GATEWAY, r.Gw)
	}
	if r.Oif != 0 {
		b.attrU32(unix.RTA_OIF, uint32(r.Oif))
	}
}

// RouteReplace adds "ip route replace" for r.Dst, Priority, Tos, Table (0: main) and
// either NhID or Gw/Oif/Flags, with protocol boot as iproute2 writes it.
func (b *Batch) RouteReplace(tag int, r Route) {
	if r.NhID != 0 {
		r.Flags = 0 // flags belong to the nexthop object
	}
	b.begin(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, tag, false)
	b.rtmsg(&r, unix.RTPROT_BOOT, unix.RT_SCOPE_UNIVERSE, unix.RTN_UNICAST)
	b.end()
}

// RouteDel adds "ip route del" matching r.Dst, Priority, Tos, Table and any NhID, Gw, Oif.
func (b *Batch) RouteDel(tag int, r Route) {
	r.Flags = 0
	b.begin(unix.RTM_DELROUTE, 0, tag, false)
	b.rtmsg(&r, 0, unix.RT_SCOPE_NOWHERE, 0)
	b.end()
}

// NexthopAdd adds "ip nexthop add via <gw> dev <oif> [onlink]"; Run reports the new id.
func (b *Batch) NexthopAdd(tag, oif int, gw netip.Addr, onlink bool) {
	b.begin(unix.RTM_NEWNEXTHOP, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ECHO, tag, true)
	var flags uint32
	if onlink {
		flags = unix.RTNH_F_ONLINK
	}
	b.raw(family(gw), 0, 0, 0)
	b.buf = native.AppendUint32(b.buf, flags)
	b.attrU32(unix.NHA_OIF, uint32(oif))
	b.attrAddr(unix.NHA_GATEWAY, gw)
	b.end()
}

// NexthopDel adds "ip nexthop del id <id>" (which also removes the routes using it).
func (b *Batch) NexthopDel(tag int, id uint32) {
	b.begin(unix.RTM_DELNEXTHOP, 0, tag, false)
	b.raw(unix.AF_UNSPEC, 0, 0, 0, 0, 0, 0, 0)
	b.attrU32(unix.NHA_ID, id)
	b.end()
}

type msgHdr struct {
	Type, Flags uint16
	Seq, Pid    uint32
}

// eachMsg calls f per message of a datagram until f returns false; false on a malformed length.
func eachMsg(buf []byte, f func(h msgHdr, body []byte) bool) (wellFormed bool) {
	for len(buf) >= unix.SizeofNlMsghdr {
		l := int(native.Uint32(buf[0:4]))
		if l < unix.SizeofNlMsghdr || l > len(buf) {
			return false
		}
		h := msgHdr{Type: native.Uint16(buf[4:6]), Flags: native.Uint16(buf[6:8]),
			Seq: native.Uint32(buf[8:12]), Pid: native.Uint32(buf[12:16])}
		if !f(h, buf[unix.SizeofNlMsghdr:l]) {
			return true
		}
		al := (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1)
		if al > len(buf) {
			return true
		}
		buf = buf[al:]
	}
	return true
}
