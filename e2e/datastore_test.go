package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/flannel-go/flannel/e2e/lab"
)

// Log lines of a datastore outage while the daemon runs (daemon/outage.go).
const (
	logDatastoreLost = `"Datastore unavailable: the data path stays as it is, and lease changes wait until it is back"`
	logDatastoreBack = `"Datastore available again" outage="`
)

// logLines returns node i's flanneld log lines that contain s.
func logLines(t *testing.T, l *lab.Lab, i int, s string) []string {
	t.Helper()
	b, err := os.ReadFile(l.LogPath(i))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return out
}

// datastoreErrors is the sum of node i's flannel_datastore_errors_total over op.
func datastoreErrors(t *testing.T, l *lab.Lab, i int) float64 {
	t.Helper()
	m, err := scrape(l, i)
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for k, v := range m {
		if strings.HasPrefix(k, "flannel_datastore_errors_total{") {
			n += v
		}
	}
	return n
}

// etcd cannot be reached at start: the config fetch's error names the endpoint and the
// cause — refused (nothing listens on the port), unreachable (no host has the address),
// timeout (the packets are dropped) — and every failed attempt is counted, timeouts
// included; the daemon keeps retrying.
func TestEtcdUnreachableNamed(t *testing.T) {
	l := newLab(t, "etcdwhy", 1)
	if err := l.PutConfig(context.Background(), vxlanConfig); err != nil {
		t.Fatal(err)
	}
	refused := fmt.Sprintf("http://%s:2390", lab.EtcdIP)
	noHost := "http://192.0.2.250:2379"
	cases := []struct {
		name     string
		endpoint string
		drop     bool // drop the node's packets to etcd
		cause    string
	}{
		{"refused", refused, false, refused + ": connection refused (nothing listens on that address and port)"},
		{"no host", noHost, false, noHost + ": unreachable (no route to the host)"},
		{"dropped", l.EtcdEndpoint(), true, l.EtcdEndpoint() + ": timeout (no answer: the host is down, or packets to it are dropped)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.drop {
				rule := []string{"OUTPUT", "-d", lab.EtcdIP.String(), "-p", "tcp", "--dport", "2379", "-j", "DROP"}
				ipt := func(op string) error {
					out, err := exec.Command("ip", append([]string{"netns", "exec", l.NodeNS(1), "iptables", op}, rule...)...).CombinedOutput()
					if err != nil {
						return fmt.Errorf("iptables %s: %v: %s", op, err, out)
					}
					return nil
				}
				if err := ipt("-I"); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					if err := ipt("-D"); err != nil {
						t.Error(err)
					}
				})
			}
			if err := l.StartFlanneld(1, "--etcd-endpoints="+c.endpoint, fmt.Sprintf("--healthz-port=%d", healthzPort)); err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf(`"Couldn't fetch network config; retrying" err="reading %s/config from etcd: no answer (context deadline exceeded): %s"`,
				l.EtcdPrefix(), c.cause)
			waitLog(t, l, 1, want)
			waitMetric(t, l, 1, `flannel_datastore_errors_total{op="get_config"}`, ">= 1", func(v float64) bool { return v >= 1 })
			if !l.FlanneldRunning(1) {
				t.Fatalf("flanneld exited:\n%s", l.LogTail(1, 20))
			}
			lines := logLines(t, l, 1, "Couldn't fetch network config")
			t.Logf("logged: %s", lines[len(lines)-1])
			if err := l.StopFlanneld(1); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// etcd stopped and started again under running daemons: each logs one warning that names
// the endpoint and the cause, and one line with the outage's length when etcd is back;
// the error counter moves; the pods kept talking all along.
func TestEtcdOutageStated(t *testing.T) {
	l := newLab(t, "etcdstate", 2)
	startAll(t, l, vxlanConfig, fmt.Sprintf("--healthz-port=%d", healthzPort))
	pods := addPods(t, l)
	pingMesh(t, l, pods)
	var before [3]float64
	for i := 1; i <= 2; i++ {
		waitReadyz(t, l, i, "", 200)
		before[i] = datastoreErrors(t, l, i)
	}
	ping := startPing(t, pods[0].NS, pods[1].IP)

	etcd := l.EtcdProc()
	etcd.Kill()
	down := time.Now()
	want := logDatastoreLost + ` op="watch" err="connecting to etcd: ` + l.EtcdEndpoint() + `: connection refused (nothing listens on that address and port)"`
	for i := 1; i <= 2; i++ {
		waitLog(t, l, i, want)
		waitMetric(t, l, i, `flannel_datastore_errors_total{op="connect"}`, "> 0", func(v float64) bool { return v > 0 })
		body := waitReadyz(t, l, i, "", 503, "lease-watch: ", "leases watch broke: connecting to etcd: "+l.EtcdEndpoint()+": connection refused")
		t.Logf("node %d: /readyz with etcd down:\n%s", i, body)
	}
	time.Sleep(5*time.Second - time.Since(down)) // an outage of some seconds
	rctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := etcd.Restart(rctx); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		waitLog(t, l, i, logDatastoreBack)
		waitReadyz(t, l, i, "", 200)
	}
	sent, lost := stopPing(t, ping)
	t.Logf("pod 1 -> pod 2 across the outage: %d of %d pings lost", lost, sent)
	if lost > maxRestartLoss {
		t.Errorf("%d of %d pings lost while etcd was down (bound %d)", lost, sent, maxRestartLoss)
	}
	for i := 1; i <= 2; i++ {
		lost, back := logLines(t, l, i, logDatastoreLost), logLines(t, l, i, logDatastoreBack)
		if len(lost) != 1 || len(back) != 1 {
			t.Errorf("node %d: %d warnings and %d recovery lines for one outage, want one each:\n%s", i, len(lost), len(back), strings.Join(append(lost, back...), "\n"))
			continue
		}
		if !strings.HasPrefix(lost[0], "W") {
			t.Errorf("node %d: not a warning: %s", i, lost[0])
		}
		t.Logf("node %d: %s", i, lost[0])
		t.Logf("node %d: %s", i, back[0])
		var d time.Duration
		_, after, _ := strings.Cut(back[0], `outage="`)
		if v, _, ok := strings.Cut(after, `"`); ok {
			d, _ = time.ParseDuration(v)
		}
		if d < 3*time.Second {
			t.Errorf("node %d: outage of %v reported for etcd down at least 5 s", i, d)
		}
		if n := datastoreErrors(t, l, i); n <= before[i] {
			t.Errorf("node %d: flannel_datastore_errors_total %v, not above %v from before the outage", i, n, before[i])
		}
		for _, line := range logLines(t, l, i, "] ") {
			if strings.HasPrefix(line, "E") && strings.Contains(line, "etcd") {
				t.Errorf("node %d: an error line during the outage, beside the one warning: %s", i, line)
			}
		}
	}
	pingMesh(t, l, pods)
	if testing.Verbose() {
		t.Logf("node 1's log since the outage:\n%s", l.LogTail(1, 25))
	}
}

