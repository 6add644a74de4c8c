package netlinkx

import (
	"net/netip"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// body returns the payload of the only message in b.
func body(t testing.TB, b *Batch) []byte {
	t.Helper()
	if b.Len() != 1 {
		t.Fatalf("%d messages", b.Len())
	}
	m := b.buf[b.msgs[0].off:b.msgs[0].end]
	if int(native.Uint32(m[0:4])) != len(m) {
		t.Fatalf("length field %d, message %d bytes", native.Uint32(m[0:4]), len(m))
	}
	return m[unix.SizeofNlMsghdr:]
}

// TestRequestsParseBack: the parsers of kernel dumps decode the Batch's requests to what
// was asked.
func TestRequestsParseBack(t *testing.T) {
	var b Batch
	want := Route{Dst: netip.MustParsePrefix("10.5.2.0/24"), Gw: netip.MustParseAddr("10.5.2.0"), Oif: 7,
		Priority: 5, Flags: unix.RTNH_F_ONLINK}
	b.RouteReplace(1, want)
	var r Route
	if err := ParseRoute(body(t, &b), &r); err != nil {
		t.Fatal(err)
	}
	if r.Dst != want.Dst || r.Gw != want.Gw || r.Oif != 7 || r.Priority != 5 || !r.Onlink() || r.Table != unix.RT_TABLE_MAIN ||
		r.Protocol != unix.RTPROT_BOOT || r.Type != unix.RTN_UNICAST || r.NhID != 0 || r.Extra {
		t.Errorf("route parsed back as %+v", r)
	}
	b.Reset()
	b.RouteReplace(1, Route{Dst: netip.MustParsePrefix("fd00:5:0:2::/64"), NhID: 42, Gw: netip.MustParseAddr("fd00::1"), Flags: unix.RTNH_F_ONLINK})
	if err := ParseRoute(body(t, &b), &r); err != nil {
		t.Fatal(err)
	}
	if r.Family != unix.AF_INET6 || r.NhID != 42 || r.Gw.IsValid() || r.Oif != 0 || r.Flags != 0 {
		t.Errorf("nexthop route parsed back as %+v (gateway, device and flags belong to the nexthop)", r)
	}
	b.Reset()
	mac := [6]byte{0x0e, 1, 2, 3, 4, 5}
	b.FDBSet(1, 9, mac, netip.MustParseAddr("198.51.100.2"))
	var n Neigh
	if err := ParseNeigh(body(t, &b), &n); err != nil {
		t.Fatal(err)
	}
	if n.Family != unix.AF_BRIDGE || n.Ifindex != 9 || n.State != unix.NUD_PERMANENT || n.Flags != unix.NTF_SELF ||
		!n.HasMAC || n.MAC != mac || n.IP != netip.MustParseAddr("198.51.100.2") {
		t.Errorf("fdb entry parsed back as %+v", n)
	}
	b.Reset()
	b.NexthopAdd(1, 9, netip.MustParseAddr("10.5.2.0"), true)
	var nh Nexthop
	if err := ParseNexthop(body(t, &b), &nh); err != nil {
		t.Fatal(err)
	}
	if nh.Family != unix.AF_INET || nh.Oif != 9 || nh.Gw != netip.MustParseAddr("10.5.2.0") || !nh.Onlink() || nh.Other || nh.ID != 0 {
		t.Errorf("nexthop parsed back as %+v", nh)
	}
}

// FuzzParse: the reply parsers return an error or a value, never panic.
func FuzzParse(f *testing.F) {
	var b Batch
	b.RouteReplace(1, Route{Dst: netip.MustParsePrefix("10.5.2.0/24"), Gw: netip.MustParseAddr("10.5.2.0"), Oif: 7})
	b.NeighSet(2, 3, netip.MustParseAddr("10.5.2.0"), [6]byte{1, 2, 3, 4, 5, 6})
	b.NexthopAdd(3, 3, netip.MustParseAddr("10.5.2.0"), true)
	for _, m := range b.msgs {
		f.Add(b.buf[m.off+unix.SizeofNlMsghdr : m.end])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var r Route
		if ParseRoute(data, &r) == nil && r.Dst.IsValid() && r.Dst.Bits() > r.Dst.Addr().BitLen() {
			t.Fatalf("route with a bad prefix %v", r.Dst)
		}
		var n Neigh
		_ = ParseNeigh(data, &n)
		var nh Nexthop
		_ = ParseNexthop(data, &nh)
		_ = extAckMsg(unix.NLM_F_ACK_TLVS, data)
		_ = countAttrs(data)
	})
}

