package subnet

import (
	"net/netip"
	"slices"
	"sort"
)

// resetTo makes cs (ordered by key, one lease per key) the admitted set.
func (a *Admitter) resetTo(cs []Candidate) {
	a.list.resetWith(len(cs), func(i int) *Lease { return &cs[i].Lease })
	a.sen = resize(a.sen, len(cs))
	for i := range cs {
		a.sen[i] = cs[i].Origin.Seniority
	}
	if a.names != nil {
		a.names = resize(a.names, len(cs))
		for i := range cs {
			a.names[i] = a.identOf(&cs[i]).name
		}
	}
	a.n4, a.n6 = [33]int32{}, [129]int32{}
	a.idx6 = a.idx6[:0]
	for i := range cs {
		a.count(&cs[i].Lease, 1)
	}
	slices.SortFunc(a.idx6, sub6.compare)
}

// resize returns s with length n, reusing its storage unless over twice the size needed.
func resize[T any](s []T, n int) []T {
	if c := cap(s); c < n || (c > 2*n && c > 1024) {
		return make([]T, n)
	}
	clear(s[n:cap(s)])
	return s[:n]
}

// count adds d to the length counts of l's judged subnets, appending added IPv6 ones to idx6.
func (a *Admitter) count(l *Lease, d int32) {
	has4, has6 := a.rule.families(l)
	if has4 {
		a.n4[l.Subnet.Bits()] += d
	}
	if has6 {
		a.n6[l.IPv6Subnet.Bits()] += d
		if d > 0 {
			k := keyOf(l)
			a.idx6 = append(a.idx6, sub6{six: k.sn6, four: k.sn})
		}
	}
}

// deleteAt removes the admitted leases at the given positions (ascending, distinct).
func (a *Admitter) deleteAt(at []int) {
	if len(at) == 0 {
		return
	}
	var gone6 []sub6
	for _, i := range at {
		l := a.list.At(i)
		a.count(&l, -1)
		if _, has6 := a.rule.families(&l); has6 {
			k := keyOf(&l)
			gone6 = append(gone6, sub6{six: k.sn6, four: k.sn})
		}
	}
	a.list.Delete(at)
	a.sen = deletePositions(a.sen, at)
	if a.names != nil {
		a.names = deletePositions(a.names, at)
	}
	if len(gone6) > 0 {
		slices.SortFunc(gone6, sub6.compare)
		a.idx6 = deleteSorted(a.idx6, gone6, sub6.compare)
	}
}

// insert adds candidates (ordered by key, keys not admitted yet).
func (a *Admitter) insert(cs []Candidate) {
	if len(cs) == 0 {
		return
	}
	at := make([]int, len(cs))
	for j := range cs {
		at[j], _ = a.find(keyOf(&cs[j].Lease)) // ascending, as cs is ordered
	}
	a.list.insertWith(at, func(j int) *Lease { return &cs[j].Lease })
	sen := make([]int64, len(cs))
	var names []string
	if a.names != nil {
		names = make([]string, len(cs))
	}
	n6 := len(a.idx6)
	for j := range cs {
		sen[j] = cs[j].Origin.Seniority
		if names != nil {
			names[j] = a.identOf(&cs[j]).name
		}
		a.count(&cs[j].Lease, 1)
	}
	a.sen = insertPositions(a.sen, at, sen)
	if a.names != nil {
		a.names = insertPositions(a.names, at, names)
	}
	if len(a.idx6) > n6 {
		added := slices.Clone(a.idx6[n6:])
		slices.SortFunc(added, sub6.compare)
		a.idx6 = mergeSorted(a.idx6[:n6], added, sub6.compare)
	}
}

// deletePositions removes s[i] for every i in at (ascending, distinct).
func deletePositions[T any](s []T, at []int) []T {
	w, g := at[0], 0
	for i := at[0]; i < len(s); i++ {
		if g < len(at) && at[g] == i {
			g++
			continue
		}
		s[w] = s[i]
		w++
	}
	clear(s[w:])
	return s[:w]
}

// insertPositions inserts vs[j] before s[at[j]] (at ascending), as PeerList.Insert.
func insertPositions[T any](s []T, at []int, vs []T) []T {
	n := len(s)
	s = slices.Grow(s, len(vs))[:n+len(vs)]
	i, j := n-1, len(vs)-1
	for w := len(s) - 1; j >= 0; w-- {
		if i >= at[j] {
			s[w] = s[i]
			i--
		} else {
			s[w] = vs[j]
			j--
		}
	}
	return s
}

