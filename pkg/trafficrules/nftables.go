package trafficrules

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"sigs.k8s.io/knftables"
)

// nftSet is one family's table, flannel-ipv4 (ip) or flannel-ipv6 (ip6). Comments name the
// instance's network; comment-less rules in our chains are upstream's leftovers, removed.
type nftSet struct {
	nft         knftables.Interface
	v6          bool
	table       string
	cur         family
	prevNets    []netip.Prefix
	masq, fwd   bool
	randomFully bool
}

func (s *nftSet) String() string {
	if s.v6 {
		return "nftables ip6"
	}
	return "nftables ip"
}

func nftTableFor(v6 bool) (knftables.Family, string) {
	if v6 {
		return knftables.IPv6Family, NFTTableIPv6
	}
	return knftables.IPv4Family, NFTTableIPv4
}

type nftChainSpec struct {
	chain *knftables.Chain
	want  []nftRule
	kind  string // comment kind ("masq", "forward")
}

func nftMasqChain() *knftables.Chain {
	return &knftables.Chain{
		Name:     NFTMasqChain,
		Type:     knftables.PtrTo(knftables.NATType),
		Hook:     knftables.PtrTo(knftables.PostroutingHook),
		Priority: knftables.PtrTo(knftables.SNATPriority),
		Policy:   knftables.PtrTo(knftables.AcceptPolicy),
		Comment:  knftables.PtrTo("chain to manage traffic masquerading by flannel"),
	}
}

func nftFwdChain() *knftables.Chain {
	return &knftables.Chain{
		Name:     NFTFwdChain,
		Type:     knftables.PtrTo(knftables.FilterType),
		Hook:     knftables.PtrTo(knftables.ForwardHook),
		Priority: knftables.PtrTo(knftables.FilterPriority),
		Policy:   knftables.PtrTo(knftables.AcceptPolicy),
		Comment:  knftables.PtrTo("chain to accept flannel traffic"),
	}
}

func (s *nftSet) chains() []nftChainSpec {
	var out []nftChainSpec
	if s.masq {
		out = append(out, nftChainSpec{nftMasqChain(), nftMasqRules(s.cur, s.randomFully), "masq"})
	}
	if s.fwd {
		out = append(out, nftChainSpec{nftFwdChain(), nftFwdRules(s.cur), "forward"})
	}
	return out
}

// ours reports whether a comment is this instance's (any config) or upstream's (none).
func (s *nftSet) ours(c string) bool {
	if c == "" {
		return true
	}
	n := nftCommentNetwork(c)
	if n == "" {
		return false
	}
	if n == s.cur.network.String() {
		return true
	}
	for _, p := range s.prevNets {
		if n == p.String() {
			return true
		}
	}
	return false
}

func commentOf(r *knftables.Rule) string {
	if r.Comment == nil {
		return ""
	}
	return *r.Comment
}

func (s *nftSet) ensure(ctx context.Context) (int, error) {
	changes := 0
	for _, cs := range s.chains() {
		have, err := s.nft.ListRules(ctx, cs.chain.Name)
		if err != nil && !knftables.IsNotFound(err) {
			return changes, fmt.Errorf("list %s chain %s/%s: %w", s, s.table, cs.chain.Name, err)
		}
		tx := s.nft.NewTransaction()
		if err != nil { // table or chain missing: create them with all rules
			tx.Add(&knftables.Table{Comment: knftables.PtrTo("rules for " + s.table)})
			tx.Add(cs.chain)
			for _, r := range cs.want {
				tx.Add(&knftables.Rule{Chain: r.chain, Rule: r.text, Comment: knftables.PtrTo(r.comment)})
			}
			if err := s.nft.Run(ctx, tx); err != nil {
				return changes, fmt.Errorf("create %s chain %s/%s: %w", s, s.table, cs.chain.Name, err)
			}
			changes += 1 + len(cs.want)
			continue
		}
		keys := make([]string, len(have))
		for i, r := range have {
			keys[i] = commentOf(r)
		}
		wantKeys := make([]string, len(cs.want))
		for i, r := range cs.want {
			wantKeys[i] = r.comment
		}
		p := planChain(keys, wantKeys, s.ours)
		if p.empty() {
			continue
		}
		for _, i := range p.del {
			tx.Delete(&knftables.Rule{Chain: cs.chain.Name, Handle: have[i].Handle})
		}
		addPlanned(tx, cs.chain.Name, p.final, have, cs.want)
		if err := s.nft.Run(ctx, tx); err != nil {
			return changes, fmt.Errorf("update %s chain %s/%s: %w", s, s.table, cs.chain.Name, err)
		}
		changes += tx.NumOperations()
	}
	return changes, nil
}

