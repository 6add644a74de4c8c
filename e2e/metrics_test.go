package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flannel-go/flannel/e2e/lab"
)

// scrape reads node i's /metrics into "name{labels}" -> value (labels as exposed:
// sorted by name).
func scrape(l *lab.Lab, i int) (map[string]float64, error) {
	return scrapeAt(l.NodeNS(i), healthzPort)
}

// scrapeAt is scrape of the daemon in namespace ns with --healthz-port=port.
func scrapeAt(ns string, port int) (map[string]float64, error) {
	code, body, err := lab.HTTPGet(context.Background(), ns, fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		return nil, err
	}
	if code != 200 {
		return nil, fmt.Errorf("/metrics: status %d", code)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			return nil, fmt.Errorf("bad exposition line %q", line)
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("bad value in %q: %v", line, err)
		}
		out[line[:sp]] = v
	}
	return out, sc.Err()
}

func kernelChanges(kind, op string) string {
	return fmt.Sprintf(`flannel_kernel_object_changes_total{kind=%q,op=%q}`, kind, op)
}

// waitMetric waits until node i's metric satisfies cond.
func waitMetric(t *testing.T, l *lab.Lab, i int, name, what string, cond func(v float64) bool) float64 {
	t.Helper()
	var got float64
	waitFor(t, convergeTimeout, fmt.Sprintf("node %d: %s %s", i, name, what), func() (bool, string) {
		m, err := scrape(l, i)
		if err != nil {
			return false, err.Error()
		}
		v, ok := m[name]
		if !ok {
			return false, "not exposed"
		}
		got = v
		return cond(v), fmt.Sprintf("value %v", v)
	})
	return got
}

func metricNow(t *testing.T, l *lab.Lab, i int, name string) float64 {
	t.Helper()
	m, err := scrape(l, i)
	if err != nil {
		t.Fatal(err)
	}
	v, ok := m[name]
	if !ok {
		t.Fatalf("node %d: %s not exposed", i, name)
	}
	return v
}

