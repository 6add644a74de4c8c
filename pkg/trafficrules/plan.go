package trafficrules

// A chain plan turns the rules a chain holds into the rules it must hold, touching only
// what differs: rules that are in place keep their position, counters and handles.
//
// have lists the keys of the chain's rules in order (iptables: the rule text; nftables:
// the comment). want lists the keys this instance needs there, in order. A rule of have is
//   - kept when it is wanted and in order (greedy: the first occurrence that comes after
//     the previously kept wanted rule);
//   - deleted when it is wanted but a duplicate or out of order, or when stale(key) says
//     it is this instance's but no longer wanted (an old network or subnet);
//   - left alone otherwise (another instance's or program's rule).
// Missing wanted rules are placed right after the previous wanted rule, or before the next
// one when none precedes it, or at the end when the chain holds none of them.

// planEntry is one rule of the chain after the plan: have >= 0 is an existing rule (index
// into have), have == -1 a rule to add; want is its index in want (-1 for foreign rules).
type planEntry struct {
	have int
	want int
}

type chainPlan struct {
	del   []int       // indices into have, descending (delete in this order)
	final []planEntry // the chain after the plan, in order
}

// empty reports whether the plan changes nothing.
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
