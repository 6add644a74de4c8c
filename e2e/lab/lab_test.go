package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func needRoot(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("lab: skipped in -short mode (needs network namespaces)")
	}
	if os.Geteuid() != 0 {
		t.Skip("lab: needs root to create network namespaces (run the tests with sudo)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("lab: iproute2 (ip) not installed")
	}
}

func newTestLab(t *testing.T, tag string, opts Options) *Lab {
	t.Helper()
	// Leftovers of crashed earlier runs (labs of live test processes are kept).
	if err := Sweep("fglt"); err != nil {
		t.Logf("Sweep: %v", err)
	}
	opts.Name = UniqueName("fglt", tag)
	if opts.WorkDir == "" {
		opts.WorkDir = t.TempDir()
	}
	opts.Logf = t.Logf
	l, err := New(context.Background(), opts)
	if err != nil {
		t.Fatalf("lab.New: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return l
}

func rootLinkNames(t *testing.T) []string {
	t.Helper()
	out, err := run(context.Background(), "ip", "-o", "link", "show")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 {
			names = append(names, strings.TrimSuffix(strings.SplitN(f[1], "@", 2)[0], ":"))
		}
	}
	slices.Sort(names)
	return names
}

func namespaceExists(t *testing.T, ns string) bool {
	t.Helper()
	all, err := listNamespaces(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return slices.Contains(all, ns)
}

func TestTopologyEtcdAndClose(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("etcd"); err != nil && os.Getenv("FLANNEL_TEST_ETCD") == "" {
		t.Skip("etcd not installed (apt-get install etcd-server)")
	}
	ctx := context.Background()
	rootBefore := rootLinkNames(t)
	l := newTestLab(t, "topo", Options{Nodes: 2})

	if got := rootLinkNames(t); !slices.Equal(got, rootBefore) {
		t.Errorf("root namespace links changed: before %v, after %v", rootBefore, got)
	}
	for i := 1; i <= 2; i++ {
		eth0, err := GetLink(ctx, l.NodeNS(i), "eth0")
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("192.0.2.%d/24", 10+i)
		if !slices.Contains(eth0.IPv4Addrs(), want) || !eth0.IsUp() || eth0.MTU != 1500 {
			t.Errorf("node %d eth0: addrs %v up %v mtu %d, want %s up 1500", i, eth0.IPv4Addrs(), eth0.IsUp(), eth0.MTU, want)
		}
		routes, err := Routes(ctx, l.NodeNS(i))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(routes, func(r Route) bool {
			return r.Dst == "default" && r.Gateway == "192.0.2.1" && r.Dev == "eth0"
		}) {
			t.Errorf("node %d: no default route via 192.0.2.1 dev eth0: %+v", i, routes)
		}
		fwd, err := l.Exec(l.NodeNS(i), "cat", "/proc/sys/net/ipv4/ip_forward")
		if err != nil || strings.TrimSpace(fwd) != "1" {
			t.Errorf("node %d: ip_forward = %q, %v", i, fwd, err)
		}
	}
	br0, err := GetLink(ctx, l.SwitchNS(), "br0")
	if err != nil {
		t.Fatal(err)
	}
	if br0.Kind != "bridge" || !slices.Contains(br0.IPv4Addrs(), "192.0.2.1/24") || !slices.Contains(br0.IPv4Addrs(), "192.0.2.254/24") {
		t.Errorf("br0: kind %q addrs %v", br0.Kind, br0.IPv4Addrs())
	}
	if err := l.Ping(l.NodeNS(1), l.NodeIP(2)); err != nil {
		t.Errorf("underlay ping n1 -> n2: %v", err)
	}
	// Nothing is reachable beyond the lab: the switch has no route out.
	if _, err := l.Exec(l.NodeNS(1), "ping", "-n", "-c", "1", "-W", "1", "198.51.100.77"); err == nil {
		t.Errorf("a packet to 198.51.100.77 got an answer: the lab is not closed")
	}

	// etcd: the client (through the switch namespace) and a node (over the bridge).
	if err := l.PutConfig(ctx, `{"Network":"10.5.0.0/16"}`); err != nil {
		t.Fatal(err)
	}
	resp, err := l.Etcd().Get(ctx, DefaultEtcdPrefix+"/config")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != `{"Network":"10.5.0.0/16"}` {
		t.Fatalf("config read back: %v %v", resp, err)
	}
	code, body, err := HTTPGet(ctx, l.NodeNS(2), l.EtcdEndpoint()+"/version")
	if err != nil || code != 200 || !strings.Contains(body, "etcdserver") {
		t.Errorf("GET /version from node 2: %d %q %v", code, body, err)
	}

	own := []string{l.SwitchNS(), l.NodeNS(1), l.NodeNS(2)}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, ns := range own {
		if namespaceExists(t, ns) {
			t.Errorf("namespace %s still exists after Close", ns)
		}
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if l.EtcdProc() != nil || l.Etcd() != nil {
		t.Errorf("etcd still referenced after Close")
	}
	if err := l.StartFlanneld(1); err == nil {
		t.Errorf("StartFlanneld after Close succeeded")
	}
}

func TestNewCleansUpAfterFailure(t *testing.T) {
	needRoot(t)
	t.Setenv("FLANNEL_TEST_ETCD", "/bin/false") // etcd "exits during start-up"
	name := UniqueName("fglt", "fail")
	_, err := New(context.Background(), Options{Name: name, Nodes: 2, WorkDir: t.TempDir()})
	if err == nil {
		t.Fatal("New succeeded with a failing etcd")
	}
	all, lerr := listNamespaces(context.Background())
	if lerr != nil {
		t.Fatal(lerr)
	}
	for _, ns := range all {
		if strings.HasPrefix(ns, name) {
			t.Errorf("namespace %s left behind after failed New (%v)", ns, err)
			_ = deleteNamespaces(context.Background(), []string{ns})
		}
	}
}

func TestOptionsValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"empty name", Options{Nodes: 1, WorkDir: "/tmp/x"}},
		{"dash in name", Options{Name: "a-b", Nodes: 1, WorkDir: "/tmp/x"}},
		{"slash in name", Options{Name: "a/b", Nodes: 1, WorkDir: "/tmp/x"}},
		{"no nodes", Options{Name: "ab", WorkDir: "/tmp/x"}},
		{"too many nodes", Options{Name: "ab", Nodes: 201, WorkDir: "/tmp/x"}},
		{"no workdir", Options{Name: "ab", Nodes: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(context.Background(), tc.opts); err == nil {
				t.Fatal("New accepted invalid options")
			}
		})
	}
}