// Node 1's /metrics counts what the daemon does, and the
// counters move when faults are injected: a peer route and an FDB entry deleted by
// hand are repaired (by the netlink-triggered heal or, at the latest, by the periodic
// resync), a peer lease added and removed in etcd is programmed and cleaned; /readyz
// names the failing check while etcd is down and turns ready again after.
func TestMetricsAndReadiness(t *testing.T) {
	l := newLab(t, "metrics", 2)
	startAll(t, l, vxlanConfig, fmt.Sprintf("--healthz-port=%d", healthzPort))
	ns := infos(t, l, "flannel.1")
	waitFullMesh(t, l, "flannel.1", ns)
	p2 := peerOf(l, ns[1])

	waitReadyz(t, l, 1, "", 200, "flanneld is ready")
	verbose := waitReadyz(t, l, 1, "?verbose", 200, "[+]kernel-converged ok", "[+]lease-valid ok", "[+]lease-watch ok", "[+]subnet-file ok")
	t.Logf("/readyz?verbose:\n%s", verbose)

	// At rest: one peer lease, the lease snapshot, one converged round at least, the
	// device and the peer's triplet added, the lease expiring in the future.
	waitMetric(t, l, 1, "flannel_peer_leases", "== 1", func(v float64) bool { return v == 1 })
	m, err := scrape(l, 1)
	if err != nil {
		t.Fatal(err)
	}
	for name, cond := range map[string]func(float64) bool{
		`flannel_lease_events_total{type="snapshot"}`:           func(v float64) bool { return v >= 1 },
		`flannel_reconcile_runs_total{result="success"}`:        func(v float64) bool { return v >= 1 },
		`flannel_reconcile_duration_seconds_count`:              func(v float64) bool { return v >= 1 },
		kernelChanges("device", "added"):                        func(v float64) bool { return v == 1 },
		kernelChanges("route", "added"):                         func(v float64) bool { return v >= 1 },
		kernelChanges("fdb", "added"):                           func(v float64) bool { return v >= 1 },
		kernelChanges("neigh", "added"):                         func(v float64) bool { return v >= 1 },
		`flannel_lease_expiry_timestamp_seconds`:                func(v float64) bool { return v > float64(time.Now().Unix()) },
		`flannel_vxlan_tx_checksum_offload{device="flannel.1"}`: func(v float64) bool { return v == 1 }, // auto on this kernel (>= 5.7)
		`process_resident_memory_bytes`:                         func(v float64) bool { return v > 0 },
		`go_goroutines`:                                         func(v float64) bool { return v > 0 },
	} {
		if v, ok := m[name]; !ok || !cond(v) {
			t.Errorf("at rest: %s = %v (exposed %v)", name, v, ok)
		}
	}

	// Fault 1: the peer route deleted by hand is put back and counted as a repair.
	before := metricNow(t, l, 1, kernelChanges("route", "repaired"))
	// (by destination only: a delete naming the device or gateway does not match a route
	// that uses a nexthop object)
	if _, err := l.Exec(l.NodeNS(1), "ip", "route", "del", p2.subnet.String()); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, l, 1, kernelChanges("route", "repaired"), fmt.Sprintf("> %v", before), func(v float64) bool { return v > before })
	waitPeers(t, l, 1, "flannel.1", p2)

	// Fault 2: the peer's FDB entry deleted by hand.
	before = metricNow(t, l, 1, kernelChanges("fdb", "repaired"))
	if _, err := l.Exec(l.NodeNS(1), "bridge", "fdb", "del", p2.mac, "dev", "flannel.1", "dst", p2.public.String(), "self"); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, l, 1, kernelChanges("fdb", "repaired"), fmt.Sprintf("> %v", before), func(v float64) bool { return v > before })
	waitPeers(t, l, 1, "flannel.1", p2)

	// Fault 3: a peer lease appears in etcd (a synthetic node nobody sends traffic to),
	// then goes away.
	ghost := peer{subnet: netip.MustParsePrefix("10.5.222.0/24"), mac: "0e:00:00:00:de:01", public: netip.MustParseAddr("192.0.2.222")}
	for _, n := range ns {
		if n.subnet == ghost.subnet {
			t.Skipf("a node was given %s, the synthetic peer's subnet", ghost.subnet)
		}
	}
	key := l.EtcdPrefix() + "/subnets/10.5.222.0-24"
	val := `{"PublicIP":"192.0.2.222","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:00:00:00:de:01"}}`
	addedEv := metricNow(t, l, 1, `flannel_lease_events_total{type="added"}`)
	routesAdded := metricNow(t, l, 1, kernelChanges("route", "added"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := l.Etcd().Put(ctx, key, val); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, l, 1, `flannel_lease_events_total{type="added"}`, fmt.Sprintf("> %v", addedEv), func(v float64) bool { return v > addedEv })
	waitMetric(t, l, 1, "flannel_peer_leases", "== 2", func(v float64) bool { return v == 2 })
	waitMetric(t, l, 1, kernelChanges("route", "added"), fmt.Sprintf("> %v", routesAdded), func(v float64) bool { return v > routesAdded })
	waitPeers(t, l, 1, "flannel.1", ghost)

	removedEv := metricNow(t, l, 1, `flannel_lease_events_total{type="removed"}`)
	routesRemoved := metricNow(t, l, 1, kernelChanges("route", "removed"))
	if _, err := l.Etcd().Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, l, 1, `flannel_lease_events_total{type="removed"}`, fmt.Sprintf("> %v", removedEv), func(v float64) bool { return v > removedEv })
	waitMetric(t, l, 1, "flannel_peer_leases", "== 1", func(v float64) bool { return v == 1 })
	waitMetric(t, l, 1, kernelChanges("route", "removed"), fmt.Sprintf("> %v", routesRemoved), func(v float64) bool { return v > routesRemoved })
	waitNoPeer(t, l, 1, "flannel.1", ghost)

	// Fault 4: etcd goes away. The data path is untouched, /readyz names the lease watch,
	// and the datastore counters move; when etcd is back, ready again.
	restarts := metricNow(t, l, 1, `flannel_datastore_watch_restarts_total{watch="leases"}`)
	l.EtcdProc().Kill()
	body := waitReadyz(t, l, 1, "", 503, "flanneld is not ready yet", "lease-watch: ")
	t.Logf("/readyz with etcd down:\n%s", body)
	if strings.Contains(body, "subnet-file") || strings.Contains(body, "kernel-converged") {
		t.Errorf("/readyz blames checks that still pass: %q", body)
	}
	waitPeers(t, l, 1, "flannel.1", p2)
	rctx, rcancel := context.WithTimeout(context.Background(), startTimeout)
	defer rcancel()
	if err := l.EtcdProc().Restart(rctx); err != nil {
		t.Fatal(err)
	}
	waitReadyz(t, l, 1, "", 200, "flanneld is ready")
	m, err = scrape(l, 1)
	if err != nil {
		t.Fatal(err)
	}
	// The etcd client resumes a watch across a short outage by itself (from the last
	// revision, nothing lost), so the restart and error counters need not move here;
	// they are logged for the record.
	var dsErrors float64
	for k, v := range m {
		if strings.HasPrefix(k, "flannel_datastore_errors_total{") {
			dsErrors += v
		}
	}
	t.Logf("after the etcd outage: watch restarts leases=%v (before %v) own_lease=%v, datastore errors %v",
		m[`flannel_datastore_watch_restarts_total{watch="leases"}`], restarts, m[`flannel_datastore_watch_restarts_total{watch="own_lease"}`], dsErrors)

	pods := addPods(t, l)
	pingMesh(t, l, pods)
}

