package subnet

import (
	"bytes"
	"cmp"
	"net/netip"
	"slices"
)

// leaseKey identifies a lease by its subnets without allocating: pointer-free, 36 bytes.
type leaseKey struct{ sn, sn6 pfxKey }

// pfxKey is a prefix in fixed-size form: kind 0 for the zero Prefix, else 4 or 6.
type pfxKey struct {
	a    [16]byte
	kind uint8
	bits uint8
}

func pfxKeyOf(p netip.Prefix) pfxKey {
	if !p.IsValid() {
		return pfxKey{}
	}
	k := pfxKey{a: p.Addr().As16(), kind: 6, bits: uint8(p.Bits())}
	if p.Addr().Is4() {
		k.kind = 4
	}
	return k
}

func (k pfxKey) prefix() netip.Prefix {
	switch k.kind {
	case 4:
		return netip.PrefixFrom(netip.AddrFrom16(k.a).Unmap(), int(k.bits))
	case 6:
		return netip.PrefixFrom(netip.AddrFrom16(k.a), int(k.bits))
	}
	return netip.Prefix{}
}

// compare orders as netip.Addr.Compare then Bits would, the zero prefix first.
func (k pfxKey) compare(o pfxKey) int {
	if c := cmp.Compare(k.kind, o.kind); c != 0 {
		return c
	}
	if c := bytes.Compare(k.a[:], o.a[:]); c != 0 {
		return c
	}
	return cmp.Compare(k.bits, o.bits)
}

// keyOfSubnets is the key of a lease with these subnets; an IPv4 /0 counts as none.
func keyOfSubnets(sn, sn6 netip.Prefix) leaseKey {
	if sn.IsValid() && sn.Bits() == 0 {
		sn = netip.Prefix{}
	}
	return leaseKey{pfxKeyOf(sn), pfxKeyOf(sn6)}
}

func keyOf(l *Lease) leaseKey { return keyOfSubnets(l.Subnet, l.IPv6Subnet) }

func (k leaseKey) compare(o leaseKey) int {
	if c := k.sn.compare(o.sn); c != 0 {
		return c
	}
	return k.sn6.compare(o.sn6)
}

// String is the subnet key (MakeSubnetKey).
func (k leaseKey) String() string { return MakeSubnetKey(k.sn.prefix(), k.sn6.prefix()) }

// sortCandidates orders cs by key, stably, moving each candidate once.
func sortCandidates(cs []Candidate) {
	sorted := true
	for i := 1; i < len(cs) && sorted; i++ {
		sorted = compareKeys(&cs[i-1].Lease, &cs[i].Lease) <= 0
	}
	if sorted {
		return
	}
	perm := make([]int32, len(cs))
	v4 := make([]uint64, len(cs)) // the IPv4 part of each key in one word: most compares end there
	for i := range perm {
		perm[i], v4[i] = int32(i), v4Order(&cs[i].Lease)
	}
	slices.SortFunc(perm, func(a, b int32) int {
		if c := cmp.Compare(v4[a], v4[b]); c != 0 {
			return c
		}
		if c := keyOf(&cs[a].Lease).compare(keyOf(&cs[b].Lease)); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	// Position i takes cs[perm[i]]: follow each cycle once, marking done positions.
	for i := range perm {
		if perm[i] < 0 || int(perm[i]) == i {
			continue
		}
		tmp := cs[i]
		j := i
		for {
			k := int(perm[j])
			perm[j] = -1
			if k == i {
				cs[j] = tmp
				break
			}
			cs[j] = cs[k]
			j = k
		}
	}
}

// compareKeys compares the keys of two leases, as keyOf(a).compare(keyOf(b)).
func compareKeys(a, b *Lease) int {
	if c := cmp.Compare(v4Order(a), v4Order(b)); c != 0 {
		return c
	}
	return keyOf(a).compare(keyOf(b))
}

// v4Order orders leases as the IPv4 part of their keys does: no IPv4 subnet first, then
// IPv4 subnets by address and length, then anything else (which the full key orders).
func v4Order(l *Lease) uint64 {
	switch sn := l.Subnet; {
	case !sn.IsValid() || sn.Bits() == 0:
		return 0
	case sn.Addr().Is4():
		a := sn.Addr().As4()
		return 1<<40 | uint64(a[0])<<32 | uint64(a[1])<<24 | uint64(a[2])<<16 | uint64(a[3])<<8 | uint64(sn.Bits())
	}
	return 2 << 40
}

// compareKeyAt compares the i-th lease's key with k without materialising the lease.
func (pl *PeerList) compareKeyAt(i int, k leaseKey) int {
	p := &pl.list[i]
	if p.flags&flagSubnet == 0 || p.bits == 0 {
		return keyOfSubnets(pl.subnet4(i), pl.subnet6(i)).compare(k)
	}
	if c := cmp.Compare(4, int(k.sn.kind)); c != 0 {
		return c
	}
	// An IPv4 key's address is the IPv4-mapped form: only its last 4 bytes differ.
	if c := bytes.Compare(p.sn[:], k.sn.a[12:]); c != 0 {
		return c
	}
	if c := cmp.Compare(p.bits, k.sn.bits); c != 0 {
		return c
	}
	var six pfxKey
	if p.ext != nil {
		six = pfxKeyOf(p.ext.sn6)
	}
	return six.compare(k.sn6)
}

// compareV4At compares the IPv4 part of the i-th lease's key with k (kind 4 or 0).
func (pl *PeerList) compareV4At(i int, k pfxKey) int {
	p := &pl.list[i]
	if p.flags&flagSubnet == 0 || p.bits == 0 {
		return keyOfSubnets(pl.subnet4(i), netip.Prefix{}).sn.compare(k)
	}
	if c := cmp.Compare(4, int(k.kind)); c != 0 {
		return c
	}
	if c := bytes.Compare(p.sn[:], k.a[12:]); c != 0 {
		return c
	}
	return cmp.Compare(p.bits, k.bits)
}
