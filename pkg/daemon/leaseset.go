package daemon

import (
	"bytes"
	"cmp"
	"net/netip"
	"slices"

	"github.com/flannel-go/flannel/subnet"
)

// leaseKey identifies a lease by its subnets, as its subnet key string does, without
// allocating that string. It is pointer-free and 36 bytes (two netip.Prefix values hold
// pointers and take 64), which matters for the index of a 20,000-lease set.
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

// compare orders as netip.Addr.Compare then Bits would: the zero prefix first, then
// IPv4, then IPv6, by address, then by length.
func (k pfxKey) compare(o pfxKey) int {
	if c := cmp.Compare(k.kind, o.kind); c != 0 {
		return c
	}
	if c := bytes.Compare(k.a[:], o.a[:]); c != 0 {
		return c
	}
	return cmp.Compare(k.bits, o.bits)
}

func keyOf(l *subnet.Lease) leaseKey {
	sn := l.Subnet
	if sn.IsValid() && sn.Bits() == 0 {
		sn = netip.Prefix{} // written "0.0.0.0-0" in a key, as a missing IPv4 subnet is
	}
	return leaseKey{pfxKeyOf(sn), pfxKeyOf(l.IPv6Subnet)}
}

func (k leaseKey) compare(o leaseKey) int {
	if c := k.sn.compare(o.sn); c != 0 {
		return c
	}
	return k.sn6.compare(o.sn6)
}

// leaseSet is the daemon's view of the peer leases: the latest snapshot with the
// events since applied. The node's own lease is never part of it.
//
// The leases are stored once, in list (ordered by subnets when sorted is set), with idx
// giving each lease's position: a 20,000-peer set costs about 6 MB, and peers() hands
// out list itself instead of a copy per reconcile.
type leaseSet struct {
	own    leaseKey
	list   []subnet.Lease
	idx    map[leaseKey]int32
	sorted bool
	synced bool   // a snapshot has been applied
	gen    uint64 // incremented whenever apply changes the peer set
}

func newLeaseSet(ownKey string) *leaseSet {
	s := &leaseSet{idx: map[leaseKey]int32{}, sorted: true}
	if sn, sn6, err := subnet.ParseSubnetKey(ownKey); err == nil {
		s.own = leaseKey{pfxKeyOf(sn), pfxKeyOf(sn6)}
	}
	return s
}

// apply folds one watch result in and reports whether the peer set changed. It keeps
// the snapshot slice of r as its storage.
func (s *leaseSet) apply(r subnet.WatchResult) (changed bool) {
	defer func() {
		if changed {
			s.gen++
		}
	}()
	if r.IsSnapshot() {
		return s.applySnapshot(r.Snapshot)
	}
	for i := range r.Events {
		ev := &r.Events[i]
		k := keyOf(&ev.Lease)
		if k == s.own {
			continue
		}
		pos, ok := s.idx[k]
		switch ev.Type {
		case subnet.EventAdded:
			switch {
			case !ok:
				s.idx[k] = int32(len(s.list))
				s.list = append(s.list, ev.Lease)
				s.sorted = false
				changed = true
			case !sameLease(s.list[pos], ev.Lease):
				s.list[pos] = ev.Lease
				changed = true
			}
		case subnet.EventRemoved:
			if !ok {
				continue
			}
			last := int32(len(s.list) - 1)
			if pos != last {
				s.list[pos] = s.list[last]
				s.idx[keyOf(&s.list[pos])] = pos
				s.sorted = false
			}
			s.list[last] = subnet.Lease{} // drop references
			s.list = s.list[:last]
			delete(s.idx, k)
			changed = true
		}
	}
	return changed
}

func (s *leaseSet) applySnapshot(snap []subnet.Lease) bool {
	// Drop the own lease and duplicates (the first wins, as a map would keep one).
	next := snap[:0]
	seen := make(map[leaseKey]int32, len(snap))
	same := s.synced
	for i := range snap {
		k := keyOf(&snap[i])
		if k == s.own {
			continue
		}
		if _, dup := seen[k]; dup {
			continue
		}
		seen[k] = int32(len(next))
		if same {
			pos, ok := s.idx[k]
			same = ok && sameLease(s.list[pos], snap[i])
		}
		next = append(next, snap[i])
	}
	if same && len(next) == len(s.list) {
		return false
	}
	clear(snap[len(next):]) // drop references beyond the kept ones
	s.list, s.idx, s.sorted, s.synced = next, seen, false, true
	return true
}

// peers returns the peer leases ordered by subnets (stable input for the backend). The
// slice is the set's own storage: valid until the next apply, not to be modified.
func (s *leaseSet) peers() []subnet.Lease {
	if !s.sorted {
		slices.SortFunc(s.list, func(a, b subnet.Lease) int { return keyOf(&a).compare(keyOf(&b)) })
		for i := range s.list {
			s.idx[keyOf(&s.list[i])] = int32(i)
		}
		s.sorted = true
	}
	return s.list
}

// sameLease compares what the data plane depends on (not the expiration).
func sameLease(a, b subnet.Lease) bool {
	return a.Subnet == b.Subnet && a.IPv6Subnet == b.IPv6Subnet &&
		a.EnableIPv4 == b.EnableIPv4 && a.EnableIPv6 == b.EnableIPv6 &&
		a.Attrs.PublicIP == b.Attrs.PublicIP && a.Attrs.PublicIPv6 == b.Attrs.PublicIPv6 &&
		a.Attrs.BackendType == b.Attrs.BackendType &&
		string(a.Attrs.BackendData) == string(b.Attrs.BackendData) &&
		string(a.Attrs.BackendV6Data) == string(b.Attrs.BackendV6Data)
}
