package daemon

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/flannel-go/flannel/subnet"
)

func lease(sn, pub, mac string) subnet.Lease {
	return subnet.Lease{EnableIPv4: true, Subnet: netip.MustParsePrefix(sn), Attrs: subnet.LeaseAttrs{
		PublicIP: netip.MustParseAddr(pub), BackendType: "vxlan",
		BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"` + mac + `"}`)}}
}

func keys(p subnet.Peers) []string {
	var out []string
	for l := range p.All() {
		out = append(out, l.Key())
	}
	return out
}

func TestLeaseSet(t *testing.T) {
	own := lease("10.5.1.0/24", "192.0.2.11", "aa:aa:aa:aa:aa:01")
	a := lease("10.5.2.0/24", "192.0.2.12", "aa:aa:aa:aa:aa:02")
	b := lease("10.5.3.0/24", "192.0.2.13", "aa:aa:aa:aa:aa:03")
	b2 := lease("10.5.3.0/24", "192.0.2.13", "aa:aa:aa:aa:aa:33")
	s := newLeaseSet(own.Key())

	steps := []struct {
		name    string
		in      subnet.WatchResult
		changed bool
		want    []string
	}{
		{"empty first snapshot still counts as a change (sync)", subnet.WatchResult{Snapshot: []subnet.Lease{}}, true, nil},
		{"snapshot with own lease", subnet.WatchResult{Snapshot: []subnet.Lease{own, a}}, true, []string{"10.5.2.0-24"}},
		{"same snapshot again", subnet.WatchResult{Snapshot: []subnet.Lease{a, own}}, false, []string{"10.5.2.0-24"}},
		{"add b", subnet.WatchResult{Events: []subnet.Event{{Type: subnet.EventAdded, Lease: b}}}, true, []string{"10.5.2.0-24", "10.5.3.0-24"}},
		{"re-add b unchanged (renewal)", subnet.WatchResult{Events: []subnet.Event{{Type: subnet.EventAdded, Lease: b}}}, false, []string{"10.5.2.0-24", "10.5.3.0-24"}},
		{"b changes MAC", subnet.WatchResult{Events: []subnet.Event{{Type: subnet.EventAdded, Lease: b2}}}, true, []string{"10.5.2.0-24", "10.5.3.0-24"}},
		{"own lease events ignored", subnet.WatchResult{Events: []subnet.Event{{Type: subnet.EventRemoved, Lease: own}}}, false, []string{"10.5.2.0-24", "10.5.3.0-24"}},
		{"remove a", subnet.WatchResult{Events: []subnet.Event{{Type: subnet.EventRemoved, Lease: subnet.Lease{Subnet: a.Subnet}}}}, true, []string{"10.5.3.0-24"}},
		{"remove unknown", subnet.WatchResult{Events: []subnet.Event{{Type: subnet.EventRemoved, Lease: a}}}, false, []string{"10.5.3.0-24"}},
		{"snapshot after compaction replaces", subnet.WatchResult{Snapshot: []subnet.Lease{a}}, true, []string{"10.5.2.0-24"}},
	}
	for _, st := range steps {
		if got := s.apply(st.in); got != st.changed {
			t.Errorf("%s: changed=%v want %v", st.name, got, st.changed)
		}
		got := keys(s.peers())
		if len(got) != len(st.want) {
			t.Fatalf("%s: peers %v want %v", st.name, got, st.want)
		}
		for i := range got {
			if got[i] != st.want[i] {
				t.Fatalf("%s: peers %v want %v", st.name, got, st.want)
			}
		}
	}
	if p := s.peers(); string(p.At(0).Attrs.BackendData) != string(a.Attrs.BackendData) {
		t.Fatal("lease content lost")
	}
}

// TestLeaseSetChurn folds many adds, changes and removals in, in random order, and
// checks the set against a plain map after each batch.
func TestLeaseSetChurn(t *testing.T) {
	own := lease("10.0.1.0/24", "192.0.2.1", "aa:aa:aa:aa:aa:01")
	s := newLeaseSet(own.Key())
	ref := map[string]subnet.Lease{}
	mk := func(i, v int) subnet.Lease {
		return lease(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(1 + i/256), byte(i % 256), 0}), 24).String(),
			"192.0.2.2", fmt.Sprintf("aa:aa:aa:%02x:%02x:%02x", byte(i>>8), byte(i), byte(v)))
	}
	var snap []subnet.Lease
	for i := range 300 {
		l := mk(i, 0)
		snap = append(snap, l)
		ref[l.Key()] = l
	}
	snap = append(snap, own)
	if !s.apply(subnet.WatchResult{Snapshot: snap}) {
		t.Fatal("first snapshot not a change")
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	for round := range 50 {
		var evs []subnet.Event
		for range 40 {
			i := rnd.IntN(400)
			l := mk(i, rnd.IntN(3))
			if rnd.IntN(3) == 0 {
				evs = append(evs, subnet.Event{Type: subnet.EventRemoved, Lease: subnet.Lease{Subnet: l.Subnet}})
				delete(ref, l.Key())
			} else {
				evs = append(evs, subnet.Event{Type: subnet.EventAdded, Lease: l})
				ref[l.Key()] = l
			}
		}
		s.apply(subnet.WatchResult{Events: evs})
		got := s.peers().Leases()
		if len(got) != len(ref) {
			t.Fatalf("round %d: %d peers, want %d", round, len(got), len(ref))
		}
		for i, l := range got {
			if w, ok := ref[l.Key()]; !ok || !subnet.SamePeer(w, l) {
				t.Fatalf("round %d: peer %s differs from the reference", round, l.Key())
			}
			if i > 0 && keyOf(&got[i-1]).compare(keyOf(&l)) >= 0 {
				t.Fatalf("round %d: peers not ordered at %d", round, i)
			}
		}
	}
}

// A snapshot is ordered by key whatever its order; of two leases for the same subnets the
// first in the snapshot is kept.
func TestLeaseSetSnapshotOrderAndDuplicates(t *testing.T) {
	own := lease("10.0.1.0/24", "192.0.2.1", "aa:aa:aa:aa:aa:01")
	for _, tc := range []struct {
		name string
		n    int
		dups bool
	}{{"empty", 0, false}, {"one", 1, false}, {"reversed", 500, false}, {"shuffled with duplicates", 500, true}} {
		t.Run(tc.name, func(t *testing.T) {
			rnd := rand.New(rand.NewPCG(3, uint64(tc.n)))
			var snap []subnet.Lease
			first := map[string]string{} // key -> MAC of the first lease with it
			for i := tc.n - 1; i >= 0; i-- {
				sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(2 + i/256), byte(i % 256), 0}), 24).String()
				snap = append(snap, lease(sn, "192.0.2.2", fmt.Sprintf("aa:aa:aa:00:%02x:%02x", byte(i>>8), byte(i))))
				if tc.dups && i%3 == 0 {
					snap = append(snap, lease(sn, "192.0.2.3", fmt.Sprintf("bb:bb:bb:00:%02x:%02x", byte(i>>8), byte(i))))
				}
			}
			if tc.dups {
				rnd.Shuffle(len(snap), func(i, j int) { snap[i], snap[j] = snap[j], snap[i] })
			}
			for _, l := range snap {
				if _, ok := first[l.Key()]; !ok {
					first[l.Key()] = string(l.Attrs.BackendData)
				}
			}
			snap = append(snap, own)
			s := newLeaseSet(own.Key())
			s.apply(subnet.WatchResult{Snapshot: snap})
			got := s.peers().Leases()
			if len(got) != len(first) {
				t.Fatalf("%d peers, want %d", len(got), len(first))
			}
			for i := range got {
				if i > 0 && keyOf(&got[i-1]).compare(keyOf(&got[i])) >= 0 {
					t.Fatalf("peers not ordered at %d: %s, %s", i, got[i-1].Key(), got[i].Key())
				}
				if string(got[i].Attrs.BackendData) != first[got[i].Key()] {
					t.Fatalf("%s: kept %s, want the first lease %s", got[i].Key(), got[i].Attrs.BackendData, first[got[i].Key()])
				}
			}
		})
	}
}

// IPv6-only ("0.0.0.0-0&…") and dual-stack leases are kept whole and ordered by key
// beside IPv4-only ones; removals need only the subnets.
func TestLeaseSetMixedFamilies(t *testing.T) {
	own := lease("10.5.1.0/24", "192.0.2.11", "aa:aa:aa:aa:aa:01")
	v4 := lease("10.5.2.0/24", "192.0.2.12", "aa:aa:aa:aa:aa:02")
	dual := lease("10.5.3.0/24", "192.0.2.13", "aa:aa:aa:aa:aa:03")
	dual.EnableIPv6, dual.IPv6Subnet = true, netip.MustParsePrefix("fd00:5:3::/64")
	dual.Attrs.PublicIPv6 = netip.MustParseAddr("2001:db8::13")
	dual.Attrs.BackendV6Data = json.RawMessage(`{"VNI":1,"VtepMAC":"bb:bb:bb:bb:bb:03"}`)
	v6 := subnet.Lease{EnableIPv6: true, IPv6Subnet: netip.MustParsePrefix("fd00:5:4::/64"), Attrs: subnet.LeaseAttrs{
		PublicIPv6: netip.MustParseAddr("2001:db8::14"), BackendType: "vxlan",
		BackendV6Data: json.RawMessage(`{"VNI":1,"VtepMAC":"bb:bb:bb:bb:bb:04"}`)}}
	s := newLeaseSet(own.Key())
	s.apply(subnet.WatchResult{Snapshot: []subnet.Lease{dual, own, v4, v6}})
	want := []subnet.Lease{v6, v4, dual}
	got := s.peers().Leases()
	if len(got) != len(want) {
		t.Fatalf("peers %v", keys(s.peers()))
	}
	for i := range want {
		if !subnet.SamePeer(got[i], want[i]) {
			t.Fatalf("peer %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if k := keys(s.peers()); k[0] != "0.0.0.0-0&fd00:5:4::-64" || k[2] != "10.5.3.0-24&fd00:5:3::-64" {
		t.Fatalf("keys %v", k)
	}
	if !s.apply(subnet.WatchResult{Events: []subnet.Event{
		{Type: subnet.EventRemoved, Lease: subnet.Lease{IPv6Subnet: v6.IPv6Subnet}},
		{Type: subnet.EventRemoved, Lease: subnet.Lease{Subnet: dual.Subnet}}, // another key: not dual's
	}}) {
		t.Fatal("removal not a change")
	}
	if k := keys(s.peers()); len(k) != 2 || k[0] != "10.5.2.0-24" || k[1] != dual.Key() {
		t.Fatalf("after removal: %v", k)
	}
}

// The lease set agrees with a plain map from key to lease over random snapshots and
// event batches (IPv4-only, IPv6-only and dual-stack leases, nil and empty backend data,
// events about the own key, duplicates in snapshots), and apply reports a change exactly
// when the peers changed.
func TestLeaseSetAgainstMap(t *testing.T) {
	mk := func(i, v int) subnet.Lease {
		l := subnet.Lease{EnableIPv4: true, Attrs: subnet.LeaseAttrs{BackendType: "vxlan",
			PublicIP:    netip.AddrFrom4([4]byte{192, 0, 2, byte(v)}),
			BackendData: json.RawMessage(fmt.Sprintf(`{"v":%d}`, v))}}
		v4 := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i), 0}), 24)
		v6 := netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0, 0, byte(i)}), 64)
		switch i % 4 {
		case 0:
			l.Subnet = v4
		case 1:
			l.EnableIPv4, l.EnableIPv6, l.IPv6Subnet = false, true, v6
			l.Attrs.BackendV6Data = json.RawMessage(`{}`)
		case 2:
			l.Subnet, l.IPv6Subnet = v4, v6
		case 3:
			l.Subnet, l.Attrs.BackendData = v4, nil
			if v%2 == 1 {
				l.Attrs.BackendData = json.RawMessage{}
			}
		}
		return l
	}
	differ := func(a, b map[leaseKey]subnet.Lease) bool {
		if len(a) != len(b) {
			return true
		}
		for k, l := range a {
			if o, ok := b[k]; !ok || !subnet.SamePeer(o, l) {
				return true
			}
		}
		return false
	}
	for seed := range 200 {
		rnd := rand.New(rand.NewPCG(uint64(seed), 9))
		own := mk(4, 0)
		s := newLeaseSet(own.Key())
		var ref map[leaseKey]subnet.Lease // nil until the first snapshot
		for round := range 60 {
			var r subnet.WatchResult
			next := map[leaseKey]subnet.Lease{}
			if round%17 == 0 {
				r.Snapshot = []subnet.Lease{}
				for range rnd.IntN(40) {
					l := mk(rnd.IntN(30), rnd.IntN(3))
					r.Snapshot = append(r.Snapshot, l)
					if k := keyOf(&l); k != s.own {
						if _, dup := next[k]; !dup { // the first of duplicates wins
							next[k] = l
						}
					}
				}
			} else {
				for k, l := range ref {
					next[k] = l
				}
				for range rnd.IntN(20) {
					l := mk(rnd.IntN(30), rnd.IntN(3))
					ev := subnet.Event{Type: subnet.EventAdded, Lease: l}
					if rnd.IntN(3) == 0 {
						ev = subnet.Event{Type: subnet.EventRemoved, Lease: subnet.Lease{Subnet: l.Subnet, IPv6Subnet: l.IPv6Subnet}}
					}
					r.Events = append(r.Events, ev)
					switch k := keyOf(&l); {
					case k == s.own:
					case ev.Type == subnet.EventRemoved:
						delete(next, k)
					default:
						next[k] = l
					}
				}
			}
			wantChanged := ref == nil && r.IsSnapshot() || ref != nil && differ(next, ref)
			if ref != nil || r.IsSnapshot() {
				ref = next
			}
			got := s.apply(r)
			if ref == nil {
				continue // events before the first snapshot: nothing to compare
			}
			if got != wantChanged {
				t.Fatalf("seed %d round %d: apply reported changed=%v, want %v", seed, round, got, wantChanged)
			}
			ls := s.peers().Leases()
			if len(ls) != len(ref) {
				t.Fatalf("seed %d round %d: %d peers, want %d", seed, round, len(ls), len(ref))
			}
			for i, l := range ls {
				if w, ok := ref[keyOf(&l)]; !ok || !subnet.SamePeer(w, l) {
					t.Fatalf("seed %d round %d: peer %s differs from the model", seed, round, l.Key())
				}
				if i > 0 && keyOf(&ls[i-1]).compare(keyOf(&l)) >= 0 {
					t.Fatalf("seed %d round %d: peers out of order at %d", seed, round, i)
				}
			}
		}
	}
}
