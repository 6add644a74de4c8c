package udp

import "encoding/binary"

// IPv4 header layout.
const (
	ipv4MinHeader = 20
	ipProtoICMP   = 1
	icmpQuote     = 8 // payload bytes an ICMP error quotes after the IP header (RFC 792)
	icmpTTL       = 8 // as upstream's proxy
)

// parseIPv4 checks p's IPv4 header and returns its length and the total (≤ len(p)).
func parseIPv4(p []byte) (ihl, total int, ok bool) {
	if len(p) < ipv4MinHeader || p[0]>>4 != 4 {
		return 0, 0, false
	}
	ihl = int(p[0]&0x0f) * 4
	total = int(binary.BigEndian.Uint16(p[2:4]))
	if ihl < ipv4MinHeader || total < ihl || total > len(p) {
		return 0, 0, false
	}
	return ihl, total, true
}

func srcKey(p []byte) uint32 { return binary.BigEndian.Uint32(p[12:16]) }

func dstKey(p []byte) uint32 { return binary.BigEndian.Uint32(p[16:20]) }

// decTTL decrements p's TTL and patches the checksum (RFC 1624); false, changing nothing,
// when the TTL would reach 0.
func decTTL(p []byte) bool {
	if p[8] <= 1 {
		return false
	}
	old := binary.BigEndian.Uint16(p[8:10]) // TTL and protocol
	p[8]--
	updated := binary.BigEndian.Uint16(p[8:10])
	hc := binary.BigEndian.Uint16(p[10:12])
	sum := uint32(^hc) + uint32(^old) + uint32(updated)
	sum = (sum & 0xffff) + (sum >> 16)
	sum = (sum & 0xffff) + (sum >> 16)
	binary.BigEndian.PutUint16(p[10:12], ^uint16(sum))
	return true
}

// checksum is the Internet checksum (RFC 1071) of b.
func checksum(b []byte) uint16 {
	var sum uint32
	for len(b) >= 2 {
		sum += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum>>16 != 0 {
		sum = (sum & 0xffff) + (sum >> 16)
	}
	return ^uint16(sum)
}

// wantsUnreachable reports whether an undeliverable packet deserves an ICMP error: not a
// non-first fragment, an ICMP error (RFC 1122 3.2.2) or from a source that cannot receive it.
func wantsUnreachable(p []byte, ihl int) bool {
	if binary.BigEndian.Uint16(p[6:8])&0x1fff != 0 {
		return false
	}
	if src := p[12]; src == 0 || src >= 224 {
		return false
	}
	if p[9] == ipProtoICMP {
		if len(p) <= ihl {
			return false
		}
		switch p[ihl] { // ICMP type
		case 3, 4, 5, 11, 12: // unreachable, source quench, redirect, time exceeded, parameter problem
			return false
		}
	}
	return true
}

// netUnreachable writes into out (96 bytes or more) an ICMP net unreachable from src
// answering p and returns its length.
func netUnreachable(out []byte, p []byte, ihl, total int, src [4]byte) int {
	quote := min(total, ihl+icmpQuote)
	n := ipv4MinHeader + 8 + quote
	h := out[:ipv4MinHeader]
	h[0] = 0x45
	h[1] = 0
	binary.BigEndian.PutUint16(h[2:4], uint16(n))
	binary.BigEndian.PutUint32(h[4:8], 0) // id, flags, fragment offset
	h[8] = icmpTTL
	h[9] = ipProtoICMP
	h[10], h[11] = 0, 0
	copy(h[12:16], src[:])
	copy(h[16:20], p[12:16]) // back to the sender
	binary.BigEndian.PutUint16(h[10:12], checksum(h))
	icmp := out[ipv4MinHeader:n]
	icmp[0], icmp[1] = 3, 0 // destination unreachable, net unreachable
	icmp[2], icmp[3] = 0, 0
	binary.BigEndian.PutUint32(icmp[4:8], 0)
	copy(icmp[8:], p[:quote])
	binary.BigEndian.PutUint16(icmp[2:4], checksum(icmp))
	return n
}
