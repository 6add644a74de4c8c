package subnet

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

// counter counts the rejections reported, by reason.
type counter map[Reason]int

func (c counter) add(r Reason) { c[r]++ }

func named(l Lease, name string, sen int64) Candidate {
	return Candidate{Lease: l, Origin: Origin{Name: name, Seniority: sen, Version: sen}}
}

func addedC(cs ...Candidate) WatchResult {
	var r WatchResult
	for _, c := range cs {
		r.Events = append(r.Events, Event{Type: EventAdded, Lease: c.Lease, Origin: c.Origin})
	}
	return r
}

func removedC(cs ...Candidate) WatchResult {
	var r WatchResult
	for _, c := range cs {
		r.Events = append(r.Events, Event{Type: EventRemoved, Lease: Lease{Subnet: c.Lease.Subnet, IPv6Subnet: c.Lease.IPv6Subnet}, Origin: Origin{Name: c.Origin.Name}})
	}
	return r
}

func rejectedReasons(a *Admitter) map[string]Reason {
	out := map[string]Reason{}
	for _, r := range a.Rejected() {
		out[r.Name] = r.Reason
	}
	return out
}

// Kubernetes mode: of overlapping peers the older node wins whatever the arrival order, the
// loser admitted when the winner goes; an overlap with our own CIDR is always rejected.
func TestAdmitterOverlapsKube(t *testing.T) {
	own := vx("10.244.1.0/24", "192.0.2.1", "aa:aa:aa:aa:aa:01")
	n2 := named(vx("10.244.2.0/24", "192.0.2.2", "aa:aa:aa:aa:aa:02"), "node-2", 100)
	n3 := named(vx("10.244.3.0/24", "192.0.2.3", "aa:aa:aa:aa:aa:03"), "node-3", 100)
	inside2 := named(vx("10.244.2.128/25", "192.0.2.9", "aa:aa:aa:aa:aa:09"), "evil-a", 200)       // younger, inside node-2
	over23 := named(vx("10.244.2.0/23", "192.0.2.10", "aa:aa:aa:aa:aa:0a"), "evil-b", 50)          // older, covers node-2 and node-3
	ownPart := named(vx("10.244.1.64/26", "192.0.2.11", "aa:aa:aa:aa:aa:0b"), "evil-c", 1)         // oldest, inside our own
	sameAs3Tie := named(vx("10.244.3.0/24", "192.0.2.12", "aa:aa:aa:aa:aa:0c"), "node-0-tie", 100) // same age as node-3: the name decides

	n := counter{}
	a := NewAdmitter(testRule(testConfig(true, false), true), &own, n.add)
	a.Apply(WatchResult{Snapshot: []Candidate{n2, n3, inside2, ownPart}})
	if got := keysOf(a.Peers()); !slices.Equal(got, []string{"10.244.2.0-24", "10.244.3.0-24"}) {
		t.Fatalf("peers %v", got)
	}
	if got := rejectedReasons(a); got["evil-a"] != OverlapsPeer || got["evil-c"] != OverlapsOwn || len(got) != 2 {
		t.Fatalf("rejected %v", got)
	}
	// An older lease covering two admitted ones demotes both; node-0-tie, as old as
	// node-3 but first by name, has nothing to win while evil-b holds the /23.
	a.Apply(addedC(over23, sameAs3Tie))
	if got := keysOf(a.Peers()); !slices.Equal(got, []string{"10.244.2.0-23"}) {
		t.Fatalf("after the older /23: peers %v, rejected %v", got, a.Rejected())
	}
	// The /23 goes: node-2 and node-0-tie come back (node-0-tie beats node-3 on the
	// name), evil-a stays rejected (node-2 is older).
	a.Apply(removedC(over23))
	if got := keysOf(a.Peers()); !slices.Equal(got, []string{"10.244.2.0-24", "10.244.3.0-24"}) {
		t.Fatalf("after the /23 left: peers %v", got)
	}
	if got := a.Admitted(); !slices.Equal(got, []string{"node-2", "node-0-tie"}) {
		t.Fatalf("admitted %v", got)
	}
	if got := rejectedReasons(a); got["node-3"] != OverlapsPeer || got["evil-a"] != OverlapsPeer || got["evil-c"] != OverlapsOwn {
		t.Fatalf("rejected %v", got)
	}
	// node-0-tie goes: node-3 is admitted.
	a.Apply(removedC(sameAs3Tie))
	if got := a.Admitted(); !slices.Equal(got, []string{"node-2", "node-3"}) {
		t.Fatalf("admitted %v", got)
	}
	// Counted once per name and version: evil-a, evil-c, node-2 and node-3 (demoted),
	// node-3 again (lost to node-0-tie: another version would recount, the same does not).
	if n[OverlapsOwn] != 1 || n[OverlapsPeer] < 3 {
		t.Fatalf("counts %v", n)
	}
	before := maps.Clone(n)
	a.Apply(WatchResult{Snapshot: []Candidate{n2, n3, inside2, ownPart}}) // a relist: the same versions
	if !maps.Equal(n, before) {
		t.Fatalf("a relist of the same versions counted again: %v, was %v", n, before)
	}
	inside2.Origin.Version++
	a.Apply(addedC(inside2))
	if n[OverlapsPeer] != before[OverlapsPeer]+1 {
		t.Fatalf("a new version of a rejected lease not counted: %v, was %v", n, before)
	}
}