// countAttrs walks the attributes of data (no header) as the parsers do.
func countAttrs(data []byte) int {
	n := 0
	_ = Attrs(data, func(uint16, []byte) { n++ })
	return n
}

// Attrs stops at a malformed attribute and masks the flag bits off the type.
func TestAttrsStopsAtMalformed(t *testing.T) {
	attr := func(typ uint16, val []byte) []byte {
		b := make([]byte, 4, 4+len(val)+3)
		native.PutUint16(b[0:2], uint16(4+len(val)))
		native.PutUint16(b[2:4], typ)
		b = append(b, val...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		return b
	}
	b := append(attr(1, []byte{1, 2, 3, 4}), 0xff, 0xff, 2, 0) // second attribute claims 65535 bytes
	var seen []uint16
	err := Attrs(b, func(typ uint16, val []byte) { seen = append(seen, typ) })
	if len(seen) != 1 || seen[0] != 1 || err == nil {
		t.Errorf("attributes %v, error %v; want [1] and an error", seen, err)
	}
	seen = nil
	_ = Attrs(attr(unix.RTA_MULTIPATH|unix.NLA_F_NESTED|unix.NLA_F_NET_BYTEORDER, nil), func(typ uint16, val []byte) { seen = append(seen, typ) })
	if len(seen) != 1 || seen[0] != unix.RTA_MULTIPATH {
		t.Errorf("flags not masked: %v", seen)
	}
}

// eachMsg walks headers and bodies in order, stops when told, and reports bad lengths.
func TestEachMsg(t *testing.T) {
	msg := func(typ uint16, seq uint32, body ...byte) []byte {
		m := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body)+3)
		native.PutUint32(m[0:4], uint32(unix.SizeofNlMsghdr+len(body)))
		native.PutUint16(m[4:6], typ)
		native.PutUint16(m[6:8], unix.NLM_F_MULTI)
		native.PutUint32(m[8:12], seq)
		native.PutUint32(m[12:16], 77)
		m = append(m, body...)
		for len(m)%unix.NLMSG_ALIGNTO != 0 {
			m = append(m, 0)
		}
		return m
	}
	three := slices.Concat(msg(unix.RTM_NEWROUTE, 1, 1, 2, 3), msg(unix.RTM_NEWNEIGH, 2), msg(unix.NLMSG_DONE, 3, 0, 0, 0, 0))
	tooLong := msg(unix.RTM_NEWROUTE, 9, 1)
	native.PutUint32(tooLong[0:4], 200)
	tooShort := msg(unix.RTM_NEWROUTE, 9)
	native.PutUint32(tooShort[0:4], 8)
	type seen struct {
		typ  uint16
		seq  uint32
		body string
	}
	tests := []struct {
		name   string
		buf    []byte
		stopAt int // f returns false for the message with this seq (0: never)
		want   []seen
		wellOK bool
	}{
		{"three", three, 0, []seen{{unix.RTM_NEWROUTE, 1, "\x01\x02\x03"}, {unix.RTM_NEWNEIGH, 2, ""}, {unix.NLMSG_DONE, 3, "\x00\x00\x00\x00"}}, true},
		{"stop", three, 2, []seen{{unix.RTM_NEWROUTE, 1, "\x01\x02\x03"}, {unix.RTM_NEWNEIGH, 2, ""}}, true},
		{"empty", nil, 0, nil, true},
		{"trailing bytes shorter than a header", append(msg(unix.RTM_NEWROUTE, 1), 1, 2, 3), 0, []seen{{unix.RTM_NEWROUTE, 1, ""}}, true},
		{"length past the end", slices.Concat(msg(unix.RTM_NEWROUTE, 1), tooLong), 0, []seen{{unix.RTM_NEWROUTE, 1, ""}}, false},
		{"length shorter than a header", slices.Concat(tooShort, msg(unix.RTM_NEWROUTE, 1)), 0, nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []seen
			ok := eachMsg(tc.buf, func(h msgHdr, body []byte) bool {
				if h.Flags != unix.NLM_F_MULTI || h.Pid != 77 {
					t.Errorf("header %+v", h)
				}
				got = append(got, seen{h.Type, h.Seq, string(body)})
				return int(h.Seq) != tc.stopAt
			})
			if ok != tc.wellOK || !slices.Equal(got, tc.want) {
				t.Errorf("got %v (well formed %v), want %v (%v)", got, ok, tc.want, tc.wellOK)
			}
		})
	}
}
