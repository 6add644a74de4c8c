package subnet

import (
	"iter"
	"net/netip"
	"unsafe"
)

// Peers is an ordered, read-only view of peer leases in compact form (56 bytes for an IPv4
// lease): the set the daemon hands a backend. It is valid until its owner's PeerList changes,
// between reconcile rounds; do not keep it, or a Lease's backend data, across rounds.
type Peers struct{ list []peer }

// PeersOf copies the leases, in order, into a Peers collection.
func PeersOf(ls ...Lease) Peers {
	var pl PeerList
	pl.Reset(ls)
	return pl.Peers()
}

// Len is the number of peers.
func (p Peers) Len() int { return len(p.list) }

// At materialises the i-th lease without allocating: no Expiration, backend data shared read-only.
func (p Peers) At(i int) Lease { return p.list[i].lease() }

// All yields the leases in order, as At materialises them.
func (p Peers) All() iter.Seq[Lease] {
	return func(yield func(Lease) bool) {
		for i := range p.list {
			if !yield(p.list[i].lease()) {
				return
			}
		}
	}
}

// Leases returns a copy of the leases (it allocates).
func (p Peers) Leases() []Lease {
	out := make([]Lease, len(p.list))
	for i := range p.list {
		out[i] = p.list[i].lease()
		out[i].Attrs.BackendData = cloneRaw(out[i].Attrs.BackendData)
		out[i].Attrs.BackendV6Data = cloneRaw(out[i].Attrs.BackendV6Data)
	}
	return out
}

func cloneRaw(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}

// PeerList is the mutable storage behind Peers views, for its one owner. Earlier views see
// its changes, so the owner changes it only while no view is being read.
type PeerList struct{ list []peer }

// Peers returns a read-only view of the list (no copy).
func (pl *PeerList) Peers() Peers { return Peers{pl.list} }

// Len is the number of leases.
func (pl *PeerList) Len() int { return len(pl.list) }

// At materialises the i-th lease, as Peers.At.
func (pl *PeerList) At(i int) Lease { return pl.list[i].lease() }

// Set replaces the i-th lease.
func (pl *PeerList) Set(i int, l Lease) { pl.list[i] = compactPeer(&l) }

// Reset replaces the list by ls, reusing the storage unless it is over twice the size needed.
func (pl *PeerList) Reset(ls []Lease) {
	pl.resetWith(len(ls), func(i int) *Lease { return &ls[i] })
}

// resetWith is Reset for n leases given by at.
func (pl *PeerList) resetWith(n int, at func(i int) *Lease) {
	if c := cap(pl.list); c < n || (c > 2*n && c > 1024) {
		pl.list = make([]peer, n)
	} else {
		if len(pl.list) > n {
			clear(pl.list[n:]) // drop references beyond the kept ones
		}
		pl.list = pl.list[:n]
	}
	for i := range n {
		pl.list[i] = compactPeer(at(i))
	}
}

// Delete removes the leases at the ascending, distinct positions at, in one pass.
func (pl *PeerList) Delete(at []int) {
	if len(at) == 0 {
		return
	}
	w, g := at[0], 0
	for i := at[0]; i < len(pl.list); i++ {
		if g < len(at) && at[g] == i {
			g++
			continue
		}
		pl.list[w] = pl.list[i]
		w++
	}
	clear(pl.list[w:]) // drop references
	pl.list = pl.list[:w]
}

// Insert inserts ls[j] before the lease now at at[j] (len: the end); at must be ascending.
func (pl *PeerList) Insert(at []int, ls []Lease) {
	if len(at) != len(ls) {
		panic("subnet: PeerList.Insert: positions and leases differ in number")
	}
	pl.insertWith(at, func(j int) *Lease { return &ls[j] })
}

// insertWith is Insert for the leases given by lease, one per position.
func (pl *PeerList) insertWith(at []int, lease func(j int) *Lease) {
	if len(at) == 0 {
		return
	}
	n := len(pl.list)
	if cap(pl.list) < n+len(at) {
		grown := make([]peer, n, n+len(at)+n/8)
		copy(grown, pl.list)
		pl.list = grown
	}
	pl.list = pl.list[:n+len(at)]
	i, j := n-1, len(at)-1
	for w := len(pl.list) - 1; j >= 0; w-- {
		if i >= at[j] {
			pl.list[w] = pl.list[i]
			i--
		} else {
			pl.list[w] = compactPeer(lease(j))
			j--
		}
	}
}

