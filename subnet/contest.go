package subnet

import (
	"cmp"
	"net/netip"
	"slices"

	"k8s.io/klog/v2"
)

// member is a lease of a contested set: leases that overlap one another.
type member struct {
	c   Candidate
	id  ident
	src int   // index in the candidates it came from; -1 for others
	pos int   // position in the admitted list when admitted now, else -1
	adj []int // members it overlaps
	win bool
	rej *Rejection // why it lost
}

// contested returns the candidates that overlap another, with their overlaps; nil if none.
func (a *Admitter) contested(cs []Candidate) []member {
	var ms []member
	idx := map[int]int{} // candidate -> member
	get := func(i int) int {
		if m, ok := idx[i]; ok {
			return m
		}
		idx[i] = len(ms)
		ms = append(ms, member{c: cs[i], id: a.identOf(&cs[i]), src: i, pos: -1})
		return len(ms) - 1
	}
	pair := func(i, j int) {
		mi, mj := get(i), get(j)
		ms[mi].adj = append(ms[mi].adj, mj)
		ms[mj].adj = append(ms[mj].adj, mi)
	}
	sub := func(i int) [2]netip.Prefix { return a.subnetsOf(&cs[i].Lease) }
	sweep(len(cs), func(i int) netip.Prefix { return sub(i)[0] }, pair)
	if a.rule.v6 {
		perm := make([]int, len(cs))
		six := make([]pfxKey, len(cs))
		for i := range perm {
			perm[i], six[i] = i, pfxKeyOf(sub(i)[1])
		}
		slices.SortFunc(perm, func(x, y int) int { return six[x].compare(six[y]) })
		sweep(len(cs), func(i int) netip.Prefix { return six[perm[i]].prefix() }, func(i, j int) { pair(perm[i], perm[j]) })
	}
	return ms
}

// resolve decides a contested set: in seniority order (then name, then key), a member
// wins unless it overlaps a member that won before it.
func (a *Admitter) resolve(ms []member) {
	order := make([]int, len(ms))
	names := make([]string, len(ms))
	for i := range ms {
		order[i], names[i] = i, ms[i].id.String()
	}
	slices.SortFunc(order, func(x, y int) int {
		if c := cmp.Compare(ms[x].c.Origin.Seniority, ms[y].c.Origin.Seniority); c != 0 {
			return c
		}
		if c := cmp.Compare(names[x], names[y]); c != 0 {
			return c
		}
		return keyOf(&ms[x].c.Lease).compare(keyOf(&ms[y].c.Lease))
	})
	decided := make([]bool, len(ms))
	for _, i := range order {
		m := &ms[i]
		m.win = true
		for _, j := range m.adj {
			if decided[j] && ms[j].win {
				m.win = false
				m.rej = Reject(OverlapsPeer, "it overlaps the older lease %s", names[j])
				break
			}
		}
		decided[i] = true
	}
}

