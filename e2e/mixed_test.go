package e2e

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/flannel-go/flannel/e2e/benchkit"
	"github.com/flannel-go/flannel/e2e/lab"
)

// Mixed clusters: upstream flanneld (tools/flanneld-upstream, `make flanneld-upstream`)
// and ours on the nodes of one lab, sharing one etcd or one kube-apiserver.

// needUpstream returns upstream's flanneld binary. Without it (or without the
// br_netfilter sysctl it insists on) the test is skipped with what to do, except under
// CI=true, where .ci/run builds it first and its absence must fail the run.
func needUpstream(t *testing.T) string {
	t.Helper()
	needRoot(t)
	bin, err := benchkit.UpstreamBinary()
	if err == nil {
		err = benchkit.BrNetfilter()
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but a test dependency is missing: %v", err)
		}
		t.Skipf("skipping: needs upstream flanneld: %v", err)
	}
	return bin
}

// mixedBackend is a backend the mixed-cluster tests run, with how to tell that every node
// has programmed every other one before pods ping.
type mixedBackend struct {
	name   string
	config string
	// programmed waits until every node of l has the kernel state for every other node.
	programmed func(t *testing.T, l *lab.Lab)
}

var mixedBackends = []mixedBackend{
	{name: "vxlan", config: vxlanConfig, programmed: func(t *testing.T, l *lab.Lab) {
		// The same triplet on every node, whichever daemon wrote it.
		waitFullMesh(t, l, "flannel.1", infos(t, l, "flannel.1"))
	}},
	{name: "host-gw", config: hostgwConfig, programmed: func(t *testing.T, l *lab.Lab) {
		for i := 1; i <= l.Nodes(); i++ {
			for j := 1; j <= l.Nodes(); j++ {
				if i == j {
					continue
				}
				sn := envSubnet(t, l, j)
				waitFor(t, convergeTimeout, fmt.Sprintf("node %d: route to %s via %s", i, sn, l.NodeIP(j)), func() (bool, string) {
					return hasRoute(l, i, sn, l.NodeIP(j).String(), "eth0")
				})
			}
		}
	}},
	{name: "udp", config: udpConfig, programmed: func(t *testing.T, l *lab.Lab) {
		// One route for the whole network through flannel0; peers live in the process.
		for i := 1; i <= l.Nodes(); i++ {
			waitFor(t, convergeTimeout, fmt.Sprintf("node %d: route %s dev flannel0", i, labNetwork), func() (bool, string) {
				return hasRoute(l, i, labNetwork, "", "flannel0")
			})
		}
	}},
}

// checkAdmitted asks our daemon on node i (control socket key, --healthz-port=healthzPort)
// which peer leases it admitted: every one of peers (node -> subnet) by subnet and public
// address, none rejected, and flannel_leases_rejected_total 0 for every reason.
func checkAdmitted(t *testing.T, l *lab.Lab, i int, key string, peers map[int]netip.Prefix) {
	t.Helper()
	waitFor(t, convergeTimeout, fmt.Sprintf("node %d: every peer lease admitted", i), func() (bool, string) {
		st, errText := queryControl(t, l.NodeNS(i), key, false)
		if st == nil {
			return false, errText
		}
		if !st.Peers.Synced || len(st.Peers.Rejected) != 0 || len(st.Peers.Admitted) != len(peers) {
			return false, fmt.Sprintf("peers %+v", st.Peers)
		}
		for j, sn := range peers {
			found := false
			for _, a := range st.Peers.Admitted {
				found = found || (a.Subnet == sn && a.PublicIP == l.NodeIP(j))
			}
			if !found {
				return false, fmt.Sprintf("node %d's lease %s from %s not admitted: %+v", j, sn, l.NodeIP(j), st.Peers)
			}
		}
		return true, ""
	})
	m, err := scrape(l, i)
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range m {
		if strings.HasPrefix(name, "flannel_leases_rejected_total") && v != 0 {
			t.Errorf("node %d: %s %v, want 0", i, name, v)
		}
	}
}

// Upstream flanneld and ours in one etcd-mode cluster, per backend: nodes 1 and 2 run
// ours, node 3 upstream's. Our daemons admit upstream's lease as it writes it, upstream
// programs ours, and pods on every node reach pods on every other node.
func TestMixedEtcd(t *testing.T) {
	for _, b := range mixedBackends {
		t.Run(b.name, func(t *testing.T) {
			up := needUpstream(t)
			l := newLab(t, "mix"+strings.ReplaceAll(b.name, "-", ""), 3)
			if err := l.PutConfig(context.Background(), b.config); err != nil {
				t.Fatal(err)
			}
			healthz := fmt.Sprintf("--healthz-port=%d", healthzPort)
			for i := 1; i <= 2; i++ {
				if err := l.StartFlanneld(i, healthz); err != nil {
					t.Fatal(err)
				}
			}
			if err := l.StartFlanneldBin(3, up, nil); err != nil {
				t.Fatal(err)
			}
			subnets := map[int]netip.Prefix{}
			for i := 1; i <= 3; i++ {
				if _, err := l.WaitSubnetEnv(i, startTimeout); err != nil {
					t.Fatal(err)
				}
				subnets[i] = envSubnet(t, l, i)
			}
			t.Logf("upstream's lease of %s: %s", subnets[3], leaseValue(t, l, subnets[3]))

			b.programmed(t, l)
			pingMesh(t, l, addPods(t, l))
			for i := 1; i <= 2; i++ {
				peers := map[int]netip.Prefix{3 - i: subnets[3-i], 3: subnets[3]}
				checkAdmitted(t, l, i, etcdPrefixKey(l.EtcdPrefix()), peers)
			}
			if !l.FlanneldRunning(3) {
				t.Fatalf("upstream flanneld on node 3 exited:\n%s", l.LogTail(3, 30))
			}
		})
	}
}