// etcd mode, dual stack: peers overlap only through the other family; an alias of an
// admitted key is rejected and its removal removes nothing.
func TestAdmitterOverlapsEtcd(t *testing.T) {
	own := dualLease("10.5.1.0/24", "fd00:5:1::/64", "192.0.2.1", "2001:db8::1", "aa:aa:aa:aa:aa:01")
	a1 := named(dualLease("10.5.2.0/24", "fd00:5:2::/64", "192.0.2.2", "2001:db8::2", "aa:aa:aa:aa:aa:02"), "", 10)
	a2 := named(dualLease("10.5.2.0/24", "fd00:5:9::/64", "192.0.2.3", "2001:db8::3", "aa:aa:aa:aa:aa:03"), "", 20)   // same IPv4 subnet, younger
	b := named(dualLease("10.5.3.0/24", "fd00:5:2::/64", "192.0.2.4", "2001:db8::4", "aa:aa:aa:aa:aa:04"), "", 5)     // same IPv6 subnet as a1, older
	ownV6 := named(dualLease("10.5.4.0/24", "fd00:5:1::/64", "192.0.2.5", "2001:db8::5", "aa:aa:aa:aa:aa:05"), "", 1) // our IPv6 subnet
	alias := named(a1.Lease, "10.5.2.9-24&fd00:5:2::-64", 1)
	for _, order := range [][]Candidate{{a1, a2, b, ownV6, alias}, {alias, ownV6, b, a2, a1}, {a2, alias, a1, ownV6, b}} {
		a := NewAdmitter(testRule(testConfig(true, true), false), &own, nil)
		a.Apply(WatchResult{Snapshot: []Candidate{}})
		for _, c := range order {
			a.Apply(addedC(c))
		}
		// b (oldest) beats a1 on the IPv6 subnet; a1 out, a2 no longer overlaps anyone admitted.
		if got := a.Admitted(); !slices.Equal(got, []string{"10.5.2.0-24&fd00:5:9::-64", "10.5.3.0-24&fd00:5:2::-64"}) {
			t.Fatalf("order %v: admitted %v, rejected %v", order, got, a.Rejected())
		}
		want := map[string]Reason{"10.5.2.0-24&fd00:5:2::-64": OverlapsPeer, "10.5.4.0-24&fd00:5:1::-64": OverlapsOwn,
			"10.5.2.9-24&fd00:5:2::-64": NonCanonicalKey}
		if got := rejectedReasons(a); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("rejected %v, want %v", got, want)
		}
		// The alias goes: nothing admitted changes. b goes: a1 is admitted, a2 loses to it.
		if a.Apply(removedC(alias)) {
			t.Fatal("removing an alias changed the peers")
		}
		a.Apply(removedC(b))
		if got := a.Admitted(); !slices.Equal(got, []string{"10.5.2.0-24&fd00:5:2::-64"}) {
			t.Fatalf("after b left: admitted %v, rejected %v", got, a.Rejected())
		}
	}
}