// admit admits pending leases (ordered by key): those overlapping nothing at once, the others by
// resolve with every admitted lease and held loser they reach. changed: the admitted set did.
func (a *Admitter) admit(pending []Candidate, prev map[ident]*held) (changed bool) {
	type loser struct {
		id ident
		h  *held
	}
	var losers []loser
	for id, h := range a.held {
		if h.rej.Reason == OverlapsPeer {
			losers = append(losers, loser{id, h})
		}
	}
	np := len(pending)
	subs := make([][2]netip.Prefix, np+len(losers))
	for i := range pending {
		subs[i] = a.subnetsOf(&pending[i].Lease)
	}
	for i, l := range losers {
		subs[np+i] = a.subnetsOf(&l.h.cand.Lease)
	}
	type pair struct{ i, j int }
	var pairs []pair
	conflict := make([]bool, np)
	perm := make([]int, len(subs))
	keys := make([]pfxKey, len(subs))
	for f := range 2 {
		for i := range subs {
			perm[i], keys[i] = i, pfxKeyOf(subs[i][f])
		}
		slices.SortFunc(perm, func(x, y int) int { return keys[x].compare(keys[y]) })
		sweep(len(perm), func(k int) netip.Prefix { return subs[perm[k]][f] }, func(x, y int) {
			i, j := perm[x], perm[y]
			if i >= np && j >= np {
				return // two losers
			}
			pairs = append(pairs, pair{i, j})
			for _, k := range [2]int{i, j} {
				if k < np {
					conflict[k] = true
				}
			}
		})
	}
	for i := range pending {
		for _, p := range subs[i] {
			if !conflict[i] {
				a.admittedOverlapping(p, func(int) { conflict[i] = true })
			}
		}
	}
	if !slices.Contains(conflict, true) {
		a.insert(pending)
		return true
	}

	var ms []member
	byPending := map[int]int{}
	byPos := map[int]int{}
	byLoser := map[int]int{} // index in losers -> member
	link := func(i, j int) {
		ms[i].adj = append(ms[i].adj, j)
		ms[j].adj = append(ms[j].adj, i)
	}
	addLoser := func(k int) int {
		if m, ok := byLoser[k]; ok {
			return m
		}
		byLoser[k] = len(ms)
		ms = append(ms, member{c: *losers[k].h.cand, id: losers[k].id, src: -1, pos: -1})
		return len(ms) - 1
	}
	for i := range pending {
		if conflict[i] {
			byPending[i] = len(ms)
			ms = append(ms, member{c: pending[i], id: a.identOf(&pending[i]), src: i, pos: -1})
		}
	}
	for _, p := range pairs {
		mi, ok := byPending[p.i]
		if p.i >= np {
			mi, ok = addLoser(p.i-np), true
		}
		mj, ok2 := byPending[p.j]
		if p.j >= np {
			mj, ok2 = addLoser(p.j-np), true
		}
		if ok && ok2 {
			link(mi, mj)
		}
	}
	for q := 0; q < len(ms); q++ {
		cur, curPos := ms[q].c.Lease, ms[q].pos
		sub := a.subnetsOf(&cur)
		for _, p := range sub {
			a.admittedOverlapping(p, func(pos int) {
				if pos == curPos {
					return
				}
				j, ok := byPos[pos]
				if !ok {
					j = len(ms)
					byPos[pos] = j
					ms = append(ms, member{c: a.candidateAt(pos), id: a.identAt(pos), src: -1, pos: pos})
				}
				link(q, j)
			})
		}
		if ms[q].src >= 0 {
			continue // its losers came from the sweep
		}
		for k, l := range losers {
			if l.id == ms[q].id {
				continue
			}
			ls := subs[np+k]
			if sub[0].IsValid() && ls[0].IsValid() && sub[0].Overlaps(ls[0]) || sub[1].IsValid() && ls[1].IsValid() && sub[1].Overlaps(ls[1]) {
				if j, ok := byLoser[k]; !ok || !slices.Contains(ms[q].adj, j) {
					link(q, addLoser(k))
				}
			}
		}
	}
	a.resolve(ms)

	var del []int
	add := make([]Candidate, 0, len(pending))
	for i := range pending {
		if !conflict[i] {
			add = append(add, pending[i])
		}
	}
	for i := range ms {
		m := &ms[i]
		switch {
		case m.pos >= 0 && !m.win: // demoted
			del = append(del, m.pos)
			a.reject(m.id, &m.c, m.rej, prev)
		case m.pos < 0 && m.win:
			if h := a.held[m.id]; h != nil {
				delete(a.held, m.id)
				klog.InfoS("Admitted peer lease rejected before", "lease", m.id.String(), "was", h.rej.Reason)
			}
			add = append(add, m.c)
		case m.pos < 0 && !m.win:
			a.reject(m.id, &m.c, m.rej, prev)
		}
	}
	if len(del) > 0 {
		slices.Sort(del)
		a.deleteAt(del)
	}
	sortCandidates(add)
	a.insert(add)
	return len(del) > 0 || len(add) > 0
}