// deleteSorted removes from the ordered s one element equal to each of the ordered rm.
func deleteSorted[T any](s, rm []T, compare func(T, T) int) []T {
	out, j := s[:0], 0
	for _, x := range s {
		for j < len(rm) && compare(rm[j], x) < 0 {
			j++
		}
		if j < len(rm) && compare(rm[j], x) == 0 {
			j++
			continue
		}
		out = append(out, x)
	}
	return out
}

func mergeSorted[T any](s, add []T, compare func(T, T) int) []T {
	n := len(s)
	s = slices.Grow(s, len(add))[:n+len(add)]
	i, j := n-1, len(add)-1
	for w := len(s) - 1; j >= 0; w-- {
		if i >= 0 && compare(s[i], add[j]) > 0 {
			s[w] = s[i]
			i--
		} else {
			s[w] = add[j]
			j--
		}
	}
	return s
}

// admittedOverlapping calls f with the position of each admitted lease overlapping p.
func (a *Admitter) admittedOverlapping(p netip.Prefix, f func(pos int)) {
	if !p.IsValid() {
		return
	}
	p = p.Masked()
	if p.Addr().Is4() {
		a.overlapping4(p, f)
	} else {
		a.overlapping6(p, f)
	}
}

func (a *Admitter) overlapping4(p netip.Prefix, f func(pos int)) {
	n := a.list.Len()
	lb := pfxKeyOf(netip.PrefixFrom(p.Addr(), 0))
	// Those that start inside p: p itself, its descendants, and ancestors at p's address.
	for i := sort.Search(n, func(i int) bool { return a.list.compareV4At(i, lb) >= 0 }); i < n; i++ {
		q := a.list.subnet4(i)
		if !q.IsValid() || q.Bits() == 0 || !p.Contains(q.Addr()) {
			break
		}
		f(i)
	}
	// Ancestors that start before p: one probe per length present.
	for bits := 1; bits < p.Bits(); bits++ {
		if a.n4[bits] == 0 {
			continue
		}
		q := netip.PrefixFrom(p.Addr(), bits).Masked()
		if q.Addr() == p.Addr() {
			continue
		}
		k := pfxKeyOf(q)
		if i := sort.Search(n, func(i int) bool { return a.list.compareV4At(i, k) >= 0 }); i < n && a.list.compareV4At(i, k) == 0 {
			f(i)
		}
	}
}

func (a *Admitter) overlapping6(p netip.Prefix, f func(pos int)) {
	n := len(a.idx6)
	owner := func(e sub6) {
		if i, ok := a.find(leaseKey{sn: e.four, sn6: e.six}); ok {
			f(i)
		}
	}
	lb := pfxKeyOf(netip.PrefixFrom(p.Addr(), 0))
	for i := sort.Search(n, func(i int) bool { return a.idx6[i].six.compare(lb) >= 0 }); i < n; i++ {
		if !p.Contains(a.idx6[i].six.prefix().Addr()) {
			break
		}
		owner(a.idx6[i])
	}
	for bits := 1; bits < p.Bits(); bits++ {
		if a.n6[bits] == 0 {
			continue
		}
		q := netip.PrefixFrom(p.Addr(), bits).Masked()
		if q.Addr() == p.Addr() {
			continue
		}
		k := pfxKeyOf(q)
		i := sort.Search(n, func(i int) bool { return a.idx6[i].six.compare(k) >= 0 })
		for ; i < n && a.idx6[i].six == k; i++ {
			owner(a.idx6[i])
		}
	}
}

// subnetsOf are the judged subnets of a lease (at most one per family).
func (a *Admitter) subnetsOf(l *Lease) (out [2]netip.Prefix) {
	has4, has6 := a.rule.families(l)
	if has4 {
		out[0] = l.Subnet.Masked()
	}
	if has6 {
		out[1] = l.IPv6Subnet.Masked()
	}
	return out
}

func (a *Admitter) overlaps(x, y *Lease) bool {
	sx, sy := a.subnetsOf(x), a.subnetsOf(y)
	for f := range sx {
		if sx[f].IsValid() && sy[f].IsValid() && sx[f].Overlaps(sy[f]) {
			return true
		}
	}
	return false
}

// sweep calls pair(i, j) for every two overlapping prefixes, ordered by key (zero first),
// comparing each with the chain of earlier prefixes that contain its address.
func sweep(n int, at func(i int) netip.Prefix, pair func(i, j int)) {
	type link struct {
		i int
		p netip.Prefix
	}
	var chain []link
	for i := range n {
		p := at(i)
		if !p.IsValid() {
			continue
		}
		for len(chain) > 0 && !chain[len(chain)-1].p.Contains(p.Addr()) {
			chain = chain[:len(chain)-1]
		}
		for _, l := range chain {
			pair(l.i, i)
		}
		chain = append(chain, link{i, p})
	}
}
