package daemon

import (
	"bytes"
	"cmp"
	"net/netip"
	"slices"
	"sort"

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
// The leases are stored once, in compact form (subnet.PeerList: 56 bytes per IPv4 lease
// and its backend data, where a subnet.Lease takes 208), ordered by key: a lookup is a
// binary search, so the set needs no index beside it (a map of 20,000 keys would add
// 1.5 MB), and peers() hands out a view of the storage instead of a copy per reconcile.
type leaseSet struct {
	own    leaseKey
	list   subnet.PeerList // ordered by keyOf, one lease per key
	synced bool            // a snapshot has been applied
	gen    uint64          // incremented whenever apply changes the peer set
}

func newLeaseSet(ownKey string) *leaseSet {
	s := &leaseSet{}
	if sn, sn6, err := subnet.ParseSubnetKey(ownKey); err == nil {
		s.own = leaseKey{pfxKeyOf(sn), pfxKeyOf(sn6)}
	}
	return s
}

// keyAt is the key of the i-th lease.
func (s *leaseSet) keyAt(i int) leaseKey {
	l := s.list.At(i)
	return keyOf(&l)
}

// find returns the position of the lease with key k, or where it would go.
func (s *leaseSet) find(k leaseKey) (int, bool) {
	i := sort.Search(s.list.Len(), func(i int) bool { return s.keyAt(i).compare(k) >= 0 })
	return i, i < s.list.Len() && s.keyAt(i) == k
}

// apply folds one watch result in and reports whether the peer set changed. The set
// keeps nothing of r: it stores compact copies.
func (s *leaseSet) apply(r subnet.WatchResult) (changed bool) {
	if r.IsSnapshot() {
		changed = s.applySnapshot(r.Snapshot)
	} else {
		changed = s.applyEvents(r.Events)
	}
	if changed {
		s.gen++
	}
	return changed
}

// applyEvents applies a batch of events: the last event about a key decides. Changed
// leases are replaced in place; removals and additions cost one pass over the list each.
func (s *leaseSet) applyEvents(evs []subnet.Event) (changed bool) {
	last := make(map[leaseKey]int, len(evs))
	for i := range evs {
		if k := keyOf(&evs[i].Lease); k != s.own {
			last[k] = i
		}
	}
	var gone []int           // positions to remove
	var added []subnet.Lease // new keys
	for k, i := range last {
		ev := &evs[i]
		pos, ok := s.find(k)
		switch {
		case ev.Type == subnet.EventRemoved && ok:
			gone = append(gone, pos)
		case ev.Type == subnet.EventAdded && !ok:
			added = append(added, ev.Lease)
		case ev.Type == subnet.EventAdded && !subnet.SamePeer(s.list.At(pos), ev.Lease):
			s.list.Set(pos, ev.Lease)
			changed = true
		}
	}
	if len(gone) > 0 {
		slices.Sort(gone)
		s.list.Delete(gone)
		changed = true
	}
	if len(added) > 0 {
		sortLeases(added)
		at := make([]int, len(added))
		for j := range added {
			at[j], _ = s.find(keyOf(&added[j])) // ascending, as added is ordered
		}
		s.list.Insert(at, added)
		changed = true
	}
	return changed
}

// applySnapshot replaces the set by the snapshot (ordered in place, own lease and
// duplicates dropped) unless it holds the same peers.
func (s *leaseSet) applySnapshot(snap []subnet.Lease) bool {
	sortLeases(snap)
	// Drop the own lease and duplicates (the first in the snapshot's order wins).
	next := snap[:0]
	for i := range snap {
		k := keyOf(&snap[i])
		if k == s.own || (len(next) > 0 && keyOf(&next[len(next)-1]) == k) {
			continue
		}
		next = append(next, snap[i])
	}
	if s.synced && s.same(next) {
		return false
	}
	s.list.Reset(next)
	s.synced = true
	return true
}

// same reports whether the set holds exactly the peers ls (in order).
func (s *leaseSet) same(ls []subnet.Lease) bool {
	if len(ls) != s.list.Len() {
		return false
	}
	for i := range ls {
		if !subnet.SamePeer(s.list.At(i), ls[i]) {
			return false
		}
	}
	return true
}

// sortLeases orders ls by key; of leases with the same key, the earlier stays first.
// It sorts positions, then moves each lease once: a 20,000-lease snapshot is not
// shuffled around by the sort itself.
func sortLeases(ls []subnet.Lease) {
	if slices.IsSortedFunc(ls, func(a, b subnet.Lease) int { return keyOf(&a).compare(keyOf(&b)) }) {
		return
	}
	perm := make([]int32, len(ls))
	for i := range perm {
		perm[i] = int32(i)
	}
	slices.SortFunc(perm, func(a, b int32) int {
		if c := keyOf(&ls[a]).compare(keyOf(&ls[b])); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	// Position i takes ls[perm[i]]: follow each cycle once, marking done positions.
	for i := range perm {
		if perm[i] < 0 || int(perm[i]) == i {
			continue
		}
		tmp := ls[i]
		j := i
		for {
			k := int(perm[j])
			perm[j] = -1
			if k == i {
				ls[j] = tmp
				break
			}
			ls[j] = ls[k]
			j = k
		}
	}
}

// peers returns the peer leases ordered by subnets (stable input for the backend). It
// is a view of the set's own storage: valid until the next apply.
func (s *leaseSet) peers() subnet.Peers { return s.list.Peers() }
