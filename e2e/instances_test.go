package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-go/flannel/e2e/lab"
)

// runningDoc is the documentation the several-daemons tests run.
const runningDoc = "../Documentation/running.md"

// docBlock returns the lines of the fenced code block that follows the line
// "<!-- e2e: <marker> -->" in the document.
func docBlock(t *testing.T, doc, marker string) []string {
	t.Helper()
	data, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(data), "<!-- e2e: "+marker+" -->\n")
	if !ok {
		t.Fatalf("%s: no block marked %s", doc, marker)
	}
	fence, rest, _ := strings.Cut(rest, "\n")
	body, _, ok := strings.Cut(rest, "\n```\n")
	if !strings.HasPrefix(fence, "```") || !ok {
		t.Fatalf("%s: the line after the %s marker opens no fenced block", doc, marker)
	}
	return strings.Split(body, "\n")
}

// docNetwork is one network of running.md's several-daemons example: the config its
// etcdctl line writes, and the flags of its flanneld line.
type docNetwork struct {
	name   string // the subnet file's base name ("vxlan-a")
	prefix string
	config string
	args   []string // the flags other than -etcd-prefix and -subnet-file
	port   int      // -healthz-port
}

var etcdctlPutRE = regexp.MustCompile(`^etcdctl put (\S+)/config '(.*)'$`)

// severalNetworksExample reads the example: the etcdctl lines, then one flanneld line per
// network, which must name the lab's etcd and interface.
func severalNetworksExample(t *testing.T) []docNetwork {
	t.Helper()
	configs := map[string]string{}
	var out []docNetwork
	for _, line := range docBlock(t, runningDoc, "TestSeveralNetworks") {
		if m := etcdctlPutRE.FindStringSubmatch(line); m != nil {
			configs[m[1]] = m[2]
			continue
		}
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "flanneld" {
			t.Fatalf("running.md example: unexpected line %q", line)
		}
		var n docNetwork
		for _, a := range f[1:] {
			k, v, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
			switch k {
			case "etcd-prefix":
				n.prefix = v
			case "subnet-file":
				n.name = strings.TrimSuffix(filepath.Base(v), ".env")
			case "etcd-endpoints":
				if v != labEtcdEndpoint {
					t.Fatalf("running.md example: %s is not the lab's etcd", a)
				}
				n.args = append(n.args, a)
			case "healthz-port":
				n.port, _ = strconv.Atoi(v)
				n.args = append(n.args, a)
			default:
				n.args = append(n.args, a)
			}
		}
		n.config = configs[n.prefix]
		if n.prefix == "" || n.name == "" || n.config == "" || n.port == 0 {
			t.Fatalf("running.md example: %q lacks a prefix with a config, a subnet file or a healthz port", line)
		}
		out = append(out, n)
	}
	if len(out) != 2 {
		t.Fatalf("running.md example: %d networks, want 2", len(out))
	}
	return out
}

// labEtcdEndpoint is the etcd endpoint of every lab, and of the documentation's examples.
var labEtcdEndpoint = fmt.Sprintf("http://%s:2379", lab.EtcdIP)

// startNetwork writes n's config and starts its daemon on every node of the lab; it
// returns the instances, node 1's first, once each has written its subnet file.
func startNetwork(t *testing.T, l *lab.Lab, n docNetwork) []*lab.Instance {
	t.Helper()
	var out []*lab.Instance
	for i := 1; i <= l.Nodes(); i++ {
		in, err := l.Instance(i, n.name, n.prefix)
		if err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			if err := in.PutConfig(context.Background(), n.config); err != nil {
				t.Fatal(err)
			}
		}
		if err := in.Start(n.args...); err != nil {
			t.Fatal(err)
		}
		out = append(out, in)
	}
	for _, in := range out {
		if _, err := in.WaitSubnetEnv(startTimeout); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, in := range out {
				t.Logf("---- %s log, last 40 lines:\n%s", in, lab.TailFile(in.LogPath(), 40))
			}
		}
	})
	return out
}

// networkPods adds pod j on every node, behind bridge, addressed from ins' subnet files.
func networkPods(t *testing.T, l *lab.Lab, ins []*lab.Instance, j int, bridge string) []lab.Pod {
	t.Helper()
	var pods []lab.Pod
	for _, in := range ins {
		p, err := l.AddPodOn(in.Node(), j, in.SubnetEnvPath(), bridge)
		if err != nil {
			t.Fatal(err)
		}
		pods = append(pods, p)
	}
	return pods
}

