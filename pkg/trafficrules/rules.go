// Package trafficrules installs the node's masquerade and forward-accept rules in iptables or
// nftables (Documentation/traffic-rules.md) and keeps them true: deleted rules return within a
// second, intact ones are untouched, and only this instance's rules are ever deleted.
package trafficrules

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"strings"
)

// Upstream's names, so operators' tools and upstream's clean-up meet the same objects.
const (
	MasqChain     = "FLANNEL-POSTRTG" // iptables, table nat
	ForwardChain  = "FLANNEL-FWD"     // iptables, table filter
	MasqComment   = "flanneld masq"
	FwdComment    = "flanneld forward"
	KubeProxyMark = "0x4000/0x4000"

	NFTTableIPv4   = "flannel-ipv4" // family ip
	NFTTableIPv6   = "flannel-ipv6" // family ip6
	NFTMasqChain   = "postrtg"
	NFTFwdChain    = "forward"
	nftCommentHead = "flanneld "
)

// family is one IP family's cluster network and node subnet.
type family struct {
	v6      bool
	network netip.Prefix // C
	subnet  netip.Prefix // P (network address form)
}

func (f family) multicast() string {
	if f.v6 {
		return "ff00::/8"
	}
	return "224.0.0.0/4"
}

// ipRule is an iptables rule: table, chain and the arguments after "-A <chain>".
type ipRule struct {
	table string
	chain string
	spec  []string
}

// line renders the rule as `iptables -S` prints it, for comparing with rules read back.
func (r ipRule) line() string {
	var b strings.Builder
	b.WriteString("-A ")
	b.WriteString(r.chain)
	for i, a := range r.spec {
		b.WriteByte(' ')
		if i > 0 && r.spec[i-1] == "--comment" {
			b.WriteString(`"` + a + `"`)
			continue
		}
		b.WriteString(a)
	}
	return b.String()
}

// generic: the rule names no address (mark RETURN, jumps), so every instance shares it.
func (r ipRule) generic() bool {
	for _, a := range r.spec {
		if a == "-s" || a == "-d" {
			return false
		}
	}
	return true
}

func comment(c string) []string { return []string{"-m", "comment", "--comment", c} }

func concat(parts ...[]string) []string {
	var out []string
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func iptMasqJump() ipRule {
	return ipRule{"nat", "POSTROUTING", concat(comment(MasqComment), []string{"-j", MasqChain})}
}

func iptFwdJump() ipRule {
	return ipRule{"filter", "FORWARD", concat(comment(FwdComment), []string{"-j", ForwardChain})}
}

// iptMasqRules are the FLANNEL-POSTRTG rules of one family, in order.
func iptMasqRules(f family, randomFully bool) []ipRule {
	c, p, m := f.network.String(), f.subnet.String(), f.multicast()
	masq := []string{"-j", "MASQUERADE"}
	if randomFully {
		masq = append(masq, "--random-fully")
	}
	ret := []string{"-j", "RETURN"}
	cm := comment(MasqComment)
	rule := func(spec ...[]string) ipRule { return ipRule{"nat", MasqChain, concat(spec...)} }
	return []ipRule{
		rule([]string{"-m", "mark", "--mark", KubeProxyMark}, cm, ret),
		rule([]string{"-s", p, "-d", c}, cm, ret),
		rule([]string{"-s", c, "-d", p}, cm, ret),
		rule([]string{"!", "-s", c, "-d", p}, cm, ret),
		rule([]string{"-s", c, "!", "-d", m}, cm, masq),
		rule([]string{"!", "-s", c, "-d", c}, cm, masq),
	}
}

// iptFwdRules are the FLANNEL-FWD rules of one family, in order.
func iptFwdRules(f family) []ipRule {
	c := f.network.String()
	cm := comment(FwdComment)
	return []ipRule{
		{"filter", ForwardChain, concat([]string{"-s", c}, cm, []string{"-j", "ACCEPT"})},
		{"filter", ForwardChain, concat([]string{"-d", c}, cm, []string{"-j", "ACCEPT"})},
	}
}

// nftRule is a rule with its comment: kind, cluster network and text digest, to recognise ours.
type nftRule struct {
	chain   string
	text    string
	comment string
}

func nftComment(kind string, network netip.Prefix, text string) string {
	sum := sha256.Sum256([]byte(text))
	return nftCommentHead + kind + " " + network.String() + " " + hex.EncodeToString(sum[:4])
}

// nftCommentNetwork returns the network a comment of ours names, or "".
func nftCommentNetwork(c string) string {
	if !strings.HasPrefix(c, nftCommentHead) {
		return ""
	}
	f := strings.Fields(c)
	if len(f) != 4 {
		return ""
	}
	return f[2]
}

// nftMasqRules mean exactly what the iptables rules mean, unlike upstream's nftables mode
// (Documentation/differences-from-upstream.md).
func nftMasqRules(f family, randomFully bool) []nftRule {
	ipk := "ip"
	if f.v6 {
		ipk = "ip6"
	}
	c, p, m := f.network.String(), f.subnet.String(), f.multicast()
	masq := "masquerade"
	if randomFully {
		masq += " fully-random"
	}
	texts := []string{
		"meta mark & 0x00004000 == 0x00004000 return",
		ipk + " saddr " + p + " " + ipk + " daddr " + c + " return",
		ipk + " saddr " + c + " " + ipk + " daddr " + p + " return",
		ipk + " saddr != " + c + " " + ipk + " daddr " + p + " return",
		ipk + " saddr " + c + " " + ipk + " daddr != " + m + " " + masq,
		ipk + " saddr != " + c + " " + ipk + " daddr " + c + " " + masq,
	}
	out := make([]nftRule, len(texts))
	for i, t := range texts {
		out[i] = nftRule{NFTMasqChain, t, nftComment("masq", f.network, t)}
	}
	return out
}

func nftFwdRules(f family) []nftRule {
	ipk := "ip"
	if f.v6 {
		ipk = "ip6"
	}
	c := f.network.String()
	texts := []string{ipk + " saddr " + c + " accept", ipk + " daddr " + c + " accept"}
	out := make([]nftRule, len(texts))
	for i, t := range texts {
		out[i] = nftRule{NFTFwdChain, t, nftComment("forward", f.network, t)}
	}
	return out
}