// The same in Kubernetes mode: the kube-apiserver stopped and started again under running
// daemons gives one warning naming the API server and the cause, and one line with the
// outage's length; the error counter moves; pods keep talking.
func TestKubeAPIServerOutageStated(t *testing.T) {
	k := newKubeLab(t, "kubeout", 2)
	for i := 1; i <= 2; i++ {
		k.registerNode(t, i, fmt.Sprintf("10.244.%d.0/24", i))
		k.start(t, i, fmt.Sprintf("--healthz-port=%d", healthzPort))
	}
	for i := 1; i <= 2; i++ {
		if _, err := k.WaitSubnetEnv(i, startTimeout); err != nil {
			t.Fatal(err)
		}
	}
	ns := infos(t, k.Lab, "flannel.1")
	waitFullMesh(t, k.Lab, "flannel.1", ns)
	pods := addPods(t, k.Lab)
	pingMesh(t, k.Lab, pods)
	var before [3]float64
	for i := 1; i <= 2; i++ {
		waitReadyz(t, k.Lab, i, "", 200)
		before[i] = datastoreErrors(t, k.Lab, i)
	}
	ping := startPing(t, pods[0].NS, pods[1].IP)

	api := k.KubeAPIServer()
	api.Stop()
	down := time.Now()
	server := k.KubeAPIServerURL()
	for i := 1; i <= 2; i++ {
		waitLog(t, k.Lab, i, logDatastoreLost)
		waitReadyz(t, k.Lab, i, "", 503, "lease-watch: ")
	}
	time.Sleep(5*time.Second - time.Since(down))
	rctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := api.Restart(rctx); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		waitLog(t, k.Lab, i, logDatastoreBack)
		waitReadyz(t, k.Lab, i, "", 200)
	}
	sent, lost := stopPing(t, ping)
	t.Logf("pod 1 -> pod 2 across the outage: %d of %d pings lost", lost, sent)
	if lost > maxRestartLoss {
		t.Errorf("%d of %d pings lost while the API server was down (bound %d)", lost, sent, maxRestartLoss)
	}
	for i := 1; i <= 2; i++ {
		lost, back := logLines(t, k.Lab, i, logDatastoreLost), logLines(t, k.Lab, i, logDatastoreBack)
		if len(lost) != 1 || len(back) != 1 {
			t.Errorf("node %d: %d warnings and %d recovery lines for one outage, want one each:\n%s", i, len(lost), len(back), strings.Join(append(lost, back...), "\n"))
			continue
		}
		t.Logf("node %d: %s", i, lost[0])
		t.Logf("node %d: %s", i, back[0])
		host := strings.TrimPrefix(server, "https://")
		if !strings.HasPrefix(lost[0], "W") || !strings.Contains(lost[0], host) || !strings.Contains(lost[0], "connection refused (nothing listens on that address and port)") {
			t.Errorf("node %d: the warning does not name %s and the cause: %s", i, host, lost[0])
		}
		if n := datastoreErrors(t, k.Lab, i); n <= before[i] {
			t.Errorf("node %d: flannel_datastore_errors_total %v, not above %v from before the outage", i, n, before[i])
		}
		for _, line := range logLines(t, k.Lab, i, "] ") {
			if strings.HasPrefix(line, "E") {
				t.Errorf("node %d: an error line beside the one warning: %s", i, line)
			}
		}
	}
	pingMesh(t, k.Lab, pods)
	if testing.Verbose() {
		t.Logf("node 1's log:\n%s", k.LogTail(1, 25))
	}
}
