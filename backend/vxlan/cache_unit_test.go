package vxlan

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/netlinkx"
)

func nlAttr(b []byte, typ uint16, v []byte) []byte {
	b = binary.NativeEndian.AppendUint16(b, uint16(4+len(v)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func u32b(x uint32) []byte { return binary.NativeEndian.AppendUint32(nil, x) }

func neighBody(fam uint8, idx int, state uint16, ip netip.Addr, mac [6]byte) []byte {
	b := []byte{fam, 0, 0, 0}
	b = binary.NativeEndian.AppendUint32(b, uint32(idx))
	b = binary.NativeEndian.AppendUint16(b, state)
	b = append(b, 0, 0)
	b = nlAttr(b, unix.NDA_DST, ip.AsSlice())
	return nlAttr(b, unix.NDA_LLADDR, mac[:])
}

func routeBody(table uint8, oif int) []byte {
	b := []byte{unix.AF_INET, 24, 0, 0, table, unix.RTPROT_BOOT, 0, unix.RTN_UNICAST, 0, 0, 0, 0}
	b = nlAttr(b, unix.RTA_DST, []byte{10, 5, 2, 0})
	b = nlAttr(b, unix.RTA_TABLE, u32b(uint32(table)))
	return nlAttr(b, unix.RTA_OIF, u32b(uint32(oif)))
}

func nexthopBody(oif int) []byte {
	b := []byte{unix.AF_INET, 0, 0, 0, 0, 0, 0, 0}
	b = nlAttr(b, unix.NHA_ID, u32b(7))
	return nlAttr(b, unix.NHA_OIF, u32b(uint32(oif)))
}

func linkBody(idx int) []byte {
	b := []byte{unix.AF_UNSPEC, 0, 0, 0}
	b = binary.NativeEndian.AppendUint32(b, uint32(idx))
	return append(b, make([]byte, 8)...)
}

// TestNoteChange: which notifications invalidate the cache. Device 10, external 2, port
// id 77; cached: neighbour 10.5.2.0, FDB mac2 -> 192.0.2.2.
func TestNoteChange(t *testing.T) {
	const dev, ext, other, pid = 10, 2, 33, 77
	mac2 := [6]byte{0x0e, 0, 0, 0, 0, 2}
	mac9 := [6]byte{0x0e, 0, 0, 0, 0, 9}
	gw := netip.MustParseAddr("10.5.2.0")
	pub := netip.MustParseAddr("192.0.2.2")
	perm := uint16(unix.NUD_PERMANENT)
	cases := []struct {
		name     string
		typ      uint16
		pid      uint32
		body     []byte
		applying bool
		budget   int
		dirty    bool
	}{
		{"own route", unix.RTM_NEWROUTE, pid, routeBody(unix.RT_TABLE_MAIN, dev), false, 0, false},
		{"foreign route on the device", unix.RTM_DELROUTE, 900, routeBody(unix.RT_TABLE_MAIN, dev), false, 0, true},
		{"kernel route on the external interface", unix.RTM_NEWROUTE, 0, routeBody(unix.RT_TABLE_MAIN, ext), false, 0, true},
		{"route on another device", unix.RTM_NEWROUTE, 900, routeBody(unix.RT_TABLE_MAIN, other), false, 0, false},
		{"route in another table", unix.RTM_NEWROUTE, 900, routeBody(unix.RT_TABLE_LOCAL, dev), false, 0, false},
		{"own nexthop", unix.RTM_DELNEXTHOP, pid, nexthopBody(dev), false, 0, false},
		{"foreign nexthop on the device", unix.RTM_DELNEXTHOP, 900, nexthopBody(dev), false, 0, true},
		{"nexthop on another device", unix.RTM_NEWNEXTHOP, 900, nexthopBody(other), false, 0, false},
		{"own neighbour", unix.RTM_NEWNEIGH, pid, neighBody(unix.AF_INET, dev, perm, gw, mac2), false, 0, false},
		{"foreign permanent neighbour", unix.RTM_NEWNEIGH, 900, neighBody(unix.AF_INET, dev, perm, gw, mac2), false, 0, true},
		{"foreign dynamic neighbour", unix.RTM_NEWNEIGH, 900, neighBody(unix.AF_INET, dev, unix.NUD_REACHABLE, gw, mac2), false, 0, true},
		{"kernel ARP state change", unix.RTM_NEWNEIGH, 0, neighBody(unix.AF_INET, dev, unix.NUD_STALE, gw, mac9), false, 0, false},
		{"kernel multicast neighbour", unix.RTM_NEWNEIGH, 0, neighBody(unix.AF_INET6, dev, unix.NUD_NOARP, netip.MustParseAddr("ff02::16"), [6]byte{0x33, 0x33, 0, 0, 0, 0x16}), false, 0, false},
		{"kernel flush of a permanent neighbour", unix.RTM_DELNEIGH, 0, neighBody(unix.AF_INET, dev, perm, gw, mac2), false, 0, true},
		{"neighbour on another device", unix.RTM_NEWNEIGH, 900, neighBody(unix.AF_INET, other, perm, gw, mac2), false, 0, false},
		{"fdb between rounds", unix.RTM_NEWNEIGH, 0, neighBody(unix.AF_BRIDGE, dev, perm, pub, mac2), false, 0, true},
		{"fdb delete between rounds", unix.RTM_DELNEIGH, 0, neighBody(unix.AF_BRIDGE, dev, perm, pub, mac9), false, 0, true},
		{"learned fdb for another MAC", unix.RTM_NEWNEIGH, 0, neighBody(unix.AF_BRIDGE, dev, unix.NUD_REACHABLE, pub, mac9), false, 0, false},
		{"learned fdb for our MAC", unix.RTM_NEWNEIGH, 0, neighBody(unix.AF_BRIDGE, dev, unix.NUD_REACHABLE, pub, mac2), false, 0, true},
		{"fdb echo during a round", unix.RTM_NEWNEIGH, 0, neighBody(unix.AF_BRIDGE, dev, perm, pub, mac2), true, 1, false},
		{"fdb beyond our requests", unix.RTM_NEWNEIGH, 0, neighBody(unix.AF_BRIDGE, dev, perm, pub, mac2), true, 0, true},
		{"fdb with other flags during a round", unix.RTM_NEWNEIGH, 0, neighBody(unix.AF_BRIDGE, dev, perm|unix.NUD_NOARP, pub, mac2), true, 1, true},
		{"fdb to another remote during a round", unix.RTM_NEWNEIGH, 0, neighBody(unix.AF_BRIDGE, dev, perm, netip.MustParseAddr("192.0.2.9"), mac2), true, 1, true},
		{"fdb delete of an unwanted entry during a round", unix.RTM_DELNEIGH, 0, neighBody(unix.AF_BRIDGE, dev, perm, pub, mac9), true, 1, false},
		{"fdb delete of a wanted entry during a round", unix.RTM_DELNEIGH, 0, neighBody(unix.AF_BRIDGE, dev, perm, pub, mac2), true, 1, true},
		{"device link change", unix.RTM_NEWLINK, 0, linkBody(dev), false, 0, true},
		{"external interface address", unix.RTM_DELADDR, 900, linkBody(ext), false, 0, true},
		{"another link", unix.RTM_NEWLINK, 0, linkBody(other), false, 0, false},
		{"malformed route", unix.RTM_NEWROUTE, 900, []byte{1, 2}, false, 0, true},
		{"unknown type", 200, 900, nil, false, 0, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFamily(false, "flannel.1", netip.MustParseAddr("192.0.2.1"), netip.MustParsePrefix("10.5.0.0/16"))
			f.index = dev
			for _, s := range []famState{f.want, f.act} {
				s.setNeigh(gw, hwAddr(mac2))
				s.setFDB(hwAddr(mac2), pub)
			}
			b := &Backend{fams: []*family{f}, ext: &backend.ExternalInterface{Iface: &net.Interface{Index: ext}}}
			b.kc = kernelCache{on: true, pid: pid, applying: c.applying, fdbEchoes: c.budget}
			b.noteChange(&netlinkx.Change{Type: c.typ, Pid: c.pid, Body: c.body})
			if b.kc.dirty != c.dirty {
				t.Errorf("dirty = %v, want %v", b.kc.dirty, c.dirty)
			}
		})
	}
}
