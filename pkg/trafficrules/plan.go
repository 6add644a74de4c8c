package trafficrules

// A chain plan turns a chain's rules into the wanted ones, touching only what differs:
// rules in place keep position, counters and handles. have and want list rule keys in
// order (iptables: rule text; nftables: comment). A rule of have is kept when wanted and
// in order (first occurrence after the last kept), deleted when a duplicate, out of order
// or stale(key) (ours, no longer wanted), and else left alone (not ours). Missing rules
// go after the previous wanted rule, else before the next, else at the end.

// planEntry is a rule after the plan: have is its index in have (-1: to add), want its
// index in want (-1: foreign).
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
