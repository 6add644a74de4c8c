package subnet

import (
	"cmp"
	"slices"

	"k8s.io/klog/v2"
)

// settleKeys holds all but the winner (by resolve's order) of admitted peers sharing a
// backend key as DuplicateKey: out of Peers and Admitted, in place for the overlap rule.
func (a *Admitter) settleKeys() {
	if a.rule.backendKey == nil {
		return
	}
	prev := map[ident]*held{}
	for id, h := range a.held {
		if h.rej.Reason == DuplicateKey {
			prev[id] = h
			delete(a.held, id)
		}
	}
	first := make(map[string]int, a.list.Len()) // key -> position of its current winner
	a.keyLost = a.keyLost[:0]
	for i := range a.list.Len() {
		l := a.list.At(i)
		k, ok := a.rule.backendKey(&l)
		if !ok {
			continue
		}
		w, dup := first[k]
		if !dup {
			first[k] = i
			continue
		}
		if a.keyBefore(i, w) {
			first[k], w, i = i, i, w // i wins; the former winner loses
		}
		c := a.candidateAt(i)
		a.reject(a.identAt(i), &c, Reject(DuplicateKey, "its backend key %s is also the older lease %s's", k, a.identAt(w)), prev)
		a.keyLost = append(a.keyLost, i)
	}
	slices.Sort(a.keyLost)
	for id, h := range prev {
		if a.held[id] == nil {
			klog.InfoS("Admitted peer lease rejected before", "lease", id.String(), "was", h.rej.Reason)
		}
	}
	if len(a.keyLost) == 0 {
		return
	}
	n, lost := 0, a.keyLost
	a.view.resetWith(a.list.Len()-len(lost), func(int) *Lease {
		for len(lost) > 0 && lost[0] == n {
			n, lost = n+1, lost[1:]
		}
		l := a.list.At(n)
		n++
		return &l
	})
}

// keyBefore reports whether the admitted lease at i wins a backend-key contest against j's.
func (a *Admitter) keyBefore(i, j int) bool {
	if c := cmp.Compare(a.sen[i], a.sen[j]); c != 0 {
		return c < 0
	}
	if c := cmp.Compare(a.identAt(i).String(), a.identAt(j).String()); c != 0 {
		return c < 0
	}
	return i < j // the list is ordered by key
}

func (a *Admitter) keyLoser(i int) bool {
	_, ok := slices.BinarySearch(a.keyLost, i)
	return ok
}
