package trafficrules

// A chain plan turns a chain's rules (keys in order: iptables text, nftables comment) into the
// wanted ones: our rules in place and in order stay, duplicates, misordered and stale ones go,
// others' are left; a missing rule goes after the previous wanted one, else before the next.

// planEntry is a rule after the plan: its index in have (-1: to add) and in want (-1: foreign).
type planEntry struct {
	have int
	want int
}

type chainPlan struct {
	del   []int       // indices into have, descending (delete in this order)
	final []planEntry // the chain after the plan, in order
}

func (p chainPlan) empty() bool {
	if len(p.del) > 0 {
		return false
	}
	for _, e := range p.final {
		if e.have < 0 {
			return false
		}
	}
	return true
}

func planChain(have, want []string, stale func(string) bool) chainPlan {
	wantIdx := make(map[string]int, len(want))
	for i, k := range want {
		if _, dup := wantIdx[k]; !dup {
			wantIdx[k] = i
		}
	}
	var p chainPlan
	kept := make([]bool, len(want))
	last := -1
	var remain []planEntry
	for i, k := range have {
		w, ok := wantIdx[k]
		switch {
		case ok && !kept[w] && w > last:
			kept[w], last = true, w
			remain = append(remain, planEntry{have: i, want: w})
		case ok || (stale != nil && stale(k)):
			p.del = append(p.del, i)
		default:
			remain = append(remain, planEntry{have: i, want: -1})
		}
	}
	for i, j := 0, len(p.del)-1; i < j; i, j = i+1, j-1 {
		p.del[i], p.del[j] = p.del[j], p.del[i]
	}
	for w := range want {
		if kept[w] {
			continue
		}
		pos := len(remain) // append when no wanted rule is present
		prev, next := -1, -1
		for i, e := range remain {
			if e.want >= 0 && e.want < w {
				prev = i
			}
			if e.want > w && next < 0 {
				next = i
			}
		}
		switch {
		case prev >= 0:
			pos = prev + 1
		case next >= 0:
			pos = next
		}
		remain = append(remain, planEntry{})
		copy(remain[pos+1:], remain[pos:])
		remain[pos] = planEntry{have: -1, want: w}
	}
	p.final = remain
	return p
}