// subnet4 is the i-th lease's Subnet if it is IPv4 (else zero), read without materialising it.
func (pl *PeerList) subnet4(i int) netip.Prefix {
	p := &pl.list[i]
	if p.flags&flagSubnet == 0 {
		if p.ext != nil {
			return p.ext.sn
		}
		return netip.Prefix{}
	}
	return netip.PrefixFrom(netip.AddrFrom4(p.sn), int(p.bits))
}

func (pl *PeerList) subnet6(i int) netip.Prefix {
	if x := pl.list[i].ext; x != nil {
		return x.sn6
	}
	return netip.Prefix{}
}

// peer is a lease in compact form: IPv4 parts inline, IPv6 or unusual ones in ext (nil if none).
type peer struct {
	typ   string   // Attrs.BackendType, interned when well known
	data  string   // Attrs.BackendData
	ext   *peerExt // nil when all of the rest is zero
	sn    [4]byte  // Subnet's address when flagSubnet
	pub   [4]byte  // Attrs.PublicIP when flagPublicIP
	bits  uint8    // Subnet's length when flagSubnet
	flags uint8
}

const (
	flagEnableIPv4 = 1 << iota
	flagEnableIPv6
	flagSubnet   // Subnet is a valid IPv4 prefix, in sn and bits
	flagPublicIP // Attrs.PublicIP is an IPv4 address, in pub
)

// peerExt holds the parts of a lease that are absent from IPv4-only leases.
type peerExt struct {
	sn6   netip.Prefix // IPv6Subnet
	pub6  netip.Addr   // Attrs.PublicIPv6
	data6 string       // Attrs.BackendV6Data
	// sn and pub hold a Subnet and PublicIP that are not plain IPv4, so round trips are exact.
	sn  netip.Prefix
	pub netip.Addr
}

// compactPeer converts a lease. It copies the backend data.
func compactPeer(l *Lease) peer {
	p := peer{typ: InternBackendType(l.Attrs.BackendType), data: string(l.Attrs.BackendData)}
	if l.EnableIPv4 {
		p.flags |= flagEnableIPv4
	}
	if l.EnableIPv6 {
		p.flags |= flagEnableIPv6
	}
	var x peerExt
	switch sn := l.Subnet; {
	case sn.IsValid() && sn.Addr().Is4():
		p.sn, p.bits, p.flags = sn.Addr().As4(), uint8(sn.Bits()), p.flags|flagSubnet
	case sn != netip.Prefix{}:
		x.sn = sn
	}
	switch a := l.Attrs.PublicIP; {
	case a.Is4():
		p.pub, p.flags = a.As4(), p.flags|flagPublicIP
	case a != netip.Addr{}:
		x.pub = a
	}
	x.sn6, x.pub6, x.data6 = l.IPv6Subnet, l.Attrs.PublicIPv6, string(l.Attrs.BackendV6Data)
	if x != (peerExt{}) {
		p.ext = &x
	}
	return p
}

// lease materialises the lease. It does not allocate: the backend data share p's strings.
func (p *peer) lease() Lease {
	l := Lease{
		EnableIPv4: p.flags&flagEnableIPv4 != 0,
		EnableIPv6: p.flags&flagEnableIPv6 != 0,
		Attrs:      LeaseAttrs{BackendType: p.typ, BackendData: rawOf(p.data)},
	}
	if p.flags&flagSubnet != 0 {
		l.Subnet = netip.PrefixFrom(netip.AddrFrom4(p.sn), int(p.bits))
	}
	if p.flags&flagPublicIP != 0 {
		l.Attrs.PublicIP = netip.AddrFrom4(p.pub)
	}
	if x := p.ext; x != nil {
		if p.flags&flagSubnet == 0 {
			l.Subnet = x.sn
		}
		if p.flags&flagPublicIP == 0 {
			l.Attrs.PublicIP = x.pub
		}
		l.IPv6Subnet, l.Attrs.PublicIPv6, l.Attrs.BackendV6Data = x.sn6, x.pub6, rawOf(x.data6)
	}
	return l
}

// rawOf returns s's bytes without copying (nil for ""); they must not be modified.
func rawOf(s string) []byte {
	if s == "" {
		return nil
	}
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

// InternBackendType returns a shared constant for known backend types, so leases share one string.
func InternBackendType(s string) string {
	for _, k := range [...]string{"vxlan", "host-gw", "udp", "ipip", "wireguard", "ipsec", "extension", "alloc", "tencent-vpc"} {
		if s == k {
			return k
		}
	}
	return s
}