// A lease whose value turns bad is withdrawn; one whose value turns good is admitted;
// a lease rejected for naming a local address is admitted when the address goes away.
func TestAdmitterValueChangesAndRefresh(t *testing.T) {
	own := vx("10.5.1.0/24", "192.0.2.1", "aa:aa:aa:aa:aa:01")
	local := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.50")}
	rule := NewRule(testConfig(true, false), RuleOptions{BackendData: map[string]func(json.RawMessage) error{"vxlan": vxlanCheck},
		LocalAddrs: func() ([]netip.Addr, error) { return slices.Clone(local), nil }})
	a := NewAdmitter(rule, &own, nil)
	p := named(vx("10.5.2.0/24", "192.0.2.2", "aa:aa:aa:aa:aa:02"), "", 1)
	q := named(vx("10.5.3.0/24", "192.0.2.50", "aa:aa:aa:aa:aa:03"), "", 2)
	a.Apply(WatchResult{Snapshot: []Candidate{p, q}})
	if got := a.Admitted(); !slices.Equal(got, []string{"10.5.2.0-24"}) {
		t.Fatalf("admitted %v", got)
	}
	bad := p
	bad.Lease.Attrs.BackendData = json.RawMessage(`{"VNI":1}`)
	bad.Origin.Version = 7
	if !a.Apply(addedC(bad)) || a.Peers().Len() != 0 {
		t.Fatalf("a lease turned bad stays: %v", a.Admitted())
	}
	if !a.Apply(addedC(p)) || a.Peers().Len() != 1 {
		t.Fatalf("a lease turned good again is not admitted: %v", a.Rejected())
	}
	if a.Refresh() {
		t.Fatal("Refresh without a change of addresses changed the peers")
	}
	local = local[:1] // 192.0.2.50 goes away
	if !a.Refresh() {
		t.Fatal("Refresh after an address went away changed nothing")
	}
	if got := a.Admitted(); !slices.Equal(got, []string{"10.5.2.0-24", "10.5.3.0-24"}) {
		t.Fatalf("admitted %v", got)
	}
	local = append(local, netip.MustParseAddr("192.0.2.2")) // p's address becomes ours
	a.Refresh()
	if got := a.Admitted(); !slices.Equal(got, []string{"10.5.3.0-24"}) {
		t.Fatalf("admitted %v, rejected %v", got, a.Rejected())
	}
}

// ---- property tests over random lease sets

// genCandidates makes n random leases of a network, some bad, that collide often, with
// distinct names and random seniorities (with ties).
func genCandidates(rnd *rand.Rand, n int, kube bool) []Candidate {
	var out []Candidate
	for i := range n {
		mac := fmt.Sprintf("02:00:00:00:%02x:%02x", byte(i>>8), byte(i))
		pub := netip.AddrFrom4([4]byte{192, 0, 2, byte(2 + rnd.IntN(200))})
		var l Lease
		name := ""
		if kube {
			bits := 22 + rnd.IntN(5)
			sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(rnd.IntN(8)), byte(rnd.IntN(256))}), bits).Masked()
			l = vx(sn.String(), pub.String(), mac)
			name = fmt.Sprintf("node-%03d", i)
		} else {
			sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 5, byte(rnd.IntN(12)), 0}), 24)
			sn6 := netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0, 0, 5, 0, byte(rnd.IntN(12))}), 64)
			l = dualLease(sn.String(), sn6.String(), pub.String(), fmt.Sprintf("2001:db8::%x", i+2), mac)
		}
		switch rnd.IntN(12) {
		case 0:
			l.Attrs.PublicIP = netip.MustParseAddr("127.0.0.1")
		case 1:
			l.Attrs.BackendData = nil
		case 2:
			if !kube {
				name = MakeSubnetKey(l.Subnet, l.IPv6Subnet) + "x" // an alias
			}
		}
		out = append(out, Candidate{Lease: l, Origin: Origin{Name: name, Seniority: int64(rnd.IntN(n)), Version: int64(i + 1)}})
	}
	if !kube { // one key once: drop later duplicates of a key (etcd holds a key once)
		seen := map[string]bool{}
		out = slices.DeleteFunc(out, func(c Candidate) bool {
			k := c.Origin.Name
			if k == "" {
				k = c.Lease.Key()
			}
			dup := seen[k]
			seen[k] = true
			return dup
		})
	}
	return out
}

