package vxlan

import (
	"context"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

// TestIntegrationRefusedPeers: the real kernel refuses an IPv4 peer whose gateway is local
// here and an IPv6 peer under a foreign multipath route. The round succeeds, the rest is
// programmed, each is reported once, nothing is resent until the resync, which programs
// them once the obstacles are gone.
func TestIntegrationRefusedPeers(t *testing.T) {
	l := newLab(t)
	ctx := context.Background()
	cfg := testConfig(t, `{"Type":"vxlan"}`, true)
	b, ch := l.backend(cfg)
	obs := &refusalCounter{n: map[string]int{}}
	b.SetObserver(obs)
	if _, err := b.Prepare(ctx, nil); err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	nw, err := b.Start(ctx, ownLease(true))
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	ip := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("ip", append([]string{"-n", l.ns.Name}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	ip("route", "add", "local", "10.5.7.0/24", "dev", "lo")
	ip("-6", "route", "add", "fd00:5:0:8::/64", "nexthop", "via", "2001:db8::7", "dev", "u0", "nexthop", "via", "2001:db8::8", "dev", "u0")

	good := peer6("10.5.2.0/24", "192.0.2.2", "0e:00:00:00:00:02", "fd00:5:0:2::/64", "2001:db8::2", "0e:00:00:00:06:02")
	local := peer6("10.5.7.0/24", "192.0.2.7", "0e:00:00:00:00:07", "fd00:5:0:7::/64", "2001:db8::7", "0e:00:00:00:06:07")
	multi := peer6("10.5.8.0/24", "192.0.2.8", "0e:00:00:00:00:08", "fd00:5:0:8::/64", "2001:db8::8", "0e:00:00:00:06:08")
	peers := []subnet.Lease{good, local, multi}
	if err := nw.Reconcile(ctx, subnet.PeersOf(peers...)); err != nil {
		t.Fatalf("Reconcile with refused peers: %v", err)
	}
	v4 := l.view("flannel.1", unix.AF_INET, cfg.Network)
	sameMap(t, "v4 routes", v4.routes, map[string]string{
		"10.5.2.0/24": "via 10.5.2.0 dev flannel.1 onlink",
		"10.5.8.0/24": "via 10.5.8.0 dev flannel.1 onlink",
	})
	sameMap(t, "v4 fdb (the refused peer's accepted part stays)", v4.fdb, map[string]string{
		"0e:00:00:00:00:02": "192.0.2.2", "0e:00:00:00:00:07": "192.0.2.7", "0e:00:00:00:00:08": "192.0.2.8"})
	v6 := l.view("flannel-v6.1", unix.AF_INET6, cfg.IPv6Network)
	sameMap(t, "v6 routes", v6.routes, map[string]string{
		"fd00:5:0:2::/64": "via fd00:5:0:2:: dev flannel-v6.1 onlink",
		"fd00:5:0:7::/64": "via fd00:5:0:7:: dev flannel-v6.1 onlink",
	})
	if out := ip("-6", "route", "show", "fd00:5:0:8::/64"); !strings.Contains(out, "nexthop via 2001:db8::7") {
		t.Errorf("the foreign multipath route changed: %q", out)
	}
	var refused []string
	for _, p := range b.refusedProbs {
		refused = append(refused, p.Peer)
		if !strings.Contains(p.Reason, "invalid argument") {
			t.Errorf("peer %s: reason %q does not carry the kernel's answer", p.Peer, p.Reason)
		}
	}
	slices.Sort(refused)
	if want := []string{local.Key(), multi.Key()}; !slices.Equal(refused, want) {
		t.Errorf("refused peers %q, want %q", refused, want)
	}
	if obs.n[observe.RefusedInvalid] != 2 || len(obs.n) != 1 {
		t.Errorf("reported %v, want 2 invalid", obs.n)
	}

	reconcileUnchanged(t, ctx, nw, ch, peers, "held back")
	if obs.n[observe.RefusedInvalid] != 2 {
		t.Errorf("held back: reported %v, want still 2", obs.n)
	}

	b.Invalidate()
	before := ch.writes.Load()
	if err := nw.Reconcile(ctx, subnet.PeersOf(peers...)); err != nil {
		t.Fatalf("resync: %v", err)
	}
	if ch.writes.Load() == before || obs.n[observe.RefusedInvalid] != 4 {
		t.Errorf("resync: %d writes, reported %v; want the refused peers tried again", ch.writes.Load()-before, obs.n)
	}

	ip("route", "del", "local", "10.5.7.0/24", "dev", "lo", "table", "local")
	ip("-6", "route", "del", "fd00:5:0:8::/64")
	b.Invalidate()
	if err := nw.Reconcile(ctx, subnet.PeersOf(peers...)); err != nil {
		t.Fatalf("after the obstacles went: %v", err)
	}
	if len(b.refusedProbs) != 0 || obs.n[observe.RefusedInvalid] != 4 {
		t.Errorf("after the obstacles went: refused %v, reported %v", b.refusedProbs, obs.n)
	}
	v4 = l.view("flannel.1", unix.AF_INET, cfg.Network)
	v6 = l.view("flannel-v6.1", unix.AF_INET6, cfg.IPv6Network)
	if len(v4.routes) != 3 || len(v6.routes) != 3 || len(v4.neigh) != 3 || len(v6.fdb) != 3 {
		t.Errorf("after the obstacles went: v4 %+v v6 %+v", v4, v6)
	}
}
