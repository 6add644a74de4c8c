package subnet

import (
	"cmp"
	"encoding/json"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// macKey stands in for a backend key: the lease's VtepMAC.
func macKey(l *Lease) (string, bool) {
	s := string(l.Attrs.BackendData)
	i := strings.Index(s, `"VtepMAC":"`)
	if i < 0 {
		return "", false
	}
	s = s[i+len(`"VtepMAC":"`):]
	return s[:strings.IndexByte(s, '"')], true
}

func keyedRule(cfg *Config, kube bool) *Rule {
	cfg.BackendType = "vxlan"
	return NewRule(cfg, RuleOptions{Kube: kube,
		BackendData: map[string]func(json.RawMessage) error{"vxlan": vxlanCheck},
		BackendKey:  map[string]func(*Lease) (string, bool){"vxlan": macKey, "other": nil},
		LocalAddrs:  func() ([]netip.Addr, error) { return []netip.Addr{netip.MustParseAddr("192.0.2.1")}, nil }})
}

// Two peers with one backend key: the older wins whatever the arrival order; the loser is
// counted once as duplicate_key, keeps its subnet and is admitted when the winner goes.
func TestAdmitterBackendKey(t *testing.T) {
	own := vx("10.244.1.0/24", "192.0.2.1", "aa:aa:aa:aa:aa:01")
	young := named(vx("10.244.2.0/24", "192.0.2.2", "aa:aa:aa:aa:aa:02"), "node-2", 100)
	old := named(vx("10.244.3.0/24", "192.0.2.3", "aa:aa:aa:aa:aa:02"), "node-3", 50)
	other := named(vx("10.244.4.0/24", "192.0.2.4", "aa:aa:aa:aa:aa:04"), "node-4", 10)
	inYoung := named(vx("10.244.2.128/25", "192.0.2.5", "aa:aa:aa:aa:aa:05"), "node-5", 200) // overlaps the loser, younger

	for _, arrival := range [][]Candidate{{young, old, other, inYoung}, {old, young, inYoung, other}} {
		for _, asSnapshot := range []bool{true, false} {
			n := counter{}
			a := NewAdmitter(keyedRule(testConfig(true, false), true), &own, n.add)
			if asSnapshot {
				a.Apply(WatchResult{Snapshot: slices.Clone(arrival)})
			} else {
				a.Apply(WatchResult{Snapshot: []Candidate{}})
				for _, c := range arrival {
					a.Apply(addedC(c))
				}
			}
			if got := sortedAdmitted(a); !slices.Equal(got, []string{"node-3", "node-4"}) {
				t.Fatalf("snapshot %v, order %v: admitted %v, want node-3 and node-4", asSnapshot, arrival, got)
			}
			if got := keysOf(a.Peers()); !slices.Equal(got, []string{"10.244.3.0-24", "10.244.4.0-24"}) {
				t.Fatalf("peers %v", got)
			}
			rej := rejectedReasons(a)
			if rej["node-2"] != DuplicateKey || rej["node-5"] != OverlapsPeer || len(rej) != 2 {
				t.Fatalf("rejected %v, want node-2 duplicate_key, node-5 overlaps_peer", rej)
			}
			if n[DuplicateKey] != 1 {
				t.Errorf("duplicate_key counted %d times, want 1", n[DuplicateKey])
			}
			for _, r := range a.Rejected() {
				if r.Name == "node-2" && (r.Lease == nil || !strings.Contains(r.Detail, "node-3")) {
					t.Errorf("the loser's listing %+v: want its lease and the winner's name", r)
				}
			}
		}
	}

	a := NewAdmitter(keyedRule(testConfig(true, false), true), &own, nil)
	a.Apply(WatchResult{Snapshot: []Candidate{young, old, other}})
	if !a.Apply(removedC(old)) {
		t.Fatal("the winner's removal changed nothing")
	}
	if got := sortedAdmitted(a); !slices.Equal(got, []string{"node-2", "node-4"}) || len(a.Rejected()) != 0 {
		t.Fatalf("after the winner went: admitted %v, rejected %v", got, a.Rejected())
	}
	a.Apply(addedC(old))
	if got := sortedAdmitted(a); !slices.Equal(got, []string{"node-3", "node-4"}) {
		t.Fatalf("the older back: admitted %v", got)
	}
	rotated := young
	rotated.Lease = vx("10.244.2.0/24", "192.0.2.2", "aa:aa:aa:aa:aa:22")
	rotated.Origin.Version++
	if !a.Apply(addedC(rotated)) {
		t.Fatal("a new key changed nothing")
	}
	if got := sortedAdmitted(a); !slices.Equal(got, []string{"node-2", "node-3", "node-4"}) || len(a.Rejected()) != 0 {
		t.Fatalf("after the loser's new key: admitted %v, rejected %v", got, a.Rejected())
	}
}

// Without a key for the network's backend, leases sharing a MAC are all admitted.
func TestAdmitterNoBackendKey(t *testing.T) {
	own := vx("10.244.1.0/24", "192.0.2.1", "aa:aa:aa:aa:aa:01")
	cfg := testConfig(true, false)
	cfg.BackendType = "other"
	a := NewAdmitter(NewRule(cfg, RuleOptions{Kube: true, BackendKey: map[string]func(*Lease) (string, bool){"vxlan": macKey}}), &own, nil)
	a.Apply(WatchResult{Snapshot: []Candidate{
		named(vx("10.244.2.0/24", "192.0.2.2", "aa:aa:aa:aa:aa:02"), "node-2", 1),
		named(vx("10.244.3.0/24", "192.0.2.3", "aa:aa:aa:aa:aa:02"), "node-3", 2)}})
	if got := a.Peers().Len(); got != 2 {
		t.Fatalf("%d peers, want 2", got)
	}
}

// referenceKeyed is reference followed by the backend-key stage written the plain way.
func referenceKeyed(a *Admitter, cs []Candidate) []string {
	won := map[string]bool{}
	for _, n := range reference(a, cs) {
		won[n] = true
	}
	var ok []Candidate
	for i := range cs {
		if won[a.identOf(&cs[i]).String()] {
			ok = append(ok, cs[i])
		}
	}
	slices.SortFunc(ok, func(x, y Candidate) int {
		if c := cmp.Compare(x.Origin.Seniority, y.Origin.Seniority); c != 0 {
			return c
		}
		if c := cmp.Compare(a.identOf(&x).String(), a.identOf(&y).String()); c != 0 {
			return c
		}
		return keyOf(&x.Lease).compare(keyOf(&y.Lease))
	})
	seen := map[string]bool{}
	var out []string
	for i := range ok {
		if k, has := macKey(&ok[i].Lease); has {
			if seen[k] {
				continue
			}
			seen[k] = true
		}
		out = append(out, a.identOf(&ok[i]).String())
	}
	slices.Sort(out)
	return out
}

// Random lease sets whose keys repeat, as a snapshot or as random batches of events:
// the admitted set is always the plain reference's, and no two peers share a key.
func TestAdmitterBackendKeyOrderIndependent(t *testing.T) {
	macs := []string{"0e:00:00:00:00:01", "0e:00:00:00:00:02", "0e:00:00:00:00:03"}
	n := counter{}
	for seed := range 150 {
		rnd := rand.New(rand.NewPCG(uint64(seed), 91))
		own := vx("10.244.0.0/24", "192.0.2.1", "aa:aa:aa:aa:aa:01")
		cs := genCandidates(rnd, 5+rnd.IntN(40), true)
		for i := range cs {
			if rnd.IntN(2) == 0 && cs[i].Lease.Attrs.BackendData != nil {
				cs[i].Lease.Attrs.BackendData = json.RawMessage(`{"VNI":1,"VtepMAC":"` + macs[rnd.IntN(len(macs))] + `"}`)
			}
		}
		newA := func() *Admitter { return NewAdmitter(keyedRule(testConfig(true, false), true), &own, nil) }
		noDup := func(a *Admitter) {
			t.Helper()
			seen := map[string]bool{}
			for l := range a.Peers().All() {
				if k, ok := macKey(&l); ok && seen[k] {
					t.Fatalf("seed %d: two peers share %s", seed, k)
				} else {
					seen[k] = true
				}
			}
			if a.Peers().Len() != len(a.Admitted()) {
				t.Fatalf("seed %d: %d peers, %d admitted", seed, a.Peers().Len(), len(a.Admitted()))
			}
		}

		snap := NewAdmitter(keyedRule(testConfig(true, false), true), &own, n.add)
		snap.Apply(WatchResult{Snapshot: slices.Clone(cs)})
		if got, want := sortedAdmitted(snap), referenceKeyed(snap, cs); !slices.Equal(got, want) {
			t.Fatalf("seed %d: snapshot admitted %v, want %v", seed, got, want)
		}
		noDup(snap)

		ev := newA()
		randomEvents(rnd, cs, ev, func(step int, now []Candidate) {
			if got, want := sortedAdmitted(ev), referenceKeyed(ev, now); !slices.Equal(got, want) {
				t.Fatalf("seed %d step %d: admitted %v, want %v; rejected %v", seed, step, got, want, ev.Rejected())
			}
			noDup(ev)
		})
	}
	if n[DuplicateKey] < 50 {
		t.Errorf("only %d duplicate keys in the snapshots: the test does not exercise the stage", n[DuplicateKey])
	}
	t.Logf("snapshots: %d leases rejected for a duplicate key, %d for an overlap", n[DuplicateKey], n[OverlapsPeer])
}