// repairs is the number of kernel objects and rules the daemon in ns with healthz port
// port has repaired (flannel_kernel_object_changes_total{op="repaired"}, every kind).
func repairs(t *testing.T, ns string, port int) float64 {
	t.Helper()
	var sum float64
	waitFor(t, convergeTimeout, fmt.Sprintf("/metrics on port %d in %s", port, ns), func() (bool, string) {
		m, err := scrapeAt(ns, port)
		if err != nil {
			return false, err.Error()
		}
		sum = 0
		for k, v := range m {
			if strings.HasPrefix(k, "flannel_kernel_object_changes_total{") && strings.Contains(k, `op="repaired"`) {
				sum += v
			}
		}
		return true, ""
	})
	return sum
}

// readyAt waits until the daemon in ns with healthz port port is ready.
func readyAt(t *testing.T, ns string, port int) {
	t.Helper()
	waitFor(t, convergeTimeout, fmt.Sprintf("/readyz on port %d in %s", port, ns), func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		code, body, err := lab.HTTPGet(ctx, ns, fmt.Sprintf("http://127.0.0.1:%d/readyz", port))
		if err != nil {
			return false, err.Error()
		}
		return code == 200, fmt.Sprintf("%d %s", code, body)
	})
}

// deviceAddrs lists the IPv4 addresses on dev in ns.
func deviceAddrs(t *testing.T, ns, dev string) []string {
	t.Helper()
	link, err := lab.GetLink(context.Background(), ns, dev)
	if err != nil {
		t.Fatal(err)
	}
	return link.IPv4Addrs()
}

// running.md's example of two networks on one node works as shown.
// Each network's pods reach each other across the nodes, each daemon keeps to its own
// device, and neither repairs anything: the two do not fight.
func TestSeveralNetworks(t *testing.T) {
	ex := severalNetworksExample(t)
	l := newLab(t, "multi", 2)
	nets := make([][]*lab.Instance, len(ex))
	for k, n := range ex {
		nets[k] = startNetwork(t, l, n)
	}
	devs := []string{"flannel.1", "flannel.2"} // the example's VNIs
	for k, ins := range nets {
		pods := networkPods(t, l, ins, k, fmt.Sprintf("cni%d", k))
		t.Logf("network %s: pods %v and %v", ex[k].name, pods[0].IP, pods[1].IP)
		pingMesh(t, l, pods)
		for _, in := range ins {
			env, err := in.WaitSubnetEnv(time.Second)
			if err != nil {
				t.Fatal(err)
			}
			sn := netip.MustParsePrefix(env["FLANNEL_SUBNET"]).Masked()
			want := []string{sn.Addr().String() + "/32"}
			if got := deviceAddrs(t, l.NodeNS(in.Node()), devs[k]); strings.Join(got, ",") != want[0] {
				t.Errorf("%s: %s has %q, want only its own %q", in, devs[k], got, want)
			}
		}
	}

	// No fight: the repair counters stand still over some seconds, and no daemon says
	// that something keeps changing what it owns.
	before := map[string]float64{}
	for k, ins := range nets {
		for _, in := range ins {
			readyAt(t, l.NodeNS(in.Node()), ex[k].port)
			before[in.String()] = repairs(t, l.NodeNS(in.Node()), ex[k].port)
		}
	}
	time.Sleep(10 * time.Second)
	for k, ins := range nets {
		for _, in := range ins {
			if after := repairs(t, l.NodeNS(in.Node()), ex[k].port); after != before[in.String()] {
				t.Errorf("%s repaired %v objects in 10 s after converging", in, after-before[in.String()])
			}
			if !in.Running() {
				t.Errorf("%s stopped", in)
			}
			log, _ := os.ReadFile(in.LogPath())
			for _, bad := range []string{"keeps being changed by someone else", "Reconcile failed", "Refusing to start"} {
				if strings.Contains(string(log), bad) {
					t.Errorf("%s logged %q", in, bad)
				}
			}
		}
	}
	pingMesh(t, l, networkPodsOf(l, 0))
	pingMesh(t, l, networkPodsOf(l, 1))
}

// networkPodsOf lists the lab's pods of index j (one network's, in these tests).
func networkPodsOf(l *lab.Lab, j int) []lab.Pod {
	var out []lab.Pod
	for _, p := range l.Pods() {
		if p.Index == j {
			out = append(out, p)
		}
	}
	return out
}

