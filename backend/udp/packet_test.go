package udp

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// ipPacket builds an IPv4 packet with a valid header checksum.
func ipPacket(src, dst [4]byte, proto, ttl byte, payload []byte) []byte {
	p := make([]byte, 20+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:4], uint16(len(p)))
	binary.BigEndian.PutUint16(p[4:6], 0x1234)
	p[8], p[9] = ttl, proto
	copy(p[12:16], src[:])
	copy(p[16:20], dst[:])
	binary.BigEndian.PutUint16(p[10:12], checksum(p[:20]))
	copy(p[20:], payload)
	return p
}

func echoRequest(src, dst [4]byte, ttl byte) []byte {
	icmp := []byte{8, 0, 0, 0, 0, 1, 0, 1, 'h', 'e', 'l', 'l', 'o', '!', '!', '!', 'x', 'y'}
	binary.BigEndian.PutUint16(icmp[2:4], checksum(icmp))
	return ipPacket(src, dst, ipProtoICMP, ttl, icmp)
}

func TestParseIPv4(t *testing.T) {
	good := echoRequest([4]byte{10, 5, 1, 2}, [4]byte{10, 5, 2, 2}, 64)
	tests := []struct {
		name       string
		p          []byte
		ihl, total int
		ok         bool
	}{
		{"good", good, 20, len(good), true},
		{"trailing bytes", append(append([]byte{}, good...), 0, 0, 0), 20, len(good), true},
		{"short", good[:19], 0, 0, false},
		{"ipv6", append([]byte{0x60}, good[1:]...), 0, 0, false},
		{"ihl too small", append([]byte{0x44}, good[1:]...), 0, 0, false},
		{"total beyond data", good[:len(good)-1], 0, 0, false},
		{"total below header", func() []byte { p := append([]byte{}, good...); p[2], p[3] = 0, 10; return p }(), 0, 0, false},
	}
	for _, tc := range tests {
		ihl, total, ok := parseIPv4(tc.p)
		if ihl != tc.ihl || total != tc.total || ok != tc.ok {
			t.Errorf("%s: got %d %d %v, want %d %d %v", tc.name, ihl, total, ok, tc.ihl, tc.total, tc.ok)
		}
	}
}

func TestDecTTL(t *testing.T) {
	for _, ttl := range []byte{255, 64, 2, 1, 0} {
		p := echoRequest([4]byte{10, 5, 1, 2}, [4]byte{10, 5, 2, 2}, ttl)
		orig := append([]byte{}, p...)
		ok := decTTL(p)
		if ttl <= 1 {
			if ok || !bytes.Equal(p, orig) {
				t.Errorf("TTL %d: decTTL = %v and changed the packet; want false, unchanged", ttl, ok)
			}
			continue
		}
		if !ok || p[8] != ttl-1 {
			t.Errorf("TTL %d: got ok=%v TTL %d", ttl, ok, p[8])
		}
		if c := checksum(p[:20]); c != 0 {
			t.Errorf("TTL %d: header checksum does not verify after decrement (%#04x)", ttl, c)
		}
	}
}

// FuzzDecTTL checks the incremental checksum update against a full recomputation for
// arbitrary headers.
func FuzzDecTTL(f *testing.F) {
	f.Add(echoRequest([4]byte{10, 5, 1, 2}, [4]byte{10, 5, 2, 2}, 64)[:20])
	f.Add(make([]byte, 20))
	f.Fuzz(func(t *testing.T, h []byte) {
		if len(h) < 20 {
			return
		}
		h = append([]byte{}, h[:20]...)
		h[10], h[11] = 0, 0
		binary.BigEndian.PutUint16(h[10:12], checksum(h))
		ttl := h[8]
		if !decTTL(h) {
			if ttl > 1 {
				t.Fatalf("TTL %d refused", ttl)
			}
			return
		}
		if c := checksum(h); c != 0 {
			t.Fatalf("header % x does not verify after decrement", h)
		}
	})
}

