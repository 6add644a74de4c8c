package subnet

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// testConfig is a dual-stack network wide enough for every lease of these tests.
func testConfig(v4, v6 bool) *Config {
	return &Config{EnableIPv4: v4, EnableIPv6: v6,
		Network: mustPrefix("10.0.0.0/8"), SubnetLen: 24,
		IPv6Network: mustPrefix("fd00::/16"), IPv6SubnetLen: 64}
}

// vxlanCheck stands in for the vxlan backend's check: a VtepMAC is needed.
func vxlanCheck(data json.RawMessage) error {
	if !strings.Contains(string(data), `"VtepMAC"`) {
		return errors.New("no VtepMAC")
	}
	return nil
}

func testRule(cfg *Config, kube bool, local ...string) *Rule {
	return NewRule(cfg, RuleOptions{Kube: kube,
		BackendData: map[string]func(json.RawMessage) error{"vxlan": vxlanCheck},
		LocalAddrs: func() ([]netip.Addr, error) {
			var out []netip.Addr
			for _, s := range local {
				out = append(out, netip.MustParseAddr(s))
			}
			return out, nil
		}})
}

func vx(sn, pub, mac string) Lease {
	return Lease{EnableIPv4: true, Subnet: mustPrefix(sn), Attrs: LeaseAttrs{
		PublicIP: netip.MustParseAddr(pub), BackendType: "vxlan",
		BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"` + mac + `"}`)}}
}

func keysOf(p Peers) []string {
	var out []string
	for l := range p.All() {
		out = append(out, l.Key())
	}
	return out
}

func added(ls ...Lease) WatchResult {
	r := WatchResult{Events: []Event{}}
	for _, l := range ls {
		r.Events = append(r.Events, Event{Type: EventAdded, Lease: l})
	}
	return r
}

func removed(ls ...Lease) WatchResult {
	r := WatchResult{Events: []Event{}}
	for _, l := range ls {
		r.Events = append(r.Events, Event{Type: EventRemoved, Lease: Lease{Subnet: l.Subnet, IPv6Subnet: l.IPv6Subnet}})
	}
	return r
}

func snapshot(ls ...Lease) WatchResult { return WatchResult{Snapshot: CandidatesOf(ls...)} }

// The lease set of the daemon: snapshots replace, events fold in, a change is reported
// exactly when the peers changed.
func TestAdmitterLeaseSet(t *testing.T) {
	own := vx("10.5.1.0/24", "192.0.2.11", "aa:aa:aa:aa:aa:01")
	a := vx("10.5.2.0/24", "192.0.2.12", "aa:aa:aa:aa:aa:02")
	b := vx("10.5.3.0/24", "192.0.2.13", "aa:aa:aa:aa:aa:03")
	b2 := vx("10.5.3.0/24", "192.0.2.13", "aa:aa:aa:aa:aa:33")
	s := NewAdmitter(testRule(testConfig(true, false), false), &own, nil)

	steps := []struct {
		name    string
		in      WatchResult
		changed bool
		want    []string
	}{
		{"empty first snapshot still counts as a change (sync)", WatchResult{Snapshot: []Candidate{}}, true, nil},
		{"snapshot", snapshot(a), true, []string{"10.5.2.0-24"}},
		{"same snapshot again", snapshot(a), false, []string{"10.5.2.0-24"}},
		{"add b", added(b), true, []string{"10.5.2.0-24", "10.5.3.0-24"}},
		{"re-add b unchanged (renewal)", added(b), false, []string{"10.5.2.0-24", "10.5.3.0-24"}},
		{"b changes MAC", added(b2), true, []string{"10.5.2.0-24", "10.5.3.0-24"}},
		{"remove a", removed(a), true, []string{"10.5.3.0-24"}},
		{"remove unknown", removed(a), false, []string{"10.5.3.0-24"}},
		{"snapshot after compaction replaces", snapshot(a), true, []string{"10.5.2.0-24"}},
	}
	for _, st := range steps {
		if got := s.Apply(st.in); got != st.changed {
			t.Errorf("%s: changed=%v want %v", st.name, got, st.changed)
		}
		if got := keysOf(s.Peers()); !slices.Equal(got, st.want) {
			t.Fatalf("%s: peers %v want %v", st.name, got, st.want)
		}
	}
	if p := s.Peers(); string(p.At(0).Attrs.BackendData) != string(a.Attrs.BackendData) {
		t.Fatal("lease content lost")
	}
	if !s.Synced() {
		t.Fatal("not synced after snapshots")
	}
}

// Folding many adds, changes and removals in, in random order, agrees with a plain map
// after each batch.
func TestAdmitterChurn(t *testing.T) {
	own := vx("10.0.1.0/24", "192.0.2.1", "aa:aa:aa:aa:aa:01")
	s := NewAdmitter(testRule(testConfig(true, false), false), &own, nil)
	ref := map[string]Lease{}
	mk := func(i, v int) Lease {
		return vx(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(2 + i/256), byte(i % 256), 0}), 24).String(),
			"192.0.2.2", fmt.Sprintf("aa:aa:aa:%02x:%02x:%02x", byte(i>>8), byte(i), byte(v)))
	}
	var snap []Lease
	for i := range 300 {
		l := mk(i, 0)
		snap = append(snap, l)
		ref[l.Key()] = l
	}
	if !s.Apply(snapshot(snap...)) {
		t.Fatal("first snapshot not a change")
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	for round := range 50 {
		var r WatchResult
		for range 40 {
			l := mk(rnd.IntN(400), rnd.IntN(3))
			if rnd.IntN(3) == 0 {
				r.Events = append(r.Events, Event{Type: EventRemoved, Lease: Lease{Subnet: l.Subnet}})
				delete(ref, l.Key())
			} else {
				r.Events = append(r.Events, Event{Type: EventAdded, Lease: l})
				ref[l.Key()] = l
			}
		}
		s.Apply(r)
		got := s.Peers().Leases()
		if len(got) != len(ref) {
			t.Fatalf("round %d: %d peers, want %d", round, len(got), len(ref))
		}
		for i, l := range got {
			if w, ok := ref[l.Key()]; !ok || !SamePeer(w, l) {
				t.Fatalf("round %d: peer %s differs from the reference", round, l.Key())
			}
			if i > 0 && keyOf(&got[i-1]).compare(keyOf(&l)) >= 0 {
				t.Fatalf("round %d: peers not ordered at %d", round, i)
			}
		}
	}
}

// A snapshot is ordered by key whatever its order; of two deliveries of one key the
// first in the snapshot is kept.
func TestAdmitterSnapshotOrderAndDuplicates(t *testing.T) {
	own := vx("10.0.1.0/24", "192.0.2.1", "aa:aa:aa:aa:aa:01")
	for _, tc := range []struct {
		name string
		n    int
		dups bool
	}{{"empty", 0, false}, {"one", 1, false}, {"reversed", 500, false}, {"shuffled with duplicates", 500, true}} {
		t.Run(tc.name, func(t *testing.T) {
			rnd := rand.New(rand.NewPCG(3, uint64(tc.n)))
			var snap []Lease
			first := map[string]string{} // key -> data of the first lease with it
			for i := tc.n - 1; i >= 0; i-- {
				sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(2 + i/256), byte(i % 256), 0}), 24).String()
				snap = append(snap, vx(sn, "192.0.2.2", fmt.Sprintf("aa:aa:aa:00:%02x:%02x", byte(i>>8), byte(i))))
				if tc.dups && i%3 == 0 {
					snap = append(snap, vx(sn, "192.0.2.3", fmt.Sprintf("bb:bb:bb:00:%02x:%02x", byte(i>>8), byte(i))))
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
			s := NewAdmitter(testRule(testConfig(true, false), false), &own, nil)
			s.Apply(snapshot(snap...))
			got := s.Peers().Leases()
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

func dualLease(sn, sn6, pub, pub6, mac string) Lease {
	l := vx(sn, pub, mac)
	l.EnableIPv6, l.IPv6Subnet, l.Attrs.PublicIPv6 = true, mustPrefix(sn6), netip.MustParseAddr(pub6)
	l.Attrs.BackendV6Data = json.RawMessage(`{"VNI":1,"VtepMAC":"` + mac + `"}`)
	return l
}

func v6Lease(sn6, pub6, mac string) Lease {
	return Lease{EnableIPv6: true, IPv6Subnet: mustPrefix(sn6), Attrs: LeaseAttrs{
		PublicIPv6: netip.MustParseAddr(pub6), BackendType: "vxlan",
		BackendV6Data: json.RawMessage(`{"VNI":1,"VtepMAC":"` + mac + `"}`)}}
}

// IPv6-only ("0.0.0.0-0&…") and dual-stack leases are kept whole and ordered by key
// beside IPv4-only ones; removals need only the subnets.
func TestAdmitterMixedFamilies(t *testing.T) {
	own := dualLease("10.5.1.0/24", "fd00:5:1::/64", "192.0.2.11", "2001:db8::11", "aa:aa:aa:aa:aa:01")
	v4 := vx("10.5.2.0/24", "192.0.2.12", "aa:aa:aa:aa:aa:02")
	dual := dualLease("10.5.3.0/24", "fd00:5:3::/64", "192.0.2.13", "2001:db8::13", "aa:aa:aa:aa:aa:03")
	v6 := v6Lease("fd00:5:4::/64", "2001:db8::14", "bb:bb:bb:bb:bb:04")
	s := NewAdmitter(testRule(testConfig(true, true), false), &own, nil)
	s.Apply(snapshot(dual, v4, v6))
	want := []Lease{v6, v4, dual}
	got := s.Peers().Leases()
	if len(got) != len(want) {
		t.Fatalf("peers %v; rejected %v", keysOf(s.Peers()), s.Rejected())
	}
	for i := range want {
		if !SamePeer(got[i], want[i]) {
			t.Fatalf("peer %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if k := keysOf(s.Peers()); k[0] != "0.0.0.0-0&fd00:5:4::-64" || k[2] != "10.5.3.0-24&fd00:5:3::-64" {
		t.Fatalf("keys %v", k)
	}
	if !s.Apply(WatchResult{Events: []Event{
		{Type: EventRemoved, Lease: Lease{IPv6Subnet: v6.IPv6Subnet}},
		{Type: EventRemoved, Lease: Lease{Subnet: dual.Subnet}}, // another key: not dual's
	}}) {
		t.Fatal("removal not a change")
	}
	if k := keysOf(s.Peers()); len(k) != 2 || k[0] != "10.5.2.0-24" || k[1] != dual.Key() {
		t.Fatalf("after removal: %v", k)
	}
}

// The admitted set agrees with a plain map over random snapshots and event batches of
// passing, non-overlapping leases of every family; Apply reports exactly the changes.
func TestAdmitterAgainstMap(t *testing.T) {
	mk := func(i, v int) Lease {
		l := Lease{EnableIPv4: true, Attrs: LeaseAttrs{BackendType: "other",
			PublicIP:    netip.AddrFrom4([4]byte{192, 0, 2, byte(1 + v)}),
			PublicIPv6:  netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(1 + v)}),
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
	differ := func(a, b map[leaseKey]Lease) bool {
		if len(a) != len(b) {
			return true
		}
		for k, l := range a {
			if o, ok := b[k]; !ok || !SamePeer(o, l) {
				return true
			}
		}
		return false
	}
	for seed := range 200 {
		rnd := rand.New(rand.NewPCG(uint64(seed), 9))
		own := mk(40, 0)
		s := NewAdmitter(testRule(testConfig(true, true), false), &own, nil)
		var ref map[leaseKey]Lease // nil until the first snapshot
		for round := range 60 {
			var r WatchResult
			next := map[leaseKey]Lease{}
			if round%17 == 0 {
				r.Snapshot = []Candidate{}
				for range rnd.IntN(40) {
					l := mk(rnd.IntN(30), rnd.IntN(3))
					r.Snapshot = append(r.Snapshot, Candidate{Lease: l})
					if _, dup := next[keyOf(&l)]; !dup { // the first of duplicates wins
						next[keyOf(&l)] = l
					}
				}
			} else {
				for k, l := range ref {
					next[k] = l
				}
				for range rnd.IntN(20) {
					l := mk(rnd.IntN(30), rnd.IntN(3))
					ev := Event{Type: EventAdded, Lease: l}
					if rnd.IntN(3) == 0 {
						ev = Event{Type: EventRemoved, Lease: Lease{Subnet: l.Subnet, IPv6Subnet: l.IPv6Subnet}}
						delete(next, keyOf(&l))
					} else {
						next[keyOf(&l)] = l
					}
					r.Events = append(r.Events, ev)
				}
			}
			wantChanged := ref == nil && r.IsSnapshot() || ref != nil && differ(next, ref)
			if ref != nil || r.IsSnapshot() {
				ref = next
			}
			got := s.Apply(r)
			if ref == nil {
				continue // events before the first snapshot: nothing to compare
			}
			if got != wantChanged {
				t.Fatalf("seed %d round %d: Apply reported changed=%v, want %v", seed, round, got, wantChanged)
			}
			ls := s.Peers().Leases()
			if len(ls) != len(ref) {
				t.Fatalf("seed %d round %d: %d peers, want %d; rejected %v", seed, round, len(ls), len(ref), s.Rejected())
			}
			for i, l := range ls {
				if w, ok := ref[keyOf(&l)]; !ok || !SamePeer(w, l) {
					t.Fatalf("seed %d round %d: peer %s differs from the model", seed, round, l.Key())
				}
				if i > 0 && keyOf(&ls[i-1]).compare(keyOf(&l)) >= 0 {
					t.Fatalf("seed %d round %d: peers out of order at %d", seed, round, i)
				}
			}
		}
	}
}