// reference is the admission rule written the plain way: the leases that pass the
// per-lease checks and miss the own subnets, then a greedy pass in seniority order.
func reference(a *Admitter, cs []Candidate) []string {
	var ok []Candidate
	for i := range cs {
		if a.judge(&cs[i]) == nil {
			ok = append(ok, cs[i])
		}
	}
	name := func(c *Candidate) string { return a.identOf(c).String() }
	slices.SortFunc(ok, func(x, y Candidate) int {
		if c := cmp.Compare(x.Origin.Seniority, y.Origin.Seniority); c != 0 {
			return c
		}
		if c := cmp.Compare(name(&x), name(&y)); c != 0 {
			return c
		}
		return keyOf(&x.Lease).compare(keyOf(&y.Lease))
	})
	var won []Candidate
	for _, c := range ok {
		if !slices.ContainsFunc(won, func(w Candidate) bool { return a.overlaps(&w.Lease, &c.Lease) }) {
			won = append(won, c)
		}
	}
	var out []string
	for i := range won {
		out = append(out, name(&won[i]))
	}
	slices.Sort(out)
	return out
}

func sortedAdmitted(a *Admitter) []string {
	out := a.Admitted()
	slices.Sort(out)
	return out
}

// checkInvariants: no admitted lease overlaps the node's own subnets or another
// admitted lease, and every admitted lease passes the per-lease checks.
func checkInvariants(t *testing.T, a *Admitter, own *Lease) {
	t.Helper()
	ls := a.Peers().Leases()
	for i := range ls {
		c := Candidate{Lease: ls[i]}
		if rej := a.rule.Check(&c); rej != nil {
			t.Fatalf("admitted %s fails the rule: %v", ls[i].Key(), rej)
		}
		if a.overlaps(&ls[i], own) {
			t.Fatalf("admitted %s overlaps the own lease %s", ls[i].Key(), own.Key())
		}
		for j := range i {
			if a.overlaps(&ls[i], &ls[j]) {
				t.Fatalf("admitted %s and %s overlap", ls[j].Key(), ls[i].Key())
			}
		}
	}
}

// Random lease sets with overlaps, as one snapshot or random event batches: the admitted
// set is always the reference's.
func TestAdmissionOrderIndependent(t *testing.T) {
	for _, kube := range []bool{true, false} {
		for seed := range 150 {
			rnd := rand.New(rand.NewPCG(uint64(seed), 77))
			own := vx("10.244.0.0/24", "192.0.2.1", "aa:aa:aa:aa:aa:01")
			cfg := testConfig(true, false)
			if !kube {
				own = dualLease("10.5.0.0/24", "fd00:0:0:5::/64", "192.0.2.1", "2001:db8::1", "aa:aa:aa:aa:aa:01")
				cfg = testConfig(true, true)
			}
			cs := genCandidates(rnd, 5+rnd.IntN(40), kube)
			newA := func() *Admitter { return NewAdmitter(testRule(cfg, kube, "192.0.2.1"), &own, nil) }

			snap := newA()
			shuffled := slices.Clone(cs)
			rnd.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			snap.Apply(WatchResult{Snapshot: shuffled})
			want := reference(snap, cs)
			if got := sortedAdmitted(snap); !slices.Equal(got, want) {
				t.Fatalf("kube=%v seed %d: snapshot admitted %v, want %v", kube, seed, got, want)
			}
			checkInvariants(t, snap, &own)

			ev := newA()
			randomEvents(rnd, cs, ev, func(step int, now []Candidate) {
				if got, want := sortedAdmitted(ev), reference(ev, now); !slices.Equal(got, want) {
					t.Fatalf("kube=%v seed %d step %d: admitted %v, want %v; rejected %v", kube, seed, step, got, want, ev.Rejected())
				}
				checkInvariants(t, ev, &own)
			})
		}
	}
}

