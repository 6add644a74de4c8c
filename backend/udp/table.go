package udp

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"

	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

// peer is where packets for one peer subnet go.
type peer struct {
	Subnet  netip.Prefix
	Dst     netip.AddrPort // the peer's PublicIP and our port (upstream assumes equal ports)
	Key     string         // the lease's subnet key
	addr    *net.UDPAddr   // Dst, prebuilt for the send path
	refused atomic.Int32   // errno of a refused send since Reconcile last looked (0: none)
}

// table maps destinations to peers and senders' PublicIPs to their leased subnets, both in
// O(1) of the peer count; it is immutable once built and swapped whole.
type table struct {
	lens  []int // distinct prefix lengths, longest first
	peers map[uint64]*peer
	from  map[uint32][]net4
}

// net4 is an IPv4 subnet as numbers: an address a lies inside when a&mask == addr.
type net4 struct{ addr, mask uint32 }

func prefixMask(bits int) uint32 {
	if bits <= 0 {
		return 0
	}
	return ^uint32(0) << (32 - bits)
}

func net4Of(p netip.Prefix) net4 {
	m := prefixMask(p.Bits())
	return net4{addr4(p.Addr()) & m, m}
}

func (n net4) contains(a uint32) bool { return a&n.mask == n.addr }

func addr4(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func tableKey(bits int, addr uint32) uint64 {
	return uint64(bits)<<32 | uint64(addr&prefixMask(bits))
}

// lookup returns the peer whose subnet holds the IPv4 address dst, or nil.
func (t *table) lookup(dst uint32) *peer {
	if t == nil {
		return nil
	}
	for _, l := range t.lens {
		if p := t.peers[tableKey(l, dst)]; p != nil {
			return p
		}
	}
	return nil
}

// senders returns the subnets leased with PublicIP src, and whether src is a peer's.
func (t *table) senders(src uint32) ([]net4, bool) {
	if t == nil {
		return nil, false
	}
	n, ok := t.from[src]
	return n, ok
}

func (t *table) len() int {
	if t == nil {
		return 0
	}
	return len(t.peers)
}

// problem is a peer lease that cannot be used, for logging.
type problem struct {
	Peer   string
	Reason string
	Skip   string // observe.SkippedOtherBackend for a sound lease of another backend
}

// buildTable computes the peer table from the leases without BackendType that have a
// public address and an IPv4 subnet inside network other than own; others are problems.
func buildTable(peers subnet.Peers, network, own netip.Prefix, port int) (*table, []problem) {
	t := &table{peers: make(map[uint64]*peer, peers.Len()), from: make(map[uint32][]net4, peers.Len())}
	var probs []problem
	for l := range peers.All() {
		if l.Attrs.BackendType != "" {
			probs = append(probs, problem{Peer: l.Key(), Reason: fmt.Sprintf("backend type %q is not udp (udp leases carry no BackendType)", l.Attrs.BackendType),
				Skip: observe.SkippedOtherBackend})
			continue
		}
		sn := l.Subnet
		if !sn.IsValid() || !sn.Addr().Is4() {
			probs = append(probs, problem{Peer: l.Key(), Reason: "no IPv4 subnet"})
			continue
		}
		sn = sn.Masked()
		if sn == own {
			continue
		}
		if !network.Contains(sn.Addr()) || sn.Bits() < network.Bits() {
			probs = append(probs, problem{Peer: l.Key(), Reason: fmt.Sprintf("subnet %s is outside the network %s", sn, network)})
			continue
		}
		pub := l.Attrs.PublicIP
		if !pub.IsValid() || !pub.Is4() || pub.IsUnspecified() {
			probs = append(probs, problem{Peer: l.Key(), Reason: "no IPv4 public address"})
			continue
		}
		k := tableKey(sn.Bits(), addr4(sn.Addr()))
		if _, dup := t.peers[k]; dup {
			probs = append(probs, problem{Peer: l.Key(), Reason: fmt.Sprintf("subnet %s is leased twice; using the first lease", sn)})
			continue
		}
		dst := netip.AddrPortFrom(pub, uint16(port))
		t.peers[k] = &peer{Subnet: sn, Dst: dst, Key: l.Key(), addr: net.UDPAddrFromAddrPort(dst)}
		t.from[addr4(pub)] = append(t.from[addr4(pub)], net4Of(sn))
		if !slices.Contains(t.lens, sn.Bits()) {
			t.lens = append(t.lens, sn.Bits())
		}
	}
	slices.SortFunc(t.lens, func(a, b int) int { return b - a })
	return t, probs
}
