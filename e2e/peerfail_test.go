package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// One bad peer fails nothing else. Three host-gw nodes run with pods;
// the test writes a fourth lease into etcd, plausible in every field (a free subnet, a
// unicast public address, host-gw's backend type, a TTL), whose public address is not
// on the nodes' segment, so every node's kernel refuses its route. The three nodes keep
// pinging each other, every node stays ready with kernel-converged passing, and every
// node counts the refused peer in flannel_peer_programming_failures_total and logs it
// once; the resync tries it again.
func TestKernelRefusedPeerFailsNothingElse(t *testing.T) {
	l := newLab(t, "peerfail", 3)
	startAll(t, l, hostgwConfig, fmt.Sprintf("--healthz-port=%d", healthzPort))
	bad := netip.MustParsePrefix("10.5.77.0/24")
	for i := 1; i <= 3; i++ {
		if envSubnet(t, l, i) == bad {
			t.Skipf("node %d was given %s, the crafted peer's subnet", i, bad)
		}
	}
	pods := addPods(t, l)
	pingMesh(t, l, pods)
	failures := func(i int) (total float64, byReason string) {
		m, err := scrape(l, i)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range []string{"unreachable", "exists", "invalid"} {
			v, ok := m[fmt.Sprintf(`flannel_peer_programming_failures_total{reason=%q}`, r)]
			if !ok {
				t.Fatalf("node %d: flannel_peer_programming_failures_total{reason=%q} not exposed", i, r)
			}
			total += v
			byReason += fmt.Sprintf(" %s=%v", r, v)
		}
		return total, byReason
	}
	failedRounds := map[int]float64{}
	for i := 1; i <= 3; i++ {
		waitReadyz(t, l, i, "", 200, "flanneld is ready")
		if n, _ := failures(i); n != 0 {
			t.Fatalf("node %d counts %v refused peers before the bad lease", i, n)
		}
		failedRounds[i] = metricNow(t, l, i, `flannel_reconcile_runs_total{result="failure"}`)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	grant, err := l.Etcd().Grant(ctx, 24*3600)
	if err != nil {
		t.Fatal(err)
	}
	key := l.EtcdPrefix() + "/subnets/10.5.77.0-24"
	if _, err := l.Etcd().Put(ctx, key, `{"PublicIP":"198.51.100.77","PublicIPv6":null,"BackendType":"host-gw"}`,
		clientv3.WithLease(grant.ID)); err != nil {
		t.Fatal(err)
	}

	for i := 1; i <= 3; i++ {
		waitMetric(t, l, i, "flannel_peer_leases", "== 3", func(v float64) bool { return v == 3 })
		waitFor(t, convergeTimeout, fmt.Sprintf("node %d counts the refused peer", i), func() (bool, string) {
			n, by := failures(i)
			return n >= 1, by
		})
		n, by := failures(i)
		t.Logf("node %d: refused peers:%s", i, by)
		if m, _ := scrape(l, i); m[`flannel_peer_programming_failures_total{reason="unreachable"}`] < 1 {
			t.Errorf("node %d: the peer off the segment is not counted as unreachable:%s (total %v)", i, by, n)
		}
	}
	// More rounds (pods, the resync) change nothing of that.
	pingMesh(t, l, pods)
	for i := 1; i <= 3; i++ {
		body := waitReadyz(t, l, i, "?verbose", 200, "[+]kernel-converged ok")
		if !strings.HasPrefix(body, "flanneld is ready") {
			t.Errorf("node %d: /readyz %q", i, body)
		}
		if v := metricNow(t, l, i, `flannel_reconcile_runs_total{result="failure"}`); v != failedRounds[i] {
			t.Errorf("node %d: %v failed reconcile rounds since the bad lease, want none", i, v-failedRounds[i])
		}
		if ok, why := hasRoute(l, i, bad, "198.51.100.77", "eth0"); ok {
			t.Errorf("node %d has a route to the refused peer", i)
		} else {
			t.Logf("node %d: no route to %s (%s)", i, bad, why)
		}
		b, err := os.ReadFile(l.LogPath(i))
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(b), `"Kernel refused peer; skipping it, the other peers are programmed" peer="10.5.77.0-24"`); n != 1 {
			t.Errorf("node %d logged the refused peer %d times, want once", i, n)
		}
	}

	// The 30 s resync tries the refused peer again: counted again, not logged again,
	// still ready.
	waitFor(t, convergeTimeout, "node 1 tries the refused peer again at the resync", func() (bool, string) {
		n, by := failures(1)
		return n >= 2, by
	})
	waitReadyz(t, l, 1, "?verbose", 200, "[+]kernel-converged ok")
	if b, err := os.ReadFile(l.LogPath(1)); err != nil || strings.Count(string(b), `"Kernel refused peer`) != 1 {
		t.Errorf("node 1 logged the refused peer again after the resync (%v)", err)
	}

	// The lease goes: nothing of it is left, and the nodes stay ready.
	dctx, dcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer dcancel()
	if _, err := l.Etcd().Delete(dctx, key); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		waitMetric(t, l, i, "flannel_peer_leases", "== 2", func(v float64) bool { return v == 2 })
		waitReadyz(t, l, i, "", 200, "flanneld is ready")
	}
	pingMesh(t, l, pods)
}