// Upstream flanneld and ours in one Kubernetes-mode cluster (vxlan) against the real
// kube-apiserver, with the manifest's service account: nodes 1 and 2 run ours, node 3
// upstream's. Each node's annotations are the same set of keys, our daemons admit the
// lease upstream publishes through them, and pods on every node reach every other node.
// Then node 3 is upgraded in place to ours.
func TestMixedKube(t *testing.T) {
	up := needUpstream(t)
	k := newKubeLab(t, "mixkube", 3)
	// Kubelet registers a node with annotations of its own; upstream's flanneld panics
	// (assignment to a nil map) on a Node object that has none.
	kubelet := []byte(`{"metadata":{"annotations":{"node.alpha.kubernetes.io/ttl":"0"}}}`)
	for i := 1; i <= 3; i++ {
		k.registerNode(t, i, fmt.Sprintf("10.244.%d.0/24", i))
		if _, err := k.cs.CoreV1().Nodes().Patch(context.Background(), kubeNodeName(i), types.MergePatchType, kubelet, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 2; i++ {
		k.start(t, i, fmt.Sprintf("--healthz-port=%d", healthzPort))
	}
	if err := k.StartFlanneldBin(3, up, []string{"NODE_NAME=" + kubeNodeName(3)}, k.kubeArgs()...); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if _, err := k.WaitSubnetEnv(i, startTimeout); err != nil {
			t.Fatal(err)
		}
	}
	ns := infos(t, k.Lab, "flannel.1")
	waitFullMesh(t, k.Lab, "flannel.1", ns)
	pods := addPods(t, k.Lab)
	pingMesh(t, k.Lab, pods)

	// Upstream's annotations: its VTEP MAC and address, and no flannel key ours lacks or
	// adds.
	var keys []string
	for _, n := range ns {
		a := k.node(t, n.index).Annotations
		t.Logf("node %d annotations: %v", n.index, a)
		if want := fmt.Sprintf(`{"VNI":1,"VtepMAC":"%s"}`, n.mac); a["flannel.alpha.coreos.com/backend-data"] != want {
			t.Errorf("node %d: backend-data %q, want %q", n.index, a["flannel.alpha.coreos.com/backend-data"], want)
		}
		if a["flannel.alpha.coreos.com/public-ip"] != k.NodeIP(n.index).String() {
			t.Errorf("node %d: public-ip %q, want %s", n.index, a["flannel.alpha.coreos.com/public-ip"], k.NodeIP(n.index))
		}
		var ks []string
		for key := range a {
			if strings.HasPrefix(key, "flannel.alpha.coreos.com/") {
				ks = append(ks, key)
			}
		}
		slices.Sort(ks)
		if keys == nil {
			keys = ks
		} else if !slices.Equal(ks, keys) {
			t.Errorf("node %d: annotation keys %v, node 1 has %v", n.index, ks, keys)
		}
	}
	for i := 1; i <= 2; i++ {
		checkAdmitted(t, k.Lab, i, "kube-subnet-mgr", map[int]netip.Prefix{3 - i: ns[2-i].subnet, 3: ns[2].subnet})
	}
	if !k.FlanneldRunning(3) {
		t.Fatalf("upstream flanneld on node 3 exited:\n%s", k.LogTail(3, 30))
	}

	// Node 3 upgraded in place: ours adopts upstream's flannel.1 with its MAC and finds
	// the node's annotations as they are.
	before := k.node(t, 3).Annotations
	switchDaemon(t, k.Lab, 3, flanneld.bin, []string{"NODE_NAME=" + kubeNodeName(3)},
		k.kubeArgs(fmt.Sprintf("--healthz-port=%d", healthzPort)), pods[0], pods[2])
	if n3 := info(t, k.Lab, 3, "flannel.1"); n3.mac != ns[2].mac || n3.subnet != ns[2].subnet {
		t.Errorf("node 3 under ours: VTEP MAC %s, subnet %s; want %s, %s kept", n3.mac, n3.subnet, ns[2].mac, ns[2].subnet)
	}
	if after := k.node(t, 3).Annotations; !maps.Equal(after, before) {
		t.Errorf("node 3 under ours: annotations %v, were %v", after, before)
	}
	waitFullMesh(t, k.Lab, "flannel.1", ns)
	pingMesh(t, k.Lab, pods)
	checkAdmitted(t, k.Lab, 3, "kube-subnet-mgr", map[int]netip.Prefix{1: ns[0].subnet, 2: ns[1].subnet})
}

// startPingInterval is startPing's interval: a gap in its pings is the echoes lost
// times this.
const startPingInterval = 10 * time.Millisecond

// iptablesRules is node i's iptables-save output without its comment lines (dates).
func iptablesRules(t *testing.T, l *lab.Lab, i int) string {
	t.Helper()
	out, err := l.Exec(l.NodeNS(i), "iptables-save")
	if err != nil {
		t.Fatal(err)
	}
	var keep []string
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "#") {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "\n")
}