func TestWantsUnreachable(t *testing.T) {
	src, dst := [4]byte{10, 5, 1, 2}, [4]byte{10, 5, 9, 9}
	frag := func(p []byte, v uint16) []byte { binary.BigEndian.PutUint16(p[6:8], v); return p }
	unreach := ipPacket(src, dst, ipProtoICMP, 64, []byte{3, 1, 0, 0, 0, 0, 0, 0})
	tests := []struct {
		name string
		p    []byte
		want bool
	}{
		{"echo request", echoRequest(src, dst, 64), true},
		{"udp", ipPacket(src, dst, 17, 64, make([]byte, 8)), true},
		{"first fragment", frag(ipPacket(src, dst, 17, 64, make([]byte, 8)), 0x2000), true},
		{"non-first fragment", frag(ipPacket(src, dst, 17, 64, make([]byte, 8)), 0x0010), false},
		{"icmp error", unreach, false},
		{"icmp time exceeded", ipPacket(src, dst, ipProtoICMP, 64, []byte{11, 0, 0, 0, 0, 0, 0, 0}), false},
		{"icmp without body", ipPacket(src, dst, ipProtoICMP, 64, nil), false},
		{"unspecified source", ipPacket([4]byte{}, dst, 17, 64, make([]byte, 8)), false},
		{"multicast source", ipPacket([4]byte{224, 0, 0, 1}, dst, 17, 64, make([]byte, 8)), false},
	}
	for _, tc := range tests {
		if got := wantsUnreachable(tc.p, 20); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestNetUnreachable(t *testing.T) {
	src, dst, tunIP := [4]byte{10, 5, 1, 2}, [4]byte{10, 5, 9, 9}, [4]byte{10, 5, 1, 0}
	for _, p := range [][]byte{echoRequest(src, dst, 64), ipPacket(src, dst, 17, 64, []byte{1, 2, 3})} {
		out := make([]byte, 200)
		n := netUnreachable(out, p, 20, len(p), tunIP)
		r := out[:n]
		ihl, total, ok := parseIPv4(r)
		if !ok || ihl != 20 || total != n {
			t.Fatalf("reply is not a valid IPv4 packet: % x", r)
		}
		if checksum(r[:20]) != 0 {
			t.Error("reply IP checksum does not verify")
		}
		if r[8] != icmpTTL || r[9] != ipProtoICMP || !bytes.Equal(r[12:16], tunIP[:]) || !bytes.Equal(r[16:20], src[:]) {
			t.Errorf("reply header % x: want TTL 8, ICMP, from %v to %v", r[:20], tunIP, src)
		}
		icmp := r[20:]
		if icmp[0] != 3 || icmp[1] != 0 || checksum(icmp) != 0 {
			t.Errorf("ICMP % x: want type 3 code 0 with a valid checksum", icmp[:8])
		}
		quote := min(len(p), 28)
		if !bytes.Equal(icmp[8:], p[:quote]) {
			t.Errorf("ICMP quotes % x, want % x", icmp[8:], p[:quote])
		}
	}
}

// FuzzPacketPath runs arbitrary bytes through what the TUN side does with a packet:
// parse, decide, answer or decrement. Nothing may panic, and whatever is produced must be
// a valid IPv4 packet.
func FuzzPacketPath(f *testing.F) {
	f.Add(echoRequest([4]byte{10, 5, 1, 2}, [4]byte{10, 5, 2, 2}, 64))
	f.Add([]byte{0x4f, 0, 0, 60})
	f.Fuzz(func(t *testing.T, p []byte) {
		ihl, total, ok := parseIPv4(p)
		if !ok {
			return
		}
		p = p[:total]
		if wantsUnreachable(p, ihl) {
			out := make([]byte, ipv4MinHeader+8+60+icmpQuote)
			n := netUnreachable(out, p, ihl, total, [4]byte{10, 5, 1, 0})
			if _, tot, ok := parseIPv4(out[:n]); !ok || tot != n || checksum(out[:20]) != 0 || checksum(out[20:n]) != 0 {
				t.Fatalf("invalid ICMP answer % x", out[:n])
			}
		}
		decTTL(p)
	})
}
