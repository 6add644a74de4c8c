package trafficrules

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/coreos/go-iptables/iptables"
	"sigs.k8s.io/knftables"
)

// Missing lists, changing nothing and without Setup, this instance's rules for n that are not
// in place in n's mode (as `iptables -S` or nft rule text), and names the mode.
func (m *Manager) Missing(ctx context.Context, n Networks) (missing []string, mode string, err error) {
	mode = "iptables"
	if n.NFTables {
		mode = "nftables"
	}
	if !m.opts.Masquerade && !m.opts.Forward {
		return nil, mode, nil
	}
	for _, f := range []struct {
		v6          bool
		net, subnet netip.Prefix
	}{{false, n.Network, n.Subnet}, {true, n.IPv6Network, n.IPv6Subnet}} {
		fam, ok := familyOf(f.v6, f.net, f.subnet)
		if !ok {
			continue
		}
		var got []string
		if n.NFTables {
			nf, table := nftTableFor(f.v6)
			nft, err := m.newNFT(nf, table)
			if err != nil {
				return nil, mode, fmt.Errorf("nftables is not usable: %w", err)
			}
			s := &nftSet{nft: nft, v6: f.v6, table: table, cur: fam, masq: m.opts.Masquerade, fwd: m.opts.Forward}
			s.randomFully = !m.opts.RandomFullyDisable && nftHasFullyRandom(ctx, nft)
			got, err = s.missing(ctx)
			if err != nil {
				return nil, mode, err
			}
		} else {
			ipt, _, err := m.newIPT(f.v6)
			if err != nil {
				return nil, mode, err
			}
			s := &iptSet{ipt: ipt, v6: f.v6, cur: fam, masq: m.opts.Masquerade, fwd: m.opts.Forward}
			s.randomFully = !m.opts.RandomFullyDisable
			if real, ok := ipt.(*iptables.IPTables); ok {
				s.randomFully = s.randomFully && real.HasRandomFully()
			}
			got, err = s.missing(ctx)
			if err != nil {
				return nil, mode, err
			}
		}
		missing = append(missing, got...)
	}
	return missing, mode, nil
}

// missing lists the wanted rules and jumps that are not in their chains.
func (s *iptSet) missing(ctx context.Context) ([]string, error) {
	var out []string
	for _, uc := range s.chains() {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		for _, want := range [][]ipRule{uc.want, {uc.jump}} {
			table, chain := want[0].table, want[0].chain
			lines, _, err := s.listRules(table, chain)
			if err != nil {
				return nil, err
			}
			have := map[string]bool{}
			for _, l := range lines {
				have[l] = true
			}
			for _, r := range want {
				if !have[r.line()] {
					out = append(out, s.String()+" -t "+table+" "+r.line())
				}
			}
		}
	}
	return out, nil
}

// missing lists the wanted rules not in their chains, known by their comments' digests.
func (s *nftSet) missing(ctx context.Context) ([]string, error) {
	var out []string
	for _, cs := range s.chains() {
		have, err := s.nft.ListRules(ctx, cs.chain.Name)
		if err != nil && !knftables.IsNotFound(err) {
			return nil, fmt.Errorf("list %s chain %s/%s: %w", s, s.table, cs.chain.Name, err)
		}
		comments := map[string]bool{}
		for _, r := range have {
			comments[commentOf(r)] = true
		}
		for _, r := range cs.want {
			if !comments[r.comment] {
				out = append(out, fmt.Sprintf("%s %s %s: %s", nftFamilyName(s.v6), s.table, cs.chain.Name, r.text))
			}
		}
	}
	return out, nil
}

func nftFamilyName(v6 bool) string {
	if v6 {
		return "ip6"
	}
	return "ip"
}