// switchDaemon stops node i's flanneld with SIGTERM and starts bin there instead, with env
// and args, while from pings to every 10 ms. It waits for the new daemon's subnet file and
// for to to answer again, and logs how many pings were lost.
func switchDaemon(t *testing.T, l *lab.Lab, i int, bin string, env, args []string, from, to lab.Pod) {
	t.Helper()
	ping := startPing(t, from.NS, to.IP)
	time.Sleep(time.Second)
	start := time.Now()
	if err := l.StopFlanneld(i); err != nil {
		t.Fatal(err)
	}
	if err := l.StartFlanneldBin(i, bin, env, args...); err != nil {
		t.Fatal(err)
	}
	if _, err := l.WaitSubnetEnv(i, startTimeout); err != nil {
		t.Fatal(err)
	}
	started := time.Since(start)
	if err := l.Ping(from.NS, to.IP); err != nil {
		t.Fatalf("node %d switched to %s: pod on node %d -> pod on node %d: %v", i, filepath.Base(bin), from.Node, to.Node, err)
	}
	time.Sleep(3 * time.Second) // what the new daemon does after its subnet file counts too
	sent, lost := stopPing(t, ping)
	t.Logf("node %d switched to %s (subnet file after %v): %d of %d pings at %v from node %d lost (a gap of about %v)",
		i, filepath.Base(bin), started.Round(time.Millisecond), lost, sent, startPingInterval, from.Node, time.Duration(lost)*startPingInterval)
}

// Upgrade in place and back, per backend: node 2 runs upstream's flanneld; it is stopped
// with SIGTERM and ours started with the same flags and subnet file, then the other way
// round. Each time the node keeps its subnet (the lease is reused) and a pod on node 1,
// whose daemon is ours throughout, pings a pod on node 2 again. The pings lost while the
// daemons switch are logged; the test asserts the outcome only.
func TestMixedUpgrade(t *testing.T) {
	for _, b := range mixedBackends {
		t.Run(b.name, func(t *testing.T) {
			up := needUpstream(t)
			l := newLab(t, "mixup"+strings.ReplaceAll(b.name, "-", ""), 2)
			if err := l.PutConfig(context.Background(), b.config); err != nil {
				t.Fatal(err)
			}
			healthz := fmt.Sprintf("--healthz-port=%d", healthzPort)
			if err := l.StartFlanneld(1, healthz, "--ip-masq"); err != nil {
				t.Fatal(err)
			}
			// The flags node 2 keeps across the switches.
			flags := []string{healthz, "--ip-masq"}
			if err := l.StartFlanneldBin(2, up, nil, flags...); err != nil {
				t.Fatal(err)
			}
			for i := 1; i <= 2; i++ {
				if _, err := l.WaitSubnetEnv(i, startTimeout); err != nil {
					t.Fatal(err)
				}
			}
			sn1, sn2 := envSubnet(t, l, 1), envSubnet(t, l, 2)
			b.programmed(t, l)
			pods := addPods(t, l)
			pingMesh(t, l, pods)

			rules := iptablesRules(t, l, 2)
			for _, to := range []struct{ name, bin string }{{"ours", flanneld.bin}, {"upstream", up}} {
				before := leaseValue(t, l, sn2)
				switchDaemon(t, l, 2, to.bin, nil, flags, pods[0], pods[1])
				if got := envSubnet(t, l, 2); got != sn2 {
					t.Fatalf("node 2 under %s: subnet %s, want %s kept", to.name, got, sn2)
				}
				// The lease is reused as it is: same key, same JSON, same VTEP MAC.
				if after := leaseValue(t, l, sn2); after != before {
					t.Errorf("node 2 under %s: lease %s\n  now %s\n  was %s", to.name, sn2, after, before)
				}
				b.programmed(t, l)
				pingMesh(t, l, pods)
				// The same chains and rules, none doubled or left behind.
				if got := iptablesRules(t, l, 2); got != rules {
					t.Errorf("node 2 under %s: iptables rules\n%s\nwant upstream's\n%s", to.name, got, rules)
				}
				checkAdmitted(t, l, 1, etcdPrefixKey(l.EtcdPrefix()), map[int]netip.Prefix{2: sn2})
				if to.bin == flanneld.bin {
					checkAdmitted(t, l, 2, etcdPrefixKey(l.EtcdPrefix()), map[int]netip.Prefix{1: sn1})
				}
			}
		})
	}
}