func TestNameMatching(t *testing.T) {
	for _, tc := range []struct {
		ns   string
		want bool
	}{
		{"fgx-n1", true}, {"fgx-n12-p0", true}, {"fgx-n1-p", false}, {"fgx-nx", false},
		{"fgx-sw", false}, {"fgxy-n1", false}, {"fgx-n1x", false}, {"fgx-n", false},
	} {
		if got := belongsToNodes(tc.ns, "fgx"); got != tc.want {
			t.Errorf("belongsToNodes(%q) = %v, want %v", tc.ns, got, tc.want)
		}
	}
	for _, tc := range []struct {
		rest string
		pid  int
		ok   bool
	}{
		{"123xabc-sw", 123, true}, {"-sw", 0, false}, {"x-sw", 0, false}, {"12a3x-sw", 0, false}, {"0x-n1", 0, false},
	} {
		pid, ok := ownerPID(tc.rest)
		if pid != tc.pid || ok != tc.ok {
			t.Errorf("ownerPID(%q) = %d %v, want %d %v", tc.rest, pid, ok, tc.pid, tc.ok)
		}
	}
}

func TestSweep(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	family := fmt.Sprintf("fglsw%d", os.Getpid())
	dead := family + "-sw"               // no owner PID: swept
	alive := family + "1xlive-n1"        // owner PID 1 is alive: kept
	deadPID := family + "999999999xd-sw" // PID beyond pid_max: swept
	for _, ns := range []string{dead, alive, deadPID} {
		if err := addNamespace(ctx, ns); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = deleteNamespaces(ctx, []string{dead, alive, deadPID}) })
	// A process left in a namespace (as after a crash) is killed by the sweep.
	sleeper := exec.Command("ip", "netns", "exec", dead, "sleep", "300")
	sleeper.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- sleeper.Wait() }()
	// Wait until the sleeper is inside the namespace.
	for deadline := time.Now().Add(10 * time.Second); ; {
		pids, _ := namespacePIDs(ctx, dead)
		if len(pids) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("sleeper never showed up in the namespace")
		}
		time.Sleep(50 * time.Millisecond)
	}

	if err := Sweep(family); err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	if namespaceExists(t, dead) || namespaceExists(t, deadPID) {
		t.Errorf("Sweep left %s or %s", dead, deadPID)
	}
	if !namespaceExists(t, alive) {
		t.Errorf("Sweep removed %s although its PID is alive", alive)
	}
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		_ = sleeper.Process.Kill()
		t.Errorf("process in a swept namespace survived")
	}
	if err := Sweep(""); err == nil {
		t.Errorf("Sweep with an empty prefix succeeded")
	}
}

