package trafficrules

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/flannel-go/flannel/pkg/netlinkx/nstest"
)

// missingIn runs Missing inside the namespace.
func missingIn(t *testing.T, ns *nstest.NS, m *Manager, n Networks) []string {
	t.Helper()
	var got []string
	if err := ns.Do(func() (err error) {
		got, _, err = m.Missing(context.Background(), n)
		return err
	}); err != nil {
		t.Fatalf("Missing: %v", err)
	}
	return got
}

// Missing names what is not in place, in both modes, and changes nothing itself.
func TestMissingReadsOnly(t *testing.T) {
	for _, nft := range []bool{false, true} {
		ns := newNS(t)
		cfg, l := cfgLease(nft, "10.5.0.0/16", "10.5.85.0/24")
		n := networks(cfg, l)
		m := New(Options{Masquerade: true, Forward: true, Resync: 5 * time.Second})
		dump := func() string {
			if nft {
				return nsRun(t, ns, "nft", "list", "ruleset")
			}
			return nsRun(t, ns, "iptables-save")
		}
		before := dump()
		wantAll := 10 // six masquerade rules, two forward rules, two jumps
		if nft {
			wantAll = 8 // the chains hook in themselves
		}
		if got := missingIn(t, ns, m, n); len(got) != wantAll {
			t.Errorf("nft=%v, nothing installed: missing %d rules:\n%s", nft, len(got), strings.Join(got, "\n"))
		}
		if after := dump(); after != before {
			t.Errorf("nft=%v: Missing changed the rules:\n%s\n->\n%s", nft, before, after)
		}
		setup(t, ns, m, cfg, l)
		if got := missingIn(t, ns, New(Options{Masquerade: true, Forward: true}), n); len(got) != 0 {
			t.Errorf("nft=%v, installed: missing %q", nft, got)
		}
		var want string
		if nft {
			nsRun(t, ns, "nft", "flush", "chain", "ip", NFTTableIPv4, NFTFwdChain)
			want = "ip flannel-ipv4 forward: "
		} else {
			nsRun(t, ns, "iptables", "-t", "nat", "-D", "POSTROUTING", "1")
			want = `iptables -t nat -A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG`
		}
		got := missingIn(t, ns, New(Options{Masquerade: true, Forward: true}), n)
		if len(got) == 0 || !strings.HasPrefix(got[0], want) {
			t.Errorf("nft=%v, one removed: missing %q, want %q first", nft, got, want)
		}
	}
}