// With ChecksumOffload "off" the vxlan device's transmit checksum
// offload is off on every node (read by ethtool -k inside the node when installed, and
// by the metric), pods still ping each other; a bad value stops flanneld at start with a
// message naming the option.
func TestVXLANChecksumOffloadOff(t *testing.T) {
	l := newLab(t, "csumoff", 2)
	startAll(t, l, `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","ChecksumOffload":"off"}}`, fmt.Sprintf("--healthz-port=%d", healthzPort))
	ns := infos(t, l, "flannel.1")
	waitFullMesh(t, l, "flannel.1", ns)
	waitMetric(t, l, 1, `flannel_vxlan_tx_checksum_offload{device="flannel.1"}`, "== 0", func(v float64) bool { return v == 0 })
	if _, err := exec.LookPath("ethtool"); err == nil {
		for i := 1; i <= 2; i++ {
			out, err := l.Exec(l.NodeNS(i), "ethtool", "-k", "flannel.1")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, "tx-checksum-ip-generic: off") {
				t.Errorf("node %d: ethtool -k flannel.1:\n%s", i, out)
			}
		}
	} else {
		t.Log("ethtool not installed: the device state is checked through the metric only")
	}
	if !strings.Contains(l.LogTail(1, 200), `"vxlan transmit checksum offload" device="flannel.1" txChecksumOffload=false mode="off"`) {
		t.Errorf("node 1 did not log its checksum offload choice:\n%s", l.LogTail(1, 40))
	}
	pods := addPods(t, l)
	pingMesh(t, l, pods)

	// A bad value: node 2 restarted with it says why and keeps retrying the config
	// (one bad-config policy), leaving the data path alone.
	if err := l.StopFlanneld(2); err != nil {
		t.Fatal(err)
	}
	if err := l.PutConfig(context.Background(), `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","ChecksumOffload":"maybe"}}`); err != nil {
		t.Fatal(err)
	}
	if err := l.StartFlanneld(2); err != nil {
		t.Fatal(err)
	}
	waitLog(t, l, 2, `ChecksumOffload must be \"auto\", \"on\" or \"off\", not \"maybe\"`)
	stillRunning(t, l, 2, 3*time.Second, `ChecksumOffload "maybe"`)
	pingMesh(t, l, pods)
}
