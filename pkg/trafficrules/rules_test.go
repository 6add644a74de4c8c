package trafficrules

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/flannel-go/flannel/subnet"
)

var update = flag.Bool("update", false, "rewrite golden files")

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s).Masked() }

var (
	fam4 = family{network: pfx("10.5.0.0/16"), subnet: pfx("10.5.85.0/24")}
	fam6 = family{v6: true, network: pfx("2001:cafe:42::/56"), subnet: pfx("2001:cafe:42:7::/64")}
)

// renderIPT renders a family's rules as `iptables -S` prints them, chain by chain.
func renderIPT(f family, randomFully bool) string {
	var b strings.Builder
	b.WriteString("*nat\n" + iptMasqJump().line() + "\n-N " + MasqChain + "\n")
	for _, r := range iptMasqRules(f, randomFully) {
		b.WriteString(r.line() + "\n")
	}
	b.WriteString("*filter\n" + iptFwdJump().line() + "\n-N " + ForwardChain + "\n")
	for _, r := range iptFwdRules(f) {
		b.WriteString(r.line() + "\n")
	}
	return b.String()
}

func renderNFT(f family, randomFully bool) string {
	var b strings.Builder
	_, table := nftTableFor(f.v6)
	b.WriteString("table " + table + "\nchain " + NFTMasqChain + "\n")
	for _, r := range nftMasqRules(f, randomFully) {
		b.WriteString(r.text + " comment \"" + r.comment + "\"\n")
	}
	b.WriteString("chain " + NFTFwdChain + "\n")
	for _, r := range nftFwdRules(f) {
		b.WriteString(r.text + " comment \"" + r.comment + "\"\n")
	}
	return b.String()
}

