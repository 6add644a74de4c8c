package daemon

import (
	"sort"

	"github.com/flannel-go/flannel/subnet"
)

// leaseSet is the daemon's view of the peer leases: the latest snapshot with the
// events since applied. The node's own lease is never part of it.
type leaseSet struct {
	own    string // own subnet key
	leases map[string]subnet.Lease
	synced bool   // a snapshot has been applied
	gen    uint64 // incremented whenever apply changes the peer set
}

func newLeaseSet(ownKey string) *leaseSet {
	return &leaseSet{own: ownKey, leases: map[string]subnet.Lease{}}
}

// apply folds one watch result in and reports whether the peer set changed.
func (s *leaseSet) apply(r subnet.WatchResult) (changed bool) {
	defer func() {
		if changed {
			s.gen++
		}
	}()
	if r.IsSnapshot() {
		next := make(map[string]subnet.Lease, len(r.Snapshot))
		for _, l := range r.Snapshot {
			if k := l.Key(); k != s.own {
				next[k] = l
			}
		}
		changed = !s.synced || !sameLeases(s.leases, next)
		s.leases, s.synced = next, true
		return changed
	}
	for _, ev := range r.Events {
		k := ev.Lease.Key()
		if k == s.own {
			continue
		}
		switch ev.Type {
		case subnet.EventAdded:
			if old, ok := s.leases[k]; !ok || !sameLease(old, ev.Lease) {
				s.leases[k] = ev.Lease
				changed = true
			}
		case subnet.EventRemoved:
			if _, ok := s.leases[k]; ok {
				delete(s.leases, k)
				changed = true
			}
		}
	}
	return changed
}

// peers returns the peer leases ordered by key (stable input for the backend).
func (s *leaseSet) peers() []subnet.Lease {
	keys := make([]string, 0, len(s.leases))
	for k := range s.leases {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]subnet.Lease, len(keys))
	for i, k := range keys {
		out[i] = s.leases[k]
	}
	return out
}

func sameLeases(a, b map[string]subnet.Lease) bool {
	if len(a) != len(b) {
		return false
	}
	for k, la := range a {
		lb, ok := b[k]
		if !ok || !sameLease(la, lb) {
			return false
		}
	}
	return true
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
