// Package ip steps, offsets and compares subnets of both families on top of net/netip.
package ip

import (
	"encoding/binary"
	"net/netip"
)

// uint128 is an address as a 128-bit number (IPv4 addresses use only lo).
type uint128 struct{ hi, lo uint64 }

func toU128(a netip.Addr) uint128 {
	if a.Is4() {
		b := a.As4()
		return uint128{lo: uint64(binary.BigEndian.Uint32(b[:]))}
	}
	b := a.As16()
	return uint128{hi: binary.BigEndian.Uint64(b[:8]), lo: binary.BigEndian.Uint64(b[8:])}
}

func fromU128(v uint128, is4 bool) netip.Addr {
	if is4 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(v.lo))
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], v.hi)
	binary.BigEndian.PutUint64(b[8:], v.lo)
	return netip.AddrFrom16(b)
}

func (v uint128) add(w uint128) (uint128, bool) {
	lo := v.lo + w.lo
	carry := uint64(0)
	if lo < v.lo {
		carry = 1
	}
	hi := v.hi + w.hi + carry
	overflow := hi < v.hi || (hi == v.hi && carry == 1 && w.hi == ^uint64(0))
	return uint128{hi, lo}, overflow
}

func (v uint128) sub(w uint128) uint128 {
	lo := v.lo - w.lo
	borrow := uint64(0)
	if v.lo < w.lo {
		borrow = 1
	}
	return uint128{v.hi - w.hi - borrow, lo}
}

func (v uint128) less(w uint128) bool {
	return v.hi < w.hi || (v.hi == w.hi && v.lo < w.lo)
}

func blockSize(bits, prefixLen int) uint128 {
	shift := bits - prefixLen
	switch {
	case shift >= 128:
		return uint128{}
	case shift >= 64:
		return uint128{hi: 1 << (shift - 64)}
	default:
		return uint128{lo: 1 << shift}
	}
}

// AddSubnets returns a + n*2^(bits-prefixLen); ok is false outside the family's range.
func AddSubnets(a netip.Addr, prefixLen int, n int64) (netip.Addr, bool) {
	bits := a.BitLen()
	step := blockSize(bits, prefixLen)
	v := toU128(a)
	neg := n < 0
	if neg {
		n = -n
	}
	for i := int64(0); i < n; i++ {
		if neg {
			if v.less(step) {
				return netip.Addr{}, false
			}
			v = v.sub(step)
			continue
		}
		var over bool
		v, over = v.add(step)
		if over || (bits == 32 && v.lo > 0xffffffff) {
			return netip.Addr{}, false
		}
	}
	return fromU128(v, a.Is4()), true
}

// NextSubnet returns the subnet of the same length directly after p.
func NextSubnet(p netip.Prefix) (netip.Prefix, bool) {
	a, ok := AddSubnets(p.Masked().Addr(), p.Bits(), 1)
	if !ok {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, p.Bits()), true
}

// LastSubnet returns the last subnet of length subnetLen (>= network's) in network.
func LastSubnet(network netip.Prefix, subnetLen int) netip.Prefix {
	base := network.Masked().Addr()
	bits := base.BitLen()
	// modulo 2^128, so that an IPv6 /0 works too
	span := blockSize(bits, network.Bits()).sub(blockSize(bits, subnetLen))
	v, _ := toU128(base).add(span)
	return netip.PrefixFrom(fromU128(v, base.Is4()), subnetLen)
}

// OnBoundary reports whether a is the network address of a subnet of length prefixLen.
func OnBoundary(a netip.Addr, prefixLen int) bool {
	p, err := a.Prefix(prefixLen)
	return err == nil && p.Addr() == a
}

// FirstHost returns the network address plus one with p's length (FLANNEL_SUBNET's form).
func FirstHost(p netip.Prefix) netip.Prefix {
	a := p.Masked().Addr().Next()
	return netip.PrefixFrom(a, p.Bits())
}
