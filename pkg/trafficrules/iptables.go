package trafficrules

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// ruleSet is one mode's rules for one family.
type ruleSet interface {
	// String names mode and family ("iptables", "ip6tables", "nftables ip").
	String() string
	// ensure makes our rules true, touching only what differs, and returns the changes.
	ensure(ctx context.Context) (int, error)
	// cleanup removes all our rules (any config) and what they leave empty, returning the count.
	cleanup(ctx context.Context) (int, error)
}

// iptablesAPI is the part of go-iptables the rule set uses (a fake in unit tests).
type iptablesAPI interface {
	List(table, chain string) ([]string, error)
	ChainExists(table, chain string) (bool, error)
	NewChain(table, chain string) error
	DeleteChain(table, chain string) error
	Insert(table, chain string, pos int, rulespec ...string) error
	Delete(table, chain string, rulespec ...string) error
}

var _ iptablesAPI = (*iptables.IPTables)(nil)

type iptSet struct {
	ipt         iptablesAPI
	v6          bool
	cur         family
	prev        []family // earlier configurations of this instance: their rules are stale
	masq, fwd   bool
	randomFully bool
}

func (s *iptSet) String() string {
	if s.v6 {
		return "ip6tables"
	}
	return "iptables"
}

// userChain is one of our chains, with the rule that jumps to it from a built-in chain.
type userChain struct {
	table, chain string
	jump         ipRule
	want         []ipRule
	ours         []ipRule // every rule of this instance that may sit in the chain (want and stale)
}

func (s *iptSet) chains() []userChain {
	var out []userChain
	fams := append([]family{s.cur}, s.prev...)
	if s.masq {
		uc := userChain{table: "nat", chain: MasqChain, jump: iptMasqJump(), want: iptMasqRules(s.cur, s.randomFully)}
		for _, f := range fams {
			uc.ours = append(uc.ours, iptMasqRules(f, true)...)
			uc.ours = append(uc.ours, iptMasqRules(f, false)...)
		}
		out = append(out, uc)
	}
	if s.fwd {
		uc := userChain{table: "filter", chain: ForwardChain, jump: iptFwdJump(), want: iptFwdRules(s.cur)}
		for _, f := range fams {
			uc.ours = append(uc.ours, iptFwdRules(f)...)
		}
		out = append(out, uc)
	}
	return out
}

func (s *iptSet) allChains() []userChain {
	c := *s
	c.masq, c.fwd = true, true
	return c.chains()
}