// fakeFlanneld is a shell stand-in for flanneld: it checks it runs in the node namespace,
// writes the subnet file and waits for SIGTERM (exit 0), or exits with the status given
// by --fake-exit=N.
const fakeFlanneld = `#!/bin/sh
f=""; code=""
for a in "$@"; do
  case "$a" in
    --subnet-file=*) f="${a#--subnet-file=}" ;;
    --fake-exit=*) code="${a#--fake-exit=}" ;;
  esac
done
echo "fake flanneld args: $*"
ip -o -4 addr show dev eth0
if [ -n "$code" ]; then echo "exiting $code"; exit "$code"; fi
printf 'FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n' > "$f.tmp"
mv "$f.tmp" "$f"
trap 'echo got TERM; exit 0' TERM
while :; do sleep 0.1; done
`

func TestProcessControlWithFakeDaemon(t *testing.T) {
	needRoot(t)
	bin := filepath.Join(t.TempDir(), "fake-flanneld")
	if err := os.WriteFile(bin, []byte(fakeFlanneld), 0o755); err != nil {
		t.Fatal(err)
	}
	l := newTestLab(t, "proc", Options{Nodes: 2, NoEtcd: true, FlanneldBin: bin})

	if err := l.StartFlanneld(1); err != nil {
		t.Fatal(err)
	}
	if err := l.StartFlanneld(1); err == nil {
		t.Error("second StartFlanneld on a running node succeeded")
	}
	env, err := l.WaitSubnetEnv(1, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if env["FLANNEL_SUBNET"] != "10.5.7.1/24" || env["FLANNEL_MTU"] != "1450" {
		t.Errorf("subnet env: %v", env)
	}
	if !l.FlanneldRunning(1) || l.FlanneldPID(1) == 0 {
		t.Error("fake flanneld not running")
	}
	log := l.LogTail(1, 50)
	for _, want := range []string{"--etcd-endpoints=http://192.0.2.254:2379", "--etcd-prefix=/coreos.com/network",
		"--iface=eth0", "--subnet-file=" + l.SubnetEnvPath(1), "--healthz-port=0", "-v=2", "inet 192.0.2.11/24"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if err := l.StopFlanneld(1); err != nil {
		t.Fatalf("StopFlanneld: %v", err)
	}
	if code, err := l.WaitExit(1, time.Second); err != nil || code != 0 {
		t.Errorf("WaitExit after stop = %d, %v", code, err)
	}
	if !strings.Contains(l.LogTail(1, 5), "got TERM") {
		t.Errorf("fake did not see SIGTERM:\n%s", l.LogTail(1, 5))
	}

	// A restart must not take the previous run's file as fresh.
	if err := l.StartFlanneld(1, "--fake-exit=3"); err != nil {
		t.Fatal(err)
	}
	if code, err := l.WaitExit(1, 30*time.Second); err != nil || code != 3 {
		t.Errorf("WaitExit = %d, %v; want 3", code, err)
	}
	if _, err := l.WaitSubnetEnv(1, 5*time.Second); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Errorf("WaitSubnetEnv after an early exit: %v", err)
	}

	// SIGKILL, and WaitExit on a running process times out.
	if err := l.StartFlanneld(2); err != nil {
		t.Fatal(err)
	}
	if _, err := l.WaitExit(2, 300*time.Millisecond); err == nil {
		t.Error("WaitExit on a running daemon did not time out")
	}
	if err := l.KillFlanneld(2); err != nil {
		t.Fatal(err)
	}
	if code, err := l.WaitExit(2, time.Second); err != nil || code != -1 {
		t.Errorf("WaitExit after SIGKILL = %d, %v; want -1", code, err)
	}
	if err := l.StartFlanneld(3); err == nil {
		t.Error("StartFlanneld on a missing node succeeded")
	}
	if _, err := l.WaitExit(2, time.Second); err != nil {
		t.Error(err)
	}
}

// TestPodsOverHandMadeVXLAN programs what flanneld would (subnet file, flannel.1, one
// ARP/FDB/route triplet per peer) by hand, then proves the pod helpers, Ping and the
// inspection helpers on it.
func TestPodsOverHandMadeVXLAN(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	l := newTestLab(t, "pods", Options{Nodes: 2, NoEtcd: true})
	subnets := map[int]string{1: "10.5.1", 2: "10.5.2"}
	macs := map[int]string{1: "02:00:00:00:01:01", 2: "02:00:00:00:02:02"}
	for i := 1; i <= 2; i++ {
		ns := l.NodeNS(i)
		text := fmt.Sprintf("FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=%s.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n", subnets[i])
		if err := os.WriteFile(l.SubnetEnvPath(i), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, args := range [][]string{
			{"link", "add", "flannel.1", "address", macs[i], "type", "vxlan", "id", "1", "local", l.NodeIP(i).String(),
				"dev", "eth0", "dstport", "8472", "nolearning"},
			{"link", "set", "flannel.1", "mtu", "1450", "up"},
			{"addr", "add", subnets[i] + ".0/32", "dev", "flannel.1"},
		} {
			if _, err := ipn(ctx, ns, args...); err != nil {
				t.Fatal(err)
			}
		}
		peer := 3 - i
		for _, args := range [][]string{
			{"ip", "-n", ns, "neigh", "replace", subnets[peer] + ".0", "lladdr", macs[peer], "dev", "flannel.1", "nud", "permanent"},
			{"bridge", "-n", ns, "fdb", "replace", macs[peer], "dev", "flannel.1", "dst", l.NodeIP(peer).String(), "self", "permanent"},
			{"ip", "-n", ns, "route", "replace", subnets[peer] + ".0/24", "via", subnets[peer] + ".0", "dev", "flannel.1", "onlink"},
		} {
			if _, err := run(ctx, args[0], args[1:]...); err != nil {
				t.Fatal(err)
			}
		}
	}
	var pods []Pod
	for i := 1; i <= 2; i++ {
		if _, err := l.AddPod(i, 0); err != nil {
			t.Fatal(err)
		}
		p, err := l.AddPod(i, 0) // again: converges to the same thing
		if err != nil {
			t.Fatalf("second AddPod: %v", err)
		}
		pods = append(pods, p)
	}
	if want := netip.MustParseAddr("10.5.1.2"); pods[0].IP != want || pods[0].Gateway != netip.MustParseAddr("10.5.1.1") {
		t.Errorf("pod 0 on node 1: %+v", pods[0])
	}
	if got := l.Pods(); len(got) != 2 || got[0] != pods[0] || got[1] != pods[1] {
		t.Errorf("Pods() = %+v", got)
	}
	cni0, err := GetLink(ctx, l.NodeNS(1), "cni0")
	if err != nil {
		t.Fatal(err)
	}
	if cni0.Kind != "bridge" || cni0.MTU != 1450 || !slices.Equal(cni0.IPv4Addrs(), []string{"10.5.1.1/24"}) {
		t.Errorf("cni0: kind %q mtu %d addrs %v", cni0.Kind, cni0.MTU, cni0.IPv4Addrs())
	}
	if err := l.Ping(pods[0].NS, pods[1].IP); err != nil {
		t.Errorf("pod ping 1 -> 2 over vxlan: %v", err)
	}
	rtt, err := l.PingRTT(pods[1].NS, pods[0].IP, 30*time.Second)
	if err != nil || rtt <= 0 {
		t.Errorf("PingRTT 2 -> 1 = %v, %v", rtt, err)
	}

	// The inspection helpers see the triplet exactly as programmed.
	ns := l.NodeNS(1)
	routes, err := Routes(ctx, ns)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(routes, func(r Route) bool {
		return r.Dst == "10.5.2.0/24" && r.Gateway == "10.5.2.0" && r.Dev == "flannel.1" && r.HasFlag("onlink")
	}) {
		t.Errorf("route to 10.5.2.0/24 not seen: %+v", routes)
	}
	neighs, err := Neighs(ctx, ns)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(neighs, func(n Neigh) bool {
		return n.Dst == "10.5.2.0" && n.Dev == "flannel.1" && n.LLAddr == macs[2] && slices.Contains(n.State, "PERMANENT")
	}) {
		t.Errorf("ARP entry not seen: %+v", neighs)
	}
	fdbs, err := FDBs(ctx, ns)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(fdbs, func(f FDB) bool {
		return f.MAC == macs[2] && f.Dev == "flannel.1" && f.Dst == "192.0.2.12" && f.State == "permanent" && slices.Contains(f.Flags, "self")
	}) {
		t.Errorf("FDB entry not seen: %+v", fdbs)
	}
	vx, err := GetLink(ctx, ns, "flannel.1")
	if err != nil {
		t.Fatal(err)
	}
	if vx.VXLAN == nil || vx.VXLAN.ID != 1 || vx.VXLAN.Local != "192.0.2.11" || vx.VXLAN.Port != 8472 ||
		vx.VXLAN.Learning || vx.Address != macs[1] || vx.MTU != 1450 {
		t.Errorf("flannel.1 details: %+v %+v", vx, vx.VXLAN)
	}
	if _, err := GetLink(ctx, ns, "flannel.9"); !errors.Is(err, ErrNoLink) {
		t.Errorf("GetLink of a missing device: %v", err)
	}

	// A new subnet in the file: AddPod moves cni0 and the pod along.
	if err := os.WriteFile(l.SubnetEnvPath(1), []byte("FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.9.1/24\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ=false\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := l.AddPod(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	cni0, err = GetLink(ctx, l.NodeNS(1), "cni0")
	if err != nil {
		t.Fatal(err)
	}
	if p.IP != netip.MustParseAddr("10.5.9.2") || !slices.Equal(cni0.IPv4Addrs(), []string{"10.5.9.1/24"}) || cni0.MTU != 1400 {
		t.Errorf("after subnet change: pod %+v, cni0 %v mtu %d", p, cni0.IPv4Addrs(), cni0.MTU)
	}
	if err := l.Ping(p.NS, p.Gateway); err != nil {
		t.Errorf("pod -> its gateway after re-creation: %v", err)
	}
	if _, err := l.Exec(p.NS, "false"); err == nil {
		t.Error("Exec of a failing command returned no error")
	}
	if _, err := l.Exec(p.NS, "sh", "-c", "echo oops >&2; exit 2"); err == nil || !strings.Contains(err.Error(), "oops") {
		t.Errorf("Exec error lacks stderr: %v", err)
	}
}
