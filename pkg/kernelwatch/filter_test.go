package kernelwatch

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// Builders of rtnetlink notification payloads (what follows the nlmsghdr).

func attr(typ uint16, val []byte) []byte {
	l := unix.SizeofRtAttr + len(val)
	b := make([]byte, align(l))
	binary.NativeEndian.PutUint16(b[0:2], uint16(l))
	binary.NativeEndian.PutUint16(b[2:4], typ)
	copy(b[unix.SizeofRtAttr:], val)
	return b
}

func u32(v uint32) []byte {
	b := make([]byte, 4)
	binary.NativeEndian.PutUint32(b, v)
	return b
}

func linkMsg(index int, name string) []byte {
	b := make([]byte, unix.SizeofIfInfomsg)
	binary.NativeEndian.PutUint32(b[4:8], uint32(index))
	return append(b, attr(unix.IFLA_IFNAME, append([]byte(name), 0))...)
}

func addrMsg(index int, p netip.Prefix) []byte {
	b := make([]byte, unix.SizeofIfAddrmsg)
	b[0] = unix.AF_INET
	if p.Addr().Is6() {
		b[0] = unix.AF_INET6
	}
	b[1] = byte(p.Bits())
	binary.NativeEndian.PutUint32(b[4:8], uint32(index))
	return append(b, attr(unix.IFA_ADDRESS, p.Addr().AsSlice())...)
}

type rt struct {
	dst       netip.Prefix // invalid: no RTA_DST (default route, IPv4)
	table     uint8
	rtaTable  uint32
	oif       int
	multipath []int
}

func routeMsg(r rt) []byte {
	b := make([]byte, unix.SizeofRtMsg)
	b[0] = unix.AF_INET
	if r.dst.IsValid() {
		if r.dst.Addr().Is6() {
			b[0] = unix.AF_INET6
		}
		b[1] = byte(r.dst.Bits())
	}
	b[4] = r.table
	if r.dst.IsValid() {
		b = append(b, attr(unix.RTA_DST, r.dst.Addr().AsSlice())...)
	}
	if r.rtaTable != 0 {
		b = append(b, attr(unix.RTA_TABLE, u32(r.rtaTable))...)
	}
	if r.oif != 0 {
		b = append(b, attr(unix.RTA_OIF, u32(uint32(r.oif)))...)
	}
	if len(r.multipath) > 0 {
		var mp []byte
		for _, i := range r.multipath {
			nh := make([]byte, unix.SizeofRtNexthop)
			binary.NativeEndian.PutUint16(nh[0:2], unix.SizeofRtNexthop)
			binary.NativeEndian.PutUint32(nh[4:8], uint32(i))
			mp = append(mp, nh...)
		}
		b = append(b, attr(unix.RTA_MULTIPATH|unix.NLA_F_NESTED, mp)...)
	}
	return b
}

func neighMsg(fam uint8, index int, ip string, mac []byte) []byte {
	b := make([]byte, unix.SizeofNdMsg)
	b[0] = fam
	binary.NativeEndian.PutUint32(b[4:8], uint32(index))
	if ip != "" {
		b = append(b, attr(unix.NDA_DST, netip.MustParseAddr(ip).AsSlice())...)
	}
	if mac != nil {
		b = append(b, attr(unix.NDA_LLADDR, mac)...)
	}
	return b
}

func nexthopMsg(id uint32, oif int) []byte {
	b := make([]byte, unix.SizeofNhmsg)
	b = append(b, attr(unix.NHA_ID, u32(id))...)
	if oif != 0 {
		b = append(b, attr(unix.NHA_OIF, u32(uint32(oif)))...)
	}
	return b
}

const (
	idxFlannel = 5
	idxEth     = 2
	idxCNI     = 7
)

func testMatcher() *matcher {
	m := newMatcher(Filter{
		Devices:  []string{"flannel.1"},
		Links:    []string{"eth0"},
		Networks: []netip.Prefix{netip.MustParsePrefix("10.5.0.0/16"), netip.MustParsePrefix("fd00:5::/48")},
	})
	m.setLinks(map[int]string{idxFlannel: "flannel.1", idxEth: "eth0", idxCNI: "cni0", 1: "lo"})
	return m
}