// randomEvents applies an empty snapshot to a, then random batches of events about cs, 4
// per lease; check hears each step and the leases present then.
func randomEvents(rnd *rand.Rand, cs []Candidate, a *Admitter, check func(step int, now []Candidate)) {
	a.Apply(WatchResult{Snapshot: []Candidate{}})
	present := map[int]bool{}
	for step := 0; step < 4*len(cs); {
		var r WatchResult
		for range 1 + rnd.IntN(6) {
			i := rnd.IntN(len(cs))
			if present[i] && rnd.IntN(3) == 0 {
				r.Events = append(r.Events, removedC(cs[i]).Events...)
				present[i] = false
			} else {
				r.Events = append(r.Events, addedC(cs[i]).Events...)
				present[i] = true
			}
			step++
		}
		a.Apply(r)
		var now []Candidate
		for i := range cs {
			if present[i] {
				now = append(now, cs[i])
			}
		}
		check(step, now)
	}
}

// FuzzAdmitter drives an Admitter with a fuzzed sequence of deliveries: after each the
// admitted set is the reference's and the invariants hold.
func FuzzAdmitter(f *testing.F) {
	f.Add(uint64(1), true, []byte{0x00, 0x01, 0x12, 0x03, 0x20, 0x04})
	f.Add(uint64(7), false, []byte{0x05, 0x06, 0x07, 0x15, 0x25, 0x08})
	f.Fuzz(func(t *testing.T, seed uint64, kube bool, ops []byte) {
		rnd := rand.New(rand.NewPCG(seed, 3))
		own := vx("10.244.0.0/24", "192.0.2.1", "aa:aa:aa:aa:aa:01")
		cfg := testConfig(true, false)
		if !kube {
			own = dualLease("10.5.0.0/24", "fd00:0:0:5::/64", "192.0.2.1", "2001:db8::1", "aa:aa:aa:aa:aa:01")
			cfg = testConfig(true, true)
		}
		cs := genCandidates(rnd, 16, kube)
		a := NewAdmitter(testRule(cfg, kube, "192.0.2.1"), &own, nil)
		a.Apply(WatchResult{Snapshot: []Candidate{}})
		present := map[int]bool{}
		var batch WatchResult
		for _, op := range ops {
			i := int(op&0x0f) % len(cs)
			switch op >> 6 {
			case 0:
				batch.Events = append(batch.Events, addedC(cs[i]).Events...)
				present[i] = true
			case 1:
				batch.Events = append(batch.Events, removedC(cs[i]).Events...)
				present[i] = false
			case 2:
				batch = WatchResult{Snapshot: []Candidate{}}
				for j := range cs {
					if present[j] {
						batch.Snapshot = append(batch.Snapshot, cs[j])
					}
				}
			}
			if op>>6 == 3 || op>>6 == 2 || op&0x30 == 0x30 {
				a.Apply(batch)
				batch = WatchResult{}
				var now []Candidate
				for j := range cs {
					if present[j] {
						now = append(now, cs[j])
					}
				}
				if got, want := sortedAdmitted(a), reference(a, now); !slices.Equal(got, want) {
					t.Fatalf("admitted %v, want %v", got, want)
				}
				checkInvariants(t, a, &own)
			}
		}
	})
}
