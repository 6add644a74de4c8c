package main

import (
	"slices"
	"strings"

	"github.com/spf13/pflag"

	"github.com/flannel-go/flannel/pkg/logwarn"
)

// unknownVariable is a FLANNELD_* environment variable that names no flag, with the
// variable it is probably a misspelling of ("" when none is close).
type unknownVariable struct {
	Name, Suggest string
}

// unknownVariables returns the FLANNELD_* variables of environ ("NAME=value") that fill
// no flag, sorted by name. FLANNELD_VERSION is known: it names a flag, which it does
// not set (as upstream).
func unknownVariables(environ []string) []unknownVariable {
	var r rawOptions
	var known []string
	newFlagSet(&r).VisitAll(func(f *pflag.Flag) { known = append(known, envName(f.Name)) })
	var out []unknownVariable
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, envPrefix+"_") || slices.Contains(known, name) {
			continue
		}
		out = append(out, unknownVariable{Name: name, Suggest: closest(name, known)})
	}
	slices.SortFunc(out, func(a, b unknownVariable) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// warnUnknownVariables warns once about each FLANNELD_* variable that fills no flag.
func warnUnknownVariables(environ []string) {
	for _, u := range unknownVariables(environ) {
		kv := []any{"variable", u.Name}
		if u.Suggest != "" {
			kv = append(kv, "didYouMean", u.Suggest)
		}
		logwarn.S("Ignoring an environment variable that fills no flag", kv...)
	}
}

// closest is the candidate name is probably a misspelling of: the nearest in edit
// distance (a swap of two neighbouring letters counts as one edit), allowing one edit
// per four letters of the shorter flag part (one for three to seven), none below three
// letters; "" when none is that close.
func closest(name string, candidates []string) string {
	best, bestD := "", -1
	part := func(s string) int { return len(strings.TrimPrefix(s, envPrefix+"_")) }
	for _, c := range candidates {
		n := min(part(name), part(c))
		limit := n / 4
		if n >= 3 {
			limit = max(limit, 1)
		}
		if d := editDistance(name, c); d <= limit && (bestD < 0 || d < bestD) {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the optimal string alignment distance of a and b (bytes).
func editDistance(a, b string) int {
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