func TestGolden(t *testing.T) {
	tests := []struct {
		file string
		got  string
	}{
		{"iptables-v4.golden", renderIPT(fam4, true)},
		{"iptables-v4-norandom.golden", renderIPT(fam4, false)},
		{"ip6tables-v6.golden", renderIPT(fam6, true)},
		{"nftables-v4.golden", renderNFT(fam4, true)},
		{"nftables-v4-norandom.golden", renderNFT(fam4, false)},
		{"nftables-v6.golden", renderNFT(fam6, true)},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", tt.file)
			if *update {
				if err := os.WriteFile(path, []byte(tt.got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if tt.got != string(want) {
				t.Errorf("rules differ from %s:\ngot:\n%s\nwant:\n%s", path, tt.got, want)
			}
		})
	}
}

// TestCompatText pins upstream's rule text literally, not via a golden file.
func TestCompatText(t *testing.T) {
	want := []string{
		`-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG`,
		`-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN`,
		`-A FLANNEL-POSTRTG -s 10.5.85.0/24 -d 10.5.0.0/16 -m comment --comment "flanneld masq" -j RETURN`,
		`-A FLANNEL-POSTRTG -s 10.5.0.0/16 -d 10.5.85.0/24 -m comment --comment "flanneld masq" -j RETURN`,
		`-A FLANNEL-POSTRTG ! -s 10.5.0.0/16 -d 10.5.85.0/24 -m comment --comment "flanneld masq" -j RETURN`,
		`-A FLANNEL-POSTRTG -s 10.5.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`,
		`-A FLANNEL-POSTRTG ! -s 10.5.0.0/16 -d 10.5.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`,
		`-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD`,
		`-A FLANNEL-FWD -s 10.5.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT`,
		`-A FLANNEL-FWD -d 10.5.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT`,
	}
	var got []string
	got = append(got, iptMasqJump().line())
	for _, r := range iptMasqRules(fam4, true) {
		got = append(got, r.line())
	}
	got = append(got, iptFwdJump().line())
	for _, r := range iptFwdRules(fam4) {
		got = append(got, r.line())
	}
	if !slices.Equal(got, want) {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestGeneric(t *testing.T) {
	r := iptMasqRules(fam4, true)
	if !r[0].generic() || !iptMasqJump().generic() || !iptFwdJump().generic() {
		t.Error("mark rule and jumps must be generic")
	}
	for _, x := range r[1:] {
		if x.generic() {
			t.Errorf("%s must not be generic", x.line())
		}
	}
}

func TestNFTComment(t *testing.T) {
	r := nftMasqRules(fam4, true)
	seen := map[string]bool{}
	for _, x := range r {
		if seen[x.comment] {
			t.Errorf("duplicate comment %q", x.comment)
		}
		seen[x.comment] = true
		if got := nftCommentNetwork(x.comment); got != "10.5.0.0/16" {
			t.Errorf("nftCommentNetwork(%q) = %q", x.comment, got)
		}
		if len(x.comment) > 128 {
			t.Errorf("comment too long: %q", x.comment)
		}
	}
	// The comment changes with the text (a new subnet makes the old rule stale).
	other := nftMasqRules(family{network: fam4.network, subnet: pfx("10.5.86.0/24")}, true)
	if other[1].comment == r[1].comment {
		t.Error("comment does not depend on the rule text")
	}
	for _, c := range []string{"", "flanneld", "flanneld masq", "other masq 10.5.0.0/16 abcd", "flanneld masq 10.5.0.0/16"} {
		if got := nftCommentNetwork(c); got != "" {
			t.Errorf("nftCommentNetwork(%q) = %q, want empty", c, got)
		}
	}
}

func FuzzNFTCommentNetwork(f *testing.F) {
	f.Add("flanneld masq 10.5.0.0/16 0011aabb")
	f.Add("")
	f.Fuzz(func(t *testing.T, c string) {
		n := nftCommentNetwork(c)
		if n != "" && !strings.Contains(c, n) {
			t.Fatalf("network %q not in comment %q", n, c)
		}
	})
}

// applyPlanToKeys executes a plan on a key list, the way the implementations do.
func applyPlanToKeys(have, want []string, p chainPlan) []string {
	out := make([]string, 0, len(p.final))
	for _, e := range p.final {
		if e.have >= 0 {
			out = append(out, have[e.have])
		} else {
			out = append(out, want[e.want])
		}
	}
	return out
}

func TestPlanChain(t *testing.T) {
	want := []string{"a", "b", "c", "d"}
	stale := func(k string) bool { return strings.HasPrefix(k, "old") }
	tests := []struct {
		name      string
		have      []string
		wantFinal []string
		wantDel   []int
		empty     bool
	}{
		{name: "intact", have: []string{"a", "b", "c", "d"}, wantFinal: []string{"a", "b", "c", "d"}, empty: true},
		{name: "intact with foreign", have: []string{"x", "a", "b", "y", "c", "d", "z"}, wantFinal: []string{"x", "a", "b", "y", "c", "d", "z"}, empty: true},
		{name: "empty chain", have: nil, wantFinal: []string{"a", "b", "c", "d"}},
		{name: "only foreign", have: []string{"x"}, wantFinal: []string{"x", "a", "b", "c", "d"}},
		{name: "middle missing", have: []string{"a", "b", "d"}, wantFinal: []string{"a", "b", "c", "d"}},
		{name: "first missing", have: []string{"x", "b", "c", "d"}, wantFinal: []string{"x", "a", "b", "c", "d"}},
		{name: "two first missing", have: []string{"c", "d"}, wantFinal: []string{"a", "b", "c", "d"}},
		{name: "last missing", have: []string{"a", "b", "c", "x"}, wantFinal: []string{"a", "b", "c", "d", "x"}},
		{name: "stale deleted", have: []string{"a", "old1", "b", "c", "d"}, wantFinal: []string{"a", "b", "c", "d"}, wantDel: []int{1}},
		{name: "stale replaced", have: []string{"a", "old1", "c", "d"}, wantFinal: []string{"a", "b", "c", "d"}, wantDel: []int{1}},
		{name: "duplicate", have: []string{"a", "a", "b", "c", "d"}, wantFinal: []string{"a", "b", "c", "d"}, wantDel: []int{1}},
		{name: "out of order", have: []string{"b", "a", "c", "d"}, wantFinal: []string{"a", "b", "c", "d"}, wantDel: []int{1}},
		{name: "reversed", have: []string{"d", "c", "b", "a"}, wantFinal: []string{"a", "b", "c", "d"}, wantDel: []int{3, 2, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := planChain(tt.have, want, stale)
			got := applyPlanToKeys(tt.have, want, p)
			if !slices.Equal(got, tt.wantFinal) {
				t.Errorf("final = %v, want %v", got, tt.wantFinal)
			}
			if tt.wantDel != nil && !slices.Equal(p.del, tt.wantDel) {
				t.Errorf("del = %v, want %v", p.del, tt.wantDel)
			}
			if p.empty() != tt.empty {
				t.Errorf("empty = %v, want %v", p.empty(), tt.empty)
			}
			for _, i := range p.del {
				for _, e := range p.final {
					if e.have == i {
						t.Errorf("deleted rule %d is still in the final chain", i)
					}
				}
			}
		})
	}
}

// FuzzPlanChain: wanted rules end up once each and in order, foreign rules are never
// deleted nor reordered, and a correct chain is left alone.
func FuzzPlanChain(f *testing.F) {
	f.Add("abxcd", "abcd")
	f.Add("dcba", "abcd")
	f.Add("", "ab")
	f.Fuzz(func(t *testing.T, haveS, wantS string) {
		if len(haveS) > 32 || len(wantS) > 16 {
			return
		}
		var want []string
		seen := map[string]bool{}
		for _, c := range wantS {
			if !seen[string(c)] && c != '0' { // "0" is the stale key
				seen[string(c)] = true
				want = append(want, string(c))
			}
		}
		var have []string
		for _, c := range haveS {
			have = append(have, string(c))
		}
		stale := func(k string) bool { return k == "0" }
		p := planChain(have, want, stale)
		got := applyPlanToKeys(have, want, p)
		var ours, foreignGot, foreignHave []string
		for _, k := range got {
			if seen[k] {
				ours = append(ours, k)
			} else {
				foreignGot = append(foreignGot, k)
			}
		}
		for _, k := range have {
			if !seen[k] && k != "0" {
				foreignHave = append(foreignHave, k)
			}
		}
		if !slices.Equal(ours, want) {
			t.Fatalf("have %q want %q: wanted rules end as %q", have, want, ours)
		}
		if !slices.Equal(foreignGot, foreignHave) {
			t.Fatalf("have %q want %q: foreign rules %q became %q", have, want, foreignHave, foreignGot)
		}
		if slices.Contains(got, "0") {
			t.Fatal("stale rule kept")
		}
		if p.empty() != slices.Equal(got, have) {
			t.Fatalf("empty()=%v but chain %q -> %q", p.empty(), have, got)
		}
	})
}

// A non-boolean EnableNFTables is refused at decoding, naming the field and type.
func TestNonBooleanEnableNFTables(t *testing.T) {
	for _, v := range []string{`"yes"`, `1`, `"true"`, `null`} {
		_, err := subnet.ParseConfig(`{"Network":"10.5.0.0/16","EnableNFTables":` + v + `}`)
		if v == `null` { // JSON null leaves the default (false), as upstream
			if err != nil {
				t.Errorf("null: %v", err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), "EnableNFTables") || !strings.Contains(err.Error(), "bool") {
			t.Errorf("EnableNFTables=%s: error %v", v, err)
		}
	}
}
