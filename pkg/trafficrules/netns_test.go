package trafficrules

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/knftables"

	"github.com/flannel-go/flannel/pkg/netlinkx/nstest"
	"github.com/flannel-go/flannel/subnet"

	"github.com/flannel-go/flannel/pkg/klogtest"
)

// Real iptables and nft in throwaway namespaces: the code runs on a thread inside
// (nstest.Do), the test looks with `ip netns exec`.

func newNS(t *testing.T) *nstest.NS {
	t.Helper()
	if testing.Short() {
		t.Skip("namespace test; skipped in -short mode")
	}
	for _, bin := range []string{"iptables", "nft", "ip"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed: %v", bin, err)
		}
	}
	return nstest.New(t, "fgtr")
}

func nsRun(t *testing.T, ns *nstest.NS, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns.Name}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
	return string(out)
}

func nsTry(ns *nstest.NS, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns.Name}, args...)...).CombinedOutput()
	return string(out), err
}

func cfgLease(nft bool, network, sn string) (*subnet.Config, *subnet.Lease) {
	return &subnet.Config{EnableIPv4: true, EnableNFTables: nft, Network: pfx(network)},
		&subnet.Lease{Subnet: pfx(sn)}
}

// networks is what the daemon hands to Setup for a config and a lease.
func networks(cfg *subnet.Config, l *subnet.Lease) Networks {
	n := Networks{NFTables: cfg.EnableNFTables}
	if cfg.EnableIPv4 {
		n.Network, n.Subnet = cfg.Network, l.Subnet
	}
	if cfg.EnableIPv6 {
		n.IPv6Network, n.IPv6Subnet = cfg.IPv6Network, l.IPv6Subnet
	}
	return n
}

func setup(t *testing.T, ns *nstest.NS, m *Manager, cfg *subnet.Config, l *subnet.Lease) {
	t.Helper()
	if err := ns.Do(func() error { return m.Setup(context.Background(), networks(cfg, l)) }); err != nil {
		t.Fatalf("Setup: %v", err)
	}
}

// runInNS starts m.Run inside the namespace until the test ends.
func runInNS(t *testing.T, ns *nstest.NS, m *Manager) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ns.Do(func() error { return m.Run(ctx) }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func iptLines(t *testing.T, ns *nstest.NS, table string) []string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(nsRun(t, ns, "iptables", "-t", table, "-S"), "\n") {
		if strings.Contains(l, "FLANNEL") || strings.Contains(l, "flanneld") {
			out = append(out, l)
		}
	}
	return out
}

// iptCounters returns `iptables -v -S` of our chains (rule text with packet counters).
func iptCounters(t *testing.T, ns *nstest.NS) string {
	t.Helper()
	return nsRun(t, ns, "iptables", "-t", "nat", "-v", "-S", MasqChain) +
		nsRun(t, ns, "iptables", "-t", "nat", "-v", "-S", "POSTROUTING") +
		nsRun(t, ns, "iptables", "-t", "filter", "-v", "-S", ForwardChain)
}

func nftTable(t *testing.T, ns *nstest.NS, table string) string {
	t.Helper()
	return nsRun(t, ns, "nft", "-a", "list", "table", "ip", table)
}

func expectedIPT(f family) (nat, filter []string) {
	nat = []string{"-N " + MasqChain, iptMasqJump().line()}
	for _, r := range iptMasqRules(f, true) {
		nat = append(nat, r.line())
	}
	filter = []string{"-N " + ForwardChain, iptFwdJump().line()}
	for _, r := range iptFwdRules(f) {
		filter = append(filter, r.line())
	}
	return nat, filter
}