// addPlanned adds each missing rule after the rule before it, else before the one after, else last.
func addPlanned(tx *knftables.Transaction, chain string, final []planEntry, have []*knftables.Rule, want []nftRule) {
	for i := 0; i < len(final); {
		if final[i].have >= 0 {
			i++
			continue
		}
		j := i
		for j < len(final) && final[j].have < 0 {
			j++
		}
		run := final[i:j]
		mk := func(e planEntry) *knftables.Rule {
			r := want[e.want]
			return &knftables.Rule{Chain: chain, Rule: r.text, Comment: knftables.PtrTo(r.comment)}
		}
		switch {
		case i > 0:
			anchor := have[final[i-1].have].Handle
			for k := len(run) - 1; k >= 0; k-- {
				r := mk(run[k])
				r.Handle = anchor
				tx.Add(r)
			}
		case j < len(final):
			anchor := have[final[j].have].Handle
			for _, e := range run {
				r := mk(e)
				r.Handle = anchor
				tx.Insert(r)
			}
		default:
			for _, e := range run {
				tx.Add(mk(e))
			}
		}
		i = j
	}
}

// cleanup deletes our rules, then empty chains, then an empty table.
func (s *nftSet) cleanup(ctx context.Context) (int, error) {
	var errs []error
	n := 0
	for _, ch := range []string{NFTMasqChain, NFTFwdChain} {
		have, err := s.nft.ListRules(ctx, ch)
		if knftables.IsNotFound(err) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("list %s chain %s/%s: %w", s, s.table, ch, err))
			continue
		}
		tx := s.nft.NewTransaction()
		left := 0
		for _, r := range have {
			if s.ours(commentOf(r)) {
				tx.Delete(&knftables.Rule{Chain: ch, Handle: r.Handle})
			} else {
				left++
			}
		}
		if left == 0 {
			tx.Delete(&knftables.Chain{Name: ch})
		}
		if tx.NumOperations() == 0 {
			continue
		}
		if err := s.nft.Run(ctx, tx); err != nil {
			errs = append(errs, fmt.Errorf("clean %s chain %s/%s: %w", s, s.table, ch, err))
		} else {
			n += tx.NumOperations()
		}
	}
	chains, err := s.nft.List(ctx, "chains")
	switch {
	case knftables.IsNotFound(err):
	case err != nil:
		errs = append(errs, fmt.Errorf("list %s chains of %s: %w", s, s.table, err))
	case len(chains) == 0:
		tx := s.nft.NewTransaction()
		tx.Delete(&knftables.Table{})
		switch err := s.nft.Run(ctx, tx); {
		case err == nil:
			n++
		case !knftables.IsNotFound(err):
			errs = append(errs, fmt.Errorf("delete %s table %s: %w", s, s.table, err))
		}
	}
	return n, errors.Join(errs...)
}

// nftHasFullyRandom checks, changing nothing, whether "masquerade fully-random" works.
func nftHasFullyRandom(ctx context.Context, nft knftables.Interface) bool {
	tx := nft.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Add(&knftables.Chain{
		Name:     "masqueradeTest",
		Type:     knftables.PtrTo(knftables.NATType),
		Hook:     knftables.PtrTo(knftables.PostroutingHook),
		Priority: knftables.PtrTo(knftables.SNATPriority),
	})
	tx.Add(&knftables.Rule{Chain: "masqueradeTest", Rule: "masquerade fully-random"})
	return nft.Check(ctx, tx) == nil
}
