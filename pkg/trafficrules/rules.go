// Package trafficrules installs the node's traffic rules (masquerade for traffic leaving
// the flannel network, acceptance of forwarded flannel traffic) in iptables or nftables,
// and keeps them true: rules someone deletes are put back within a second, without
// rewriting the rules that are still in place.
//
// Both modes install the same meaning (see Documentation/traffic-rules.md):
//
//	mark & 0x4000 set        -> return (kube-proxy handles it)
//	P -> C, C -> P, !C -> P  -> return (no NAT inside the cluster or towards our pods)
//	C -> !multicast          -> masquerade
//	!C -> C                  -> masquerade
//
// with C the cluster network and P this node's subnet, per IP family. Rules are owned per
// daemon instance: a chain or table may hold the rules of several flanneld instances
// (different networks) and only this instance's rules are ever deleted.
package trafficrules

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"strings"
)

// Names shared with upstream flanneld, so that operators' tools and upstream's clean-up
// meet the same chains and tables.
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

// family is one IP family's part of the rules: the cluster network and the node's subnet.
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

// ipRule is one iptables rule: table, chain and the arguments after "-A <chain>".
type ipRule struct {
	table string
	chain string
	spec  []string
}

// line renders the rule as `iptables -S` prints it: "-A <chain> <spec>" with the comment
// in double quotes. Rules read back from the kernel are compared against this text.
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

// generic reports whether the rule mentions no address (the kube-proxy mark RETURN and the
// jumps), i.e. is identical for every flanneld instance.
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

// iptMasqJump is the POSTROUTING rule that sends traffic through FLANNEL-POSTRTG.
func iptMasqJump() ipRule {
	return ipRule{"nat", "POSTROUTING", concat(comment(MasqComment), []string{"-j", MasqChain})}
}

// iptFwdJump is the FORWARD rule that sends traffic through FLANNEL-FWD.
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

// nftRule is one nftables rule: its text and the comment that identifies it. The comment
// carries the kind, the cluster network (the instance) and a digest of the text, so a
// rule is recognised as this instance's without parsing nft's output.
type nftRule struct {
	chain   string
	text    string
	comment string
}

func nftComment(kind string, network netip.Prefix, text string) string {
	sum := sha256.Sum256([]byte(text))
	return nftCommentHead + kind + " " + network.String() + " " + hex.EncodeToString(sum[:4])
}

// nftCommentNetwork returns the network a flanneld rule comment names ("" when the
// comment is not one of ours).
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

// nftMasqRules are the postrtg rules of one family. Unlike upstream's nftables rules, they
// mean exactly what the iptables rules mean: the mark match is masked like iptables'
// --mark 0x4000/0x4000, and rule 4 is "source outside C to P" (upstream nft mode has
// "source outside P to C", which also exempts host-to-cluster traffic from masquerade).
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

// nftFwdRules are the forward rules of one family.
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