// listRules returns a chain's "-A" lines; !exists: no such chain.
func (s *iptSet) listRules(table, chain string) (lines []string, exists bool, err error) {
	out, err := s.ipt.List(table, chain)
	if err != nil {
		ok, cerr := s.ipt.ChainExists(table, chain)
		if cerr == nil && !ok {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("list %s chain %s/%s: %w", s, table, chain, err)
	}
	for _, l := range out {
		if strings.HasPrefix(l, "-A ") {
			lines = append(lines, l)
		}
	}
	return lines, true, nil
}

func (s *iptSet) ensure(ctx context.Context) (int, error) {
	changes := 0
	for _, uc := range s.chains() {
		if err := ctx.Err(); err != nil {
			return changes, err
		}
		lines, exists, err := s.listRules(uc.table, uc.chain)
		if err != nil {
			return changes, err
		}
		if !exists {
			if err := s.ipt.NewChain(uc.table, uc.chain); err != nil {
				return changes, fmt.Errorf("create %s chain %s/%s: %w", s, uc.table, uc.chain, err)
			}
			changes++
		}
		n, err := s.applyPlan(uc.table, uc.chain, lines, uc.want, uc.ours)
		changes += n
		if err != nil {
			return changes, err
		}
		// The jump comes after the chain it names exists.
		jl, _, err := s.listRules(uc.jump.table, uc.jump.chain)
		if err != nil {
			return changes, err
		}
		n, err = s.applyPlan(uc.jump.table, uc.jump.chain, jl, []ipRule{uc.jump}, nil)
		changes += n
		if err != nil {
			return changes, err
		}
	}
	return changes, nil
}

// applyPlan makes the chain hold want in order, deleting our unwanted rules by text,
// never by number, so concurrent changes by others cannot shift a delete.
func (s *iptSet) applyPlan(table, chain string, have []string, want, ours []ipRule) (int, error) {
	byLine := make(map[string]ipRule, len(want)+len(ours))
	wantKeys := make([]string, len(want))
	for i, r := range want {
		wantKeys[i] = r.line()
		byLine[wantKeys[i]] = r
	}
	stale := make(map[string]bool, len(ours))
	for _, r := range ours {
		l := r.line()
		if _, ok := byLine[l]; !ok {
			byLine[l] = r
			stale[l] = true
		}
	}
	p := planChain(have, wantKeys, func(k string) bool { return stale[k] })
	if p.empty() {
		return 0, nil
	}
	n := 0
	for _, i := range p.del {
		r := byLine[have[i]]
		if err := s.ipt.Delete(table, chain, r.spec...); err != nil {
			return n, fmt.Errorf("delete %s rule %q: %w", s, have[i], err)
		}
		n++
	}
	for pos, e := range p.final {
		if e.have >= 0 {
			continue
		}
		r := want[e.want]
		if err := s.ipt.Insert(table, chain, pos+1, r.spec...); err != nil {
			return n, fmt.Errorf("insert %s rule %q at %d: %w", s, r.line(), pos+1, err)
		}
		n++
	}
	return n, nil
}

// cleanup removes our rules; a chain left with only shared rules goes too, with its jump.
func (s *iptSet) cleanup(ctx context.Context) (int, error) {
	var errs []error
	n := 0
	for _, uc := range s.allChains() {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		lines, exists, err := s.listRules(uc.table, uc.chain)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !exists {
			continue
		}
		ours := make(map[string]ipRule, len(uc.ours))
		for _, r := range uc.ours {
			ours[r.line()] = r
		}
		foreign := false
		for _, l := range lines {
			r, ok := ours[l]
			if !ok {
				foreign = true
				continue
			}
			if r.generic() {
				continue
			}
			if err := s.ipt.Delete(uc.table, uc.chain, r.spec...); err != nil {
				errs = append(errs, fmt.Errorf("delete %s rule %q: %w", s, l, err))
			} else {
				n++
			}
		}
		if foreign {
			continue // another instance still uses the chain
		}
		for _, l := range lines {
			if r := ours[l]; r.generic() {
				if err := s.ipt.Delete(uc.table, uc.chain, r.spec...); err != nil {
					errs = append(errs, fmt.Errorf("delete %s rule %q: %w", s, l, err))
				} else {
					n++
				}
			}
		}
		jl, _, err := s.listRules(uc.jump.table, uc.jump.chain)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, l := range jl {
			if l == uc.jump.line() {
				if err := s.ipt.Delete(uc.jump.table, uc.jump.chain, uc.jump.spec...); err != nil {
					errs = append(errs, fmt.Errorf("delete %s jump to %s: %w", s, uc.chain, err))
				} else {
					n++
				}
			}
		}
		if err := s.ipt.DeleteChain(uc.table, uc.chain); err != nil {
			errs = append(errs, fmt.Errorf("delete %s chain %s/%s: %w", s, uc.table, uc.chain, err))
		} else {
			n++
		}
	}
	return n, errors.Join(errs...)
}

// familyOf builds a family; either prefix invalid: none.
func familyOf(v6 bool, network, subnet netip.Prefix) (family, bool) {
	if !network.IsValid() || !subnet.IsValid() {
		return family{}, false
	}
	return family{v6: v6, network: network.Masked(), subnet: subnet.Masked()}, true
}