// trafficThroughRules sends UDP from src to dsts through a veth route, so new conntrack
// entries traverse the nat and filter chains.
func trafficThroughRules(t *testing.T, ns *nstest.NS, src netip.Addr, dsts ...string) {
	t.Helper()
	err := ns.Do(func() error {
		for _, d := range dsts {
			c, err := net.DialUDP("udp4", &net.UDPAddr{IP: src.AsSlice()}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(d)))
			if err != nil {
				return err
			}
			_, _ = c.Write([]byte("x"))
			_ = c.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatalf("send: %v", err)
	}
}

func addPodSubnetDevice(t *testing.T, ns *nstest.NS) {
	t.Helper()
	nsRun(t, ns, "ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	nsRun(t, ns, "ip", "addr", "add", "10.5.85.1/24", "dev", "v0")
	nsRun(t, ns, "ip", "link", "set", "v1", "up")
	nsRun(t, ns, "ip", "link", "set", "v0", "up")
	nsRun(t, ns, "ip", "route", "add", "10.5.0.0/16", "dev", "v0")
}

// waitFor polls cond up to timeout and returns the time taken, for the log only.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < timeout {
		if cond() {
			d := time.Since(start)
			t.Logf("%s after %v", what, d.Round(time.Millisecond))
			return d
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v", what, timeout)
	return 0
}

func TestIPTablesInstallKeepAndHeal(t *testing.T) {
	ns := newNS(t)
	addPodSubnetDevice(t, ns)
	m := New(Options{Masquerade: true, Forward: true, Resync: 5 * time.Second})
	cfg, l := cfgLease(false, "10.5.0.0/16", "10.5.85.0/24")
	setup(t, ns, m, cfg, l)
	wantNat, wantFilter := expectedIPT(fam4)
	if got := iptLines(t, ns, "nat"); !slices.Equal(got, wantNat) {
		t.Fatalf("nat rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantNat, "\n"))
	}
	if got := iptLines(t, ns, "filter"); !slices.Equal(got, wantFilter) {
		t.Fatalf("filter rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantFilter, "\n"))
	}
	// A second Setup (a restart) changes nothing.
	m2 := New(Options{Masquerade: true, Forward: true})
	setup(t, ns, m2, cfg, l)
	if got := iptLines(t, ns, "nat"); !slices.Equal(got, wantNat) {
		t.Fatalf("after restart nat rules:\n%s", strings.Join(got, "\n"))
	}

	runInNS(t, ns, m)
	trafficThroughRules(t, ns, netip.MustParseAddr("10.5.85.1"), "10.5.1.2:9", "10.5.2.2:9", "10.5.3.2:9")
	before := iptCounters(t, ns)
	if !regexp.MustCompile(`-s 10\.5\.85\.0/24 -d 10\.5\.0\.0/16 .* -c [1-9]`).MatchString(before) {
		t.Fatalf("traffic did not reach the rules (no counter moved):\n%s", before)
	}
	time.Sleep(10 * time.Second) // idle: the keeper must not rewrite anything
	if after := iptCounters(t, ns); after != before {
		t.Fatalf("rules or counters changed while idle:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// Someone deletes one rule: it comes back, the others keep their counters.
	nsRun(t, ns, "iptables", "-t", "nat", "-D", MasqChain, "4")
	waitFor(t, "deleted rule restored", 10*time.Second, func() bool { return slices.Equal(iptLines(t, ns, "nat"), wantNat) })
	if after := iptCounters(t, ns); after != before {
		t.Errorf("restoring one rule changed others:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	// Flushed chains, a deleted jump, a deleted chain. The chain goes in one
	// iptables-restore transaction: as separate commands, the keeper may put the jump
	// back between them and the chain's deletion then fails (chain in use).
	for _, cmd := range [][]string{
		{"iptables", "-t", "nat", "-F", MasqChain},
		{"iptables", "-t", "filter", "-F", ForwardChain},
		{"iptables", "-t", "nat", "-D", "POSTROUTING", "1"},
		{"sh", "-c", `printf '*filter\n-D FORWARD 1\n-F FLANNEL-FWD\n-X FLANNEL-FWD\nCOMMIT\n' | iptables-restore --noflush`},
	} {
		nsRun(t, ns, cmd...)
		waitFor(t, strings.Join(cmd, " ")+" repaired", 10*time.Second, func() bool {
			return slices.Equal(iptLines(t, ns, "nat"), wantNat) && slices.Equal(iptLines(t, ns, "filter"), wantFilter)
		})
	}
}

var nftHandleRE = regexp.MustCompile(`# handle \d+`)

func TestNFTablesInstallKeepAndHeal(t *testing.T) {
	ns := newNS(t)
	addPodSubnetDevice(t, ns)
	m := New(Options{Masquerade: true, Forward: true, Resync: 5 * time.Second})
	cfg, l := cfgLease(true, "10.5.0.0/16", "10.5.85.0/24")
	setup(t, ns, m, cfg, l)
	got := nftTable(t, ns, NFTTableIPv4)
	for _, r := range append(nftMasqRules(fam4, true), nftFwdRules(fam4)...) {
		if !strings.Contains(got, r.text+` comment "`+r.comment+`"`) {
			t.Errorf("rule %q missing in\n%s", r.text, got)
		}
	}
	for _, s := range []string{"type nat hook postrouting priority srcnat; policy accept;", "type filter hook forward priority filter; policy accept;"} {
		if !strings.Contains(got, s) {
			t.Errorf("%q missing in\n%s", s, got)
		}
	}
	if t.Failed() {
		return
	}
	runInNS(t, ns, m)
	time.Sleep(10 * time.Second)
	if after := nftTable(t, ns, NFTTableIPv4); after != got {
		t.Fatalf("table changed while idle:\nbefore:\n%s\nafter:\n%s", got, after)
	}
	// Delete one rule by handle: back, all other handles unchanged.
	lines := strings.Split(got, "\n")
	var victim string
	for _, ln := range lines {
		if strings.Contains(ln, "ip saddr != 10.5.0.0/16 ip daddr 10.5.85.0/24 return") {
			victim = ln
		}
	}
	h := strings.TrimPrefix(nftHandleRE.FindString(victim), "# handle ")
	nsRun(t, ns, "nft", "delete", "rule", "ip", NFTTableIPv4, NFTMasqChain, "handle", h)
	var now string
	waitFor(t, "deleted nft rule restored", 10*time.Second, func() bool {
		now = nftTable(t, ns, NFTTableIPv4)
		return strings.Count(now, "flanneld masq") == 6
	})
	if nftHandleRE.ReplaceAllString(now, "") != nftHandleRE.ReplaceAllString(got, "") {
		t.Fatalf("restored table differs (order or text):\n%s\nwant:\n%s", now, got)
	}
	for _, ln := range lines {
		if ln != victim && !strings.Contains(now, ln) {
			t.Errorf("line %q changed after repair", ln)
		}
	}
	// Flush a chain; delete the whole table.
	for _, cmd := range [][]string{
		{"nft", "flush", "chain", "ip", NFTTableIPv4, NFTFwdChain},
		{"nft", "delete", "table", "ip", NFTTableIPv4},
	} {
		nsRun(t, ns, cmd...)
		waitFor(t, strings.Join(cmd, " ")+" repaired", 10*time.Second, func() bool {
			now, err := nsTry(ns, "nft", "-a", "list", "table", "ip", NFTTableIPv4)
			return err == nil && strings.Count(now, "flanneld masq") == 6 && strings.Count(now, "flanneld forward") == 2
		})
	}
}

// Switching modes removes this instance's rules of the other mode, and the clean-up is
// logged only when it removed something.
func TestModeSwitchLeavesNothingOfTheOtherMode(t *testing.T) {
	ns := newNS(t)
	logs := klogtest.Capture(t, 0)
	const cleaned = "Removed this instance's traffic rules of the mode not selected"
	cfgI, l := cfgLease(false, "10.5.0.0/16", "10.5.85.0/24")
	cfgN, _ := cfgLease(true, "10.5.0.0/16", "10.5.85.0/24")
	opts := Options{Masquerade: true, Forward: true}
	setup(t, ns, New(opts), cfgI, l)
	if len(iptLines(t, ns, "nat")) == 0 {
		t.Fatal("no iptables rules installed")
	}
	if got := logs.Take(); strings.Contains(got, cleaned) {
		t.Errorf("a clean-up was logged on a fresh node, with no nftables rules to remove:\n%s", got)
	}
	setup(t, ns, New(opts), cfgN, l)
	if got := append(iptLines(t, ns, "nat"), iptLines(t, ns, "filter")...); len(got) > 0 {
		t.Fatalf("iptables rules left after switching to nftables:\n%s", strings.Join(got, "\n"))
	}
	if _, err := nsTry(ns, "nft", "list", "table", "ip", NFTTableIPv4); err != nil {
		t.Fatalf("nft table missing: %v", err)
	}
	if got := logs.Take(); !strings.Contains(got, cleaned) || !strings.Contains(got, `rules="iptables" selected="nftables"`) {
		t.Errorf("the removal of the iptables rules was not logged:\n%s", got)
	}
	setup(t, ns, New(opts), cfgI, l)
	if out := nsRun(t, ns, "nft", "list", "tables"); strings.Contains(out, "flannel") {
		t.Fatalf("nft tables left after switching to iptables:\n%s", out)
	}
	if got := logs.Take(); !strings.Contains(got, cleaned) || !strings.Contains(got, `selected="iptables"`) {
		t.Errorf("the removal of the nftables rules was not logged:\n%s", got)
	}
	setup(t, ns, New(opts), cfgI, l)
	if got := logs.Take(); strings.Contains(got, cleaned) {
		t.Errorf("a clean-up was logged with nothing left to remove:\n%s", got)
	}
	wantNat, _ := expectedIPT(fam4)
	if got := iptLines(t, ns, "nat"); !slices.Equal(got, wantNat) {
		t.Fatalf("nat rules after switching back:\n%s", strings.Join(got, "\n"))
	}
}

func TestStaleRulesReplaced(t *testing.T) {
	for _, nft := range []bool{false, true} {
		t.Run(map[bool]string{false: "iptables", true: "nftables"}[nft], func(t *testing.T) {
			ns := newNS(t)
			cfg, l := cfgLease(nft, "10.5.0.0/16", "10.5.85.0/24")
			setup(t, ns, New(Options{Masquerade: true, Forward: true}), cfg, l)
			// Restart with another subnet and network, the previous ones from subnet.env.
			cfg2, l2 := cfgLease(nft, "10.6.0.0/16", "10.6.9.0/24")
			setup(t, ns, New(Options{Masquerade: true, Forward: true, PrevNetwork: pfx("10.5.0.0/16"), PrevSubnet: pfx("10.5.85.1/24")}), cfg2, l2)
			var text string
			if nft {
				text = nftTable(t, ns, NFTTableIPv4)
			} else {
				text = strings.Join(append(iptLines(t, ns, "nat"), iptLines(t, ns, "filter")...), "\n")
			}
			if strings.Contains(text, "10.5.") {
				t.Errorf("stale rules left:\n%s", text)
			}
			if !strings.Contains(text, "10.6.9.0/24") {
				t.Errorf("new rules missing:\n%s", text)
			}
		})
	}
}

// Two instances share the chains: each keeps only its own rules, and one's clean-up
// leaves the other's.
func TestInstancesDoNotTouchEachOther(t *testing.T) {
	for _, nft := range []bool{false, true} {
		t.Run(map[bool]string{false: "iptables", true: "nftables"}[nft], func(t *testing.T) {
			ns := newNS(t)
			opts := Options{Masquerade: true, Forward: true}
			cfgA, lA := cfgLease(nft, "10.5.0.0/16", "10.5.85.0/24")
			cfgB, lB := cfgLease(nft, "10.7.0.0/16", "10.7.3.0/24")
			setup(t, ns, New(opts), cfgA, lA)
			setup(t, ns, New(opts), cfgB, lB)
			setup(t, ns, New(opts), cfgA, lA) // A's restart must keep B's rules
			dump := func() string {
				if nft {
					return nftTable(t, ns, NFTTableIPv4)
				}
				return strings.Join(append(iptLines(t, ns, "nat"), iptLines(t, ns, "filter")...), "\n")
			}
			text := dump()
			for _, s := range []string{"10.5.85.0/24", "10.7.3.0/24"} {
				if !strings.Contains(text, s) {
					t.Fatalf("rules of %s missing:\n%s", s, text)
				}
			}
			// A switches mode: its rules go, B's stay.
			cfgA.EnableNFTables = !nft
			setup(t, ns, New(opts), cfgA, lA)
			text = dump()
			if strings.Contains(text, "10.5.85.0/24") || !strings.Contains(text, "10.7.3.0/24") {
				t.Fatalf("after A switched mode:\n%s", text)
			}
			if !nft && strings.Count(text, "-j FLANNEL-POSTRTG") != 1 {
				t.Fatalf("B's jump must stay:\n%s", text)
			}
		})
	}
}

func TestNFTablesUnavailable(t *testing.T) {
	m := New(Options{Masquerade: true})
	m.newNFT = func(knftables.Family, string) (knftables.Interface, error) {
		return nil, errors.New("could not run nftables command: Error: Could not process rule: Operation not supported")
	}
	m.newIPT = func(bool) (iptablesAPI, bool, error) { return nil, false, errors.New("not needed") }
	cfg, l := cfgLease(true, "10.5.0.0/16", "10.5.85.0/24")
	err := m.Setup(context.Background(), networks(cfg, l))
	if err == nil || !strings.Contains(err.Error(), "EnableNFTables is true but nftables is not usable") {
		t.Fatalf("Setup error = %v", err)
	}
}

func TestBlackholeRouteKept(t *testing.T) {
	ns := newNS(t)
	m := New(Options{Blackhole: true, Resync: time.Hour})
	cfg, l := cfgLease(false, "10.5.0.0/16", "10.5.85.0/24")
	setup(t, ns, m, cfg, l)
	has := func() bool {
		out, _ := nsTry(ns, "ip", "route", "show", "type", "blackhole")
		return strings.Contains(out, "10.5.85.0/24")
	}
	if !has() {
		t.Fatal("no blackhole route after Setup")
	}
	// Deleted while Run starts: its first check, or the route watch, restores it. Once
	// Run has restored it the watch is in place: the second deletion is seen by the
	// watch alone (the periodic check is an hour away).
	runInNS(t, ns, m)
	nsRun(t, ns, "ip", "route", "del", "blackhole", "10.5.85.0/24")
	waitFor(t, "blackhole route restored", 10*time.Second, has)
	nsRun(t, ns, "ip", "route", "del", "blackhole", "10.5.85.0/24")
	waitFor(t, "blackhole route restored again", 10*time.Second, has)
}

func TestIPv6RulesBothModes(t *testing.T) {
	if _, err := exec.LookPath("ip6tables"); err != nil {
		t.Skipf("ip6tables not installed: %v", err)
	}
	for _, nft := range []bool{false, true} {
		t.Run(map[bool]string{false: "ip6tables", true: "nftables"}[nft], func(t *testing.T) {
			ns := newNS(t)
			cfg := &subnet.Config{EnableIPv6: true, EnableNFTables: nft, IPv6Network: pfx("2001:db8:1::/48")}
			l := &subnet.Lease{IPv6Subnet: pfx("2001:db8:1:5::/64")}
			m := New(Options{Masquerade: true, Forward: true})
			setup(t, ns, m, cfg, l)
			f := family{v6: true, network: cfg.IPv6Network, subnet: l.IPv6Subnet}
			if nft {
				got := nsRun(t, ns, "nft", "list", "table", "ip6", NFTTableIPv6)
				for _, r := range append(nftMasqRules(f, true), nftFwdRules(f)...) {
					if !strings.Contains(got, r.text+` comment "`+r.comment+`"`) {
						t.Errorf("rule %q missing in\n%s", r.text, got)
					}
				}
				if out := nsRun(t, ns, "nft", "list", "tables"); strings.Contains(out, NFTTableIPv4) {
					t.Errorf("IPv4 table created for an IPv6-only network:\n%s", out)
				}
				return
			}
			var got []string
			for _, l := range strings.Split(nsRun(t, ns, "ip6tables", "-t", "nat", "-S"), "\n") {
				if strings.Contains(l, "FLANNEL") {
					got = append(got, l)
				}
			}
			want := []string{"-N " + MasqChain, iptMasqJump().line()}
			for _, r := range iptMasqRules(f, true) {
				want = append(want, r.line())
			}
			if !slices.Equal(got, want) {
				t.Errorf("ip6tables nat:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			if v4 := iptLines(t, ns, "nat"); len(v4) != 0 {
				t.Errorf("IPv4 rules for an IPv6-only network:\n%s", strings.Join(v4, "\n"))
			}
		})
	}
}