var mac = []byte{0x86, 0xa8, 0, 0, 0, 1}

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		name string
		typ  uint16
		data []byte
		want string // Object.String(), "" for no match
	}{
		{"owned device changed", unix.RTM_NEWLINK, linkMsg(idxFlannel, "flannel.1"), "link flannel.1"},
		{"owned device deleted", unix.RTM_DELLINK, linkMsg(idxFlannel, "flannel.1"), "link flannel.1"},
		{"external link changed", unix.RTM_NEWLINK, linkMsg(idxEth, "eth0"), "link eth0"},
		{"other link", unix.RTM_NEWLINK, linkMsg(idxCNI, "cni0"), ""},
		{"route on our device", unix.RTM_DELROUTE, routeMsg(rt{dst: netip.MustParsePrefix("10.5.3.0/24"), table: unix.RT_TABLE_MAIN, oif: idxFlannel}), "route 10.5.3.0/24 dev flannel.1"},
		{"route on our device outside the network", unix.RTM_NEWROUTE, routeMsg(rt{dst: netip.MustParsePrefix("192.168.9.0/24"), table: unix.RT_TABLE_MAIN, oif: idxFlannel}), "route 192.168.9.0/24 dev flannel.1"},
		{"route inside the network elsewhere", unix.RTM_NEWROUTE, routeMsg(rt{dst: netip.MustParsePrefix("10.5.3.0/24"), table: unix.RT_TABLE_MAIN, oif: idxEth}), "route 10.5.3.0/24"},
		{"IPv6 route inside the network", unix.RTM_NEWROUTE, routeMsg(rt{dst: netip.MustParsePrefix("fd00:5:0:3::/64"), table: unix.RT_TABLE_MAIN, oif: idxEth}), "route fd00:5:0:3::/64"},
		{"route outside the network", unix.RTM_NEWROUTE, routeMsg(rt{dst: netip.MustParsePrefix("192.168.9.0/24"), table: unix.RT_TABLE_MAIN, oif: idxEth}), ""},
		{"route wider than the network", unix.RTM_NEWROUTE, routeMsg(rt{dst: netip.MustParsePrefix("10.0.0.0/8"), table: unix.RT_TABLE_MAIN, oif: idxEth}), ""},
		{"default route", unix.RTM_NEWROUTE, routeMsg(rt{table: unix.RT_TABLE_MAIN, oif: idxEth}), ""},
		{"local table route on our device", unix.RTM_NEWROUTE, routeMsg(rt{dst: netip.MustParsePrefix("10.5.1.0/32"), table: unix.RT_TABLE_LOCAL, oif: idxFlannel}), ""},
		{"RTA_TABLE wins over the header", unix.RTM_NEWROUTE, routeMsg(rt{dst: netip.MustParsePrefix("10.5.3.0/24"), table: unix.RT_TABLE_MAIN, rtaTable: 1000, oif: idxFlannel}), ""},
		{"multipath through our device", unix.RTM_NEWROUTE, routeMsg(rt{dst: netip.MustParsePrefix("192.168.9.0/24"), table: unix.RT_TABLE_MAIN, multipath: []int{idxEth, idxFlannel}}), "route 192.168.9.0/24 dev flannel.1"},
		{"multipath elsewhere", unix.RTM_NEWROUTE, routeMsg(rt{dst: netip.MustParsePrefix("192.168.9.0/24"), table: unix.RT_TABLE_MAIN, multipath: []int{idxEth, idxCNI}}), ""},
		{"neighbour on our device", unix.RTM_DELNEIGH, neighMsg(unix.AF_INET, idxFlannel, "10.5.3.0", mac), "neighbour 10.5.3.0 lladdr 86:a8:00:00:00:01 dev flannel.1"},
		{"multicast neighbour on our device", unix.RTM_NEWNEIGH, neighMsg(unix.AF_INET6, idxFlannel, "ff02::1:ff28:fd9e", []byte{0x33, 0x33, 0xff, 0x28, 0xfd, 0x9e}), ""},
		{"neighbour on the external link", unix.RTM_NEWNEIGH, neighMsg(unix.AF_INET, idxEth, "192.0.2.1", mac), ""},
		{"neighbour on cni0", unix.RTM_NEWNEIGH, neighMsg(unix.AF_INET, idxCNI, "10.5.1.2", mac), ""},
		{"fdb on our device", unix.RTM_DELNEIGH, neighMsg(unix.AF_BRIDGE, idxFlannel, "192.0.2.12", mac), "fdb 86:a8:00:00:00:01 dst 192.0.2.12 dev flannel.1"},
		{"fdb on cni0", unix.RTM_NEWNEIGH, neighMsg(unix.AF_BRIDGE, idxCNI, "", mac), ""},
		{"address on our device", unix.RTM_DELADDR, addrMsg(idxFlannel, netip.MustParsePrefix("10.5.1.0/32")), "address 10.5.1.0/32 dev flannel.1"},
		{"address on the external link", unix.RTM_NEWADDR, addrMsg(idxEth, netip.MustParsePrefix("192.0.2.11/24")), ""},
		{"nexthop on our device", unix.RTM_DELNEXTHOP, nexthopMsg(42, idxFlannel), "nexthop id 42 dev flannel.1"},
		{"nexthop elsewhere", unix.RTM_NEWNEXTHOP, nexthopMsg(43, idxEth), ""},
		{"group nexthop", unix.RTM_NEWNEXTHOP, nexthopMsg(44, 0), ""},
		{"short link message", unix.RTM_NEWLINK, []byte{1, 2, 3}, ""},
		{"short route message", unix.RTM_NEWROUTE, []byte{1, 2, 3}, ""},
		{"other message type", unix.RTM_NEWRULE, routeMsg(rt{dst: netip.MustParsePrefix("10.5.3.0/24"), table: unix.RT_TABLE_MAIN, oif: idxFlannel}), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, ok := testMatcher().match(tc.typ, tc.data)
			got := ""
			if ok {
				got = o.String()
			}
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// The matcher follows the device through deletion, re-creation and renaming.
func TestMatchFollowsIndexes(t *testing.T) {
	m := testMatcher()
	outside := func(idx int) (string, bool) {
		o, ok := m.match(unix.RTM_NEWROUTE, routeMsg(rt{dst: netip.MustParsePrefix("192.168.9.0/24"), table: unix.RT_TABLE_MAIN, oif: idx}))
		return o.Device, ok
	}
	steps := []struct {
		name    string
		typ     uint16
		data    []byte
		want    string
		idx     int
		matched bool
	}{
		{"deleted", unix.RTM_DELLINK, linkMsg(idxFlannel, "flannel.1"), "link flannel.1", idxFlannel, false},
		{"recreated", unix.RTM_NEWLINK, linkMsg(9, "flannel.1"), "link flannel.1", 9, true},
		{"renamed away", unix.RTM_NEWLINK, linkMsg(9, "old0"), "link flannel.1", 9, false},
		{"other link renamed to our name", unix.RTM_NEWLINK, linkMsg(11, "flannel.1"), "link flannel.1", 11, true},
	}
	for _, s := range steps {
		o, ok := m.match(s.typ, s.data)
		if !ok || o.String() != s.want {
			t.Fatalf("%s: got %v %q, want %q", s.name, ok, o.String(), s.want)
		}
		dev, matched := outside(s.idx)
		if matched != s.matched || (matched && dev != "flannel.1") {
			t.Fatalf("%s: route via index %d matched=%v dev=%q, want matched=%v", s.name, s.idx, matched, dev, s.matched)
		}
	}
	if _, ok := m.match(unix.RTM_NEWLINK, linkMsg(9, "old0")); ok {
		t.Error("a link renamed away from our name still matches")
	}
}

// FuzzMatch: the matcher never panics and matches only objects of the filter.
func FuzzMatch(f *testing.F) {
	f.Add(uint16(unix.RTM_NEWLINK), linkMsg(idxFlannel, "flannel.1"))
	f.Add(uint16(unix.RTM_NEWROUTE), routeMsg(rt{dst: netip.MustParsePrefix("10.5.3.0/24"), table: unix.RT_TABLE_MAIN, oif: idxFlannel}))
	f.Add(uint16(unix.RTM_NEWROUTE), routeMsg(rt{dst: netip.MustParsePrefix("192.168.9.0/24"), table: unix.RT_TABLE_MAIN, multipath: []int{idxEth, idxFlannel}}))
	f.Add(uint16(unix.RTM_NEWNEIGH), neighMsg(unix.AF_BRIDGE, idxFlannel, "192.0.2.12", mac))
	f.Add(uint16(unix.RTM_NEWADDR), addrMsg(idxFlannel, netip.MustParsePrefix("10.5.1.0/32")))
	f.Add(uint16(unix.RTM_NEWNEXTHOP), nexthopMsg(42, idxFlannel))
	f.Fuzz(func(t *testing.T, typ uint16, data []byte) {
		m := testMatcher()
		o, ok := m.match(typ, data)
		if !ok {
			return
		}
		switch {
		case o.Kind == KindLink && o.Device != "flannel.1" && o.Device != "eth0":
			t.Fatalf("matched foreign link %v", o)
		case o.Kind != KindLink && o.Kind != KindRoute && o.Device != "flannel.1":
			t.Fatalf("matched an object not on our device: %v", o)
		case o.Kind == KindRoute && o.Device == "" && !m.inNetworks(o.Prefix):
			t.Fatalf("matched a route outside the networks: %v", o)
		}
		_ = o.String()
	})
}