// refusalLine is the one line with the refusal in a daemon's output.
func refusalLine(t *testing.T, out string) string {
	t.Helper()
	var lines []string
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "Refusing to start") {
			lines = append(lines, line)
		}
	}
	if len(lines) != 1 {
		t.Errorf("%d refusal lines, want 1:\n%s", len(lines), out)
		return ""
	}
	return lines[0]
}

// klogHeader is the start of a klog line up to the message ("E1207 13:44:19.239895 2332
// main.go:190] ").
var klogHeader = regexp.MustCompile(`^[IWEF]\d{4} [\d:.]+\s+\d+ [\w.]+:\d+\] `)

// leasesUnder counts the subnet leases in etcd under prefix.
func leasesUnder(t *testing.T, l *lab.Lab, prefix string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := l.Etcd().Get(ctx, prefix+"/subnets/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

// A daemon refuses, with one line naming the other instance and what
// to change, a config whose device, VNI and port, or network another running instance
// has; it exits 1 before touching anything, and the other one's pods keep pinging.
// Of two that start together with colliding configs, exactly one refuses. A device a
// stopped instance's state file records is adopted with a warning, and the stopped one
// then refuses to come back beside it.
func TestInstancesRefuseWhatAnotherClaims(t *testing.T) {
	a := severalNetworksExample(t)[0] // vxlan-a: VNI 1, 10.5.0.0/16
	l := newLab(t, "claims", 2)
	ins := startNetwork(t, l, a)
	pods := networkPods(t, l, ins, 0, "cni0")
	pingMesh(t, l, pods)
	ns1, pid := l.NodeNS(1), ins[0].PID()
	readyAt(t, ns1, a.port)
	before, err := lab.GetLink(context.Background(), ns1, "flannel.1")
	if err != nil {
		t.Fatal(err)
	}
	addrsBefore := deviceAddrs(t, ns1, "flannel.1")
	watch := watchKernel(t, ns1, "flannel.1", netip.MustParsePrefix("10.5.0.0/16"))
	ping := startPing(t, pods[0].NS, pods[1].IP)

	other := fmt.Sprintf("the flanneld of etcd-prefix:/vxlan-a/network (pid %d, backend vxlan, network 10.5.0.0/16, subnet file %s)",
		pid, ins[0].SubnetEnvPath())
	// running.md quotes the refusal of the first case, as the daemon prints it.
	docLine := docBlock(t, runningDoc, "TestInstancesRefuseWhatAnotherClaims")[0]
	docLine = regexp.MustCompile(`pid \d+`).ReplaceAllString(docLine, fmt.Sprintf("pid %d", pid))
	docLine = strings.ReplaceAll(docLine, "/run/flannel/vxlan-a.env", ins[0].SubnetEnvPath())
	cases := []struct {
		name, prefix, config string
		want                 string // the refusal line after the klog header
	}{
		{"vxlan-b", "/vxlan-b/network", `{"Network":"10.6.0.0/16","Backend":{"Type":"vxlan"}}`, docLine},
		{"udp-c", "/udp-c/network", `{"Network":"10.7.0.0/16","Backend":{"Type":"udp","Port":8472}}`,
			`"Refusing to start: another flanneld in this network namespace claims what this network's config asks for" ` +
				`err="UDP port 8472 (IPv4, 192.0.2.11) (theirs: VXLAN VNI 1 on UDP port 8472 (IPv4)) is taken by ` + other +
				`: set another Backend.Port in this network's config"`},
		{"vxlan-d", "/vxlan-d/network", `{"Network":"10.5.128.0/17","Backend":{"Type":"vxlan","VNI":4}}`,
			`"Refusing to start: another flanneld in this network namespace claims what this network's config asks for" ` +
				`err="network 10.5.128.0/17 (theirs: 10.5.0.0/16) is taken by ` + other +
				`: set another Network, one that does not overlap theirs, in this network's config"`},
	}
	for _, tc := range cases {
		in, err := l.Instance(1, tc.name, tc.prefix)
		if err != nil {
			t.Fatal(err)
		}
		if err := in.PutConfig(context.Background(), tc.config); err != nil {
			t.Fatal(err)
		}
		code, out := runFlanneldOnce(t, in.Command(), 60*time.Second)
		line := klogHeader.ReplaceAllString(refusalLine(t, out), "")
		if code != 1 || line != tc.want {
			t.Errorf("%s: exit %d, refusal\n %s\nwant\n %s\noutput:\n%s", tc.name, code, line, tc.want, out)
		}
		if n := leasesUnder(t, l, tc.prefix); n != 0 {
			t.Errorf("%s: the refused daemon acquired %d leases", tc.name, n)
		}
	}
	time.Sleep(time.Second)
	sent, lost := stopPing(t, ping)
	t.Logf("pings between network a's pods while 3 daemons were refused: %d of %d lost", lost, sent)
	if lost > maxRestartLoss {
		t.Errorf("%d of %d pings lost (bound %d, target 0)", lost, sent, maxRestartLoss)
	}
	disruptions, writes := watch.result()
	for _, d := range append(disruptions, writes...) {
		if strings.Contains(d, "address fe80:") {
			continue // the kernel's link-local address of the new device settling
		}
		t.Errorf("node 1's flannel.1 or its entries changed: %s", d)
	}
	after, err := lab.GetLink(context.Background(), ns1, "flannel.1")
	if err != nil || after.Ifindex != before.Ifindex || after.Address != before.Address || after.MTU != before.MTU {
		t.Errorf("flannel.1 changed: %+v -> %+v (%v)", before, after, err)
	}
	if got := deviceAddrs(t, ns1, "flannel.1"); strings.Join(got, ",") != strings.Join(addrsBefore, ",") {
		t.Errorf("flannel.1's addresses %q, before %q", got, addrsBefore)
	}
	if !ins[0].Running() {
		t.Fatalf("network a's daemon stopped:\n%s", lab.TailFile(ins[0].LogPath(), 30))
	}
	readyAt(t, ns1, a.port)

	// Two daemons whose configs collide, started together: exactly one refuses.
	var pair []*lab.Instance
	for k, name := range []string{"vxlan-e", "vxlan-f"} {
		in, err := l.Instance(1, name, "/"+name+"/network")
		if err != nil {
			t.Fatal(err)
		}
		if err := in.PutConfig(context.Background(), fmt.Sprintf(`{"Network":"10.%d.0.0/16","Backend":{"Type":"vxlan","VNI":5}}`, 8+k)); err != nil {
			t.Fatal(err)
		}
		pair = append(pair, in)
	}
	for _, in := range pair {
		if err := in.Start(); err != nil {
			t.Fatal(err)
		}
	}
	var refused, runs *lab.Instance
	waitFor(t, startTimeout, "one of two colliding daemons to refuse", func() (bool, string) {
		for k, in := range pair {
			if !in.Running() {
				refused, runs = in, pair[1-k]
				return true, ""
			}
		}
		return false, "both run"
	})
	if code, err := refused.WaitExit(time.Second); code != 1 || err != nil {
		t.Errorf("%s ended with %d %v, want 1", refused, code, err)
	}
	log, _ := os.ReadFile(refused.LogPath())
	if !strings.Contains(string(log), "device flannel.5 is taken by the flanneld of etcd-prefix:"+runs.Prefix()) {
		t.Errorf("%s's refusal does not name %s:\n%s", refused, runs, log)
	}
	if _, err := runs.WaitSubnetEnv(startTimeout); err != nil {
		t.Errorf("%s beside the refused one: %v", runs, err)
	}
	if err := runs.Stop(); err != nil {
		t.Error(err)
	}

	// Network a stops on node 1 and leaves flannel.1 behind, recorded in its state file;
	// b, with the VNI forgotten, adopts it with a warning, and a cannot come back.
	if err := ins[0].Stop(); err != nil {
		t.Fatal(err)
	}
	b, err := l.Instance(1, "vxlan-b", "/vxlan-b/network")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WaitSubnetEnv(startTimeout); err != nil {
		t.Fatal(err)
	}
	log, _ = os.ReadFile(b.LogPath())
	if !strings.Contains(string(log), `"Adopting a device recorded by the state file of a flanneld instance that is not running; `+
		`if that instance serves another network, give one of the two networks another Backend.VNI" device="flannel.1" stateFile="`+
		filepath.Join(l.NodeDir(1), "vxlan-a.state.json")+`"`) {
		t.Errorf("vxlan-b adopted flannel.1 without the warning:\n%s", log)
	}
	code, out := runFlanneldOnce(t, ins[0].Command(a.args...), 60*time.Second)
	if line := refusalLine(t, out); code != 1 || !strings.Contains(line, "device flannel.1 is taken by the flanneld of etcd-prefix:/vxlan-b/network") {
		t.Errorf("network a beside b: exit %d, %s", code, line)
	}
}
