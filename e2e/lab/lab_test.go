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
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flannel-go/flannel/subnet"
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
		// Without Options.IPv6 the kernel's IPv6 defaults stay: no lab address, no forwarding.
		fwd6, err := l.Exec(l.NodeNS(i), "cat", "/proc/sys/net/ipv6/conf/all/forwarding")
		if len(eth0.IPv6Addrs()) != 0 || l.NodeIPv6(i).IsValid() || err != nil || strings.TrimSpace(fwd6) != "0" {
			t.Errorf("node %d of an IPv4 lab: IPv6 %v %s, forwarding %q %v", i, eth0.IPv6Addrs(), l.NodeIPv6(i), fwd6, err)
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

// TestPodsOverHandMadeVXLAN proves the pod, Ping and inspection helpers on a vxlan
// overlay programmed by hand as flanneld would.
func TestPodsOverHandMadeVXLAN(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	l := newTestLab(t, "pods", Options{Nodes: 2, NoEtcd: true})
	subnets := map[int]string{1: "10.5.1", 2: "10.5.2"}
	macs := map[int]string{1: "02:00:00:00:01:01", 2: "02:00:00:00:02:02"}
	devs := map[int]handVXLAN{}
	for i := 1; i <= 2; i++ {
		devs[i] = handVXLAN{"flannel.1", macs[i], l.NodeIP(i), 1450, netip.MustParsePrefix(subnets[i] + ".0/24")}
	}
	for i := 1; i <= 2; i++ {
		text := fmt.Sprintf("FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=%s.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n", subnets[i])
		if err := os.WriteFile(l.SubnetEnvPath(i), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		devs[i].program(t, l.NodeNS(i), devs[3-i])
	}
	pods := addPodTwice(t, l)
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

func TestNetConfig(t *testing.T) {
	for _, tc := range []struct {
		stack  Stack
		want   string
		v4, v6 bool
	}{
		{IPv4Only, `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`, true, false},
		{DualStack, `{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:1000::/56","Backend":{"Type":"vxlan"}}`, true, true},
		{IPv6Only, `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:1000::/56","Backend":{"Type":"vxlan"}}`, false, true},
	} {
		t.Run(tc.stack.String(), func(t *testing.T) {
			got := NetConfig(tc.stack, `{"Type":"vxlan"}`)
			if got != tc.want {
				t.Fatalf("NetConfig = %s, want %s", got, tc.want)
			}
			cfg, err := subnet.ParseConfig(got)
			if err != nil {
				t.Fatalf("the daemon's parser refuses it: %v", err)
			}
			if cfg.EnableIPv4 != tc.v4 || cfg.EnableIPv6 != tc.v6 || cfg.BackendType != "vxlan" {
				t.Errorf("parsed: IPv4 %v IPv6 %v backend %q", cfg.EnableIPv4, cfg.EnableIPv6, cfg.BackendType)
			}
			if tc.v6 && (cfg.IPv6SubnetLen != 64 || cfg.IPv6Network.Overlaps(UnderlayIPv6) || cfg.IPv6Network.Overlaps(Underlay2IPv6)) {
				t.Errorf("IPv6 pod network %s /%d overlaps the underlay or has no /64 subnets", cfg.IPv6Network, cfg.IPv6SubnetLen)
			}
		})
	}
}

func TestAddrPlus(t *testing.T) {
	for _, tc := range []struct {
		a    string
		n    uint32
		want string
	}{
		{"10.5.85.0", 2, "10.5.85.2"}, {"10.5.85.255", 1, "10.5.86.0"}, {"255.255.255.255", 1, "0.0.0.0"},
		{"2001:db8:1000:5::", 2, "2001:db8:1000:5::2"}, {"2001:db8::ff", 1, "2001:db8::100"},
		{"2001:db8::ffff:ffff", 1, "2001:db8::1:0:0"},
	} {
		if got := addrPlus(netip.MustParseAddr(tc.a), tc.n); got != netip.MustParseAddr(tc.want) {
			t.Errorf("addrPlus(%s, %d) = %s, want %s", tc.a, tc.n, got, tc.want)
		}
	}
	if got := nodeIPv6(12, false); got != netip.MustParseAddr("2001:db8::22") {
		t.Errorf("nodeIPv6(12) = %s", got)
	}
	if got := nodeIPv6(3, true); got != netip.MustParseAddr("2001:db8:0:1::13") {
		t.Errorf("nodeIPv6(3, second segment) = %s", got)
	}
}

// TestIPv6Underlay: in a dual-stack lab IPv6 addresses are usable at once, routed and
// forwarded within and across segments, and nothing beyond the lab is reachable.
func TestIPv6Underlay(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	rootBefore := rootLinkNames(t)
	l := newTestLab(t, "six", Options{Nodes: 3, NoEtcd: true, IPv6: true, SecondSegment: []int{3}})
	if got := rootLinkNames(t); !slices.Equal(got, rootBefore) {
		t.Errorf("root namespace links changed: before %v, after %v", rootBefore, got)
	}
	want := map[int][2]string{1: {"2001:db8::11/64", "2001:db8::1"}, 2: {"2001:db8::12/64", "2001:db8::1"},
		3: {"2001:db8:0:1::13/64", "2001:db8:0:1::1"}}
	for i := 1; i <= 3; i++ {
		ns := l.NodeNS(i)
		eth0, err := GetLink(ctx, ns, "eth0")
		if err != nil {
			t.Fatal(err)
		}
		if got := eth0.IPv6Addrs(); !slices.Equal(got, []string{want[i][0]}) || len(eth0.IPv4Addrs()) != 1 {
			t.Errorf("node %d eth0: IPv6 %v IPv4 %v, want %s beside one IPv4 address", i, got, eth0.IPv4Addrs(), want[i][0])
		}
		if l.NodeIPv6(i).String()+"/64" != want[i][0] {
			t.Errorf("NodeIPv6(%d) = %s", i, l.NodeIPv6(i))
		}
		if out, err := l.Exec(ns, "ip", "-6", "addr", "show", "tentative"); err != nil || strings.TrimSpace(out) != "" {
			t.Errorf("node %d: tentative addresses (DAD not skipped): %q %v", i, out, err)
		}
		routes, err := Routes6(ctx, ns)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(routes, func(r Route) bool {
			return r.Dst == "default" && r.Gateway == want[i][1] && r.Dev == "eth0"
		}) {
			t.Errorf("node %d: no IPv6 default route via %s dev eth0: %+v", i, want[i][1], routes)
		}
		for key, val := range map[string]string{"ipv6/conf/all/forwarding": "1", "ipv6/conf/eth0/accept_ra": "0", "ipv4/ip_forward": "1"} {
			if got, err := l.Exec(ns, "cat", "/proc/sys/net/"+key); err != nil || strings.TrimSpace(got) != val {
				t.Errorf("node %d: %s = %q (%v), want %s", i, key, got, err, val)
			}
		}
	}
	if l.NodeIPv6(4).IsValid() || !l.IPv6() {
		t.Errorf("NodeIPv6(4) = %s, IPv6() = %v", l.NodeIPv6(4), l.IPv6())
	}
	for _, to := range []netip.Addr{l.NodeIPv6(2), GatewayIPv6, l.NodeIPv6(3), l.NodeIP(3)} {
		if err := l.Ping(l.NodeNS(1), to); err != nil {
			t.Errorf("underlay ping n1 -> %s: %v", to, err)
		}
	}
	out, err := l.AddOutsideHost()
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Ping(out, l.NodeIPv6(2)); err != nil {
		t.Errorf("outside host -> node 2 over IPv6: %v", err)
	}
	// Nothing is reachable beyond the lab: the switch has no IPv6 route out either.
	if _, err := l.Exec(l.NodeNS(1), "ping", "-n", "-c", "1", "-W", "1", "2001:db8:ffff::77"); err == nil {
		t.Errorf("a packet to 2001:db8:ffff::77 got an answer: the lab is not closed")
	}
}

// TestDualStackPodsOverHandMadeVXLAN proves the pod helpers for both families, and for an
// IPv6-only subnet file, on a dual-stack overlay programmed by hand.
func TestDualStackPodsOverHandMadeVXLAN(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	l := newTestLab(t, "pods6", Options{Nodes: 2, NoEtcd: true, IPv6: true})
	devs := map[int][]handVXLAN{}
	for i := 1; i <= 2; i++ {
		devs[i] = []handVXLAN{
			{"flannel.1", fmt.Sprintf("02:00:00:00:0%d:0%d", i, i), l.NodeIP(i), 1450, netip.MustParsePrefix(fmt.Sprintf("10.5.%d.0/24", i))},
			{"flannel-v6.1", fmt.Sprintf("02:00:00:00:6%d:0%d", i, i), l.NodeIPv6(i), 1430, netip.MustParsePrefix(fmt.Sprintf("2001:db8:1000:%d::/64", i))},
		}
	}
	for i := 1; i <= 2; i++ {
		text := fmt.Sprintf("FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.%d.1/24\n"+
			"FLANNEL_IPV6_NETWORK=2001:db8:1000::/56\nFLANNEL_IPV6_SUBNET=2001:db8:1000:%d::1/64\n"+
			"FLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n", i, i)
		if err := os.WriteFile(l.SubnetEnvPath(i), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		for f := range devs[i] {
			devs[i][f].program(t, l.NodeNS(i), devs[3-i][f])
		}
	}
	pods := addPodTwice(t, l)
	want := Pod{Node: 1, Index: 0, NS: l.PodNS(1, 0), IP: netip.MustParseAddr("10.5.1.2"),
		Prefix: netip.MustParsePrefix("10.5.1.2/24"), Gateway: netip.MustParseAddr("10.5.1.1"),
		IPv6: netip.MustParseAddr("2001:db8:1000:1::2"), IPv6Prefix: netip.MustParsePrefix("2001:db8:1000:1::2/64"),
		IPv6Gateway: netip.MustParseAddr("2001:db8:1000:1::1"), MTU: 1430}
	if pods[0] != want {
		t.Errorf("pod 0 on node 1:\n%+v\nwant\n%+v", pods[0], want)
	}
	if got := pods[1].Addrs(); len(got) != 2 || got[0] != pods[1].IP || got[1] != pods[1].IPv6 {
		t.Errorf("Addrs() = %v", got)
	}
	cni0, err := GetLink(ctx, l.NodeNS(1), "cni0")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cni0.IPv4Addrs(), []string{"10.5.1.1/24"}) || !slices.Equal(cni0.IPv6Addrs(), []string{"2001:db8:1000:1::1/64"}) {
		t.Errorf("cni0 addresses: %v %v", cni0.IPv4Addrs(), cni0.IPv6Addrs())
	}
	if out, err := l.Exec(pods[0].NS, "ip", "-6", "addr", "show", "tentative"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("pod: tentative addresses: %q %v", out, err)
	}
	for _, p := range pods {
		routes, err := Routes6(ctx, p.NS)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(routes, func(r Route) bool {
			return r.Dst == "default" && r.Gateway == p.IPv6Gateway.String() && r.Dev == "eth0"
		}) {
			t.Errorf("pod on node %d: no IPv6 default route via cni0: %+v", p.Node, routes)
		}
	}
	for _, dst := range pods[1].Addrs() {
		if err := l.Ping(pods[0].NS, dst); err != nil {
			t.Errorf("pod ping 1 -> %s over vxlan: %v", dst, err)
		}
	}
	for _, dst := range pods[0].Addrs() {
		if err := l.Ping(pods[1].NS, dst); err != nil {
			t.Errorf("pod ping 2 -> %s over vxlan: %v", dst, err)
		}
	}
	neighs, err := Neighs6(ctx, l.NodeNS(1))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(neighs, func(n Neigh) bool {
		return n.Dst == "2001:db8:1000:2::" && n.Dev == "flannel-v6.1" && n.LLAddr == devs[2][1].mac && slices.Contains(n.State, "PERMANENT")
	}) {
		t.Errorf("IPv6 neighbour entry not seen: %+v", neighs)
	}
	routes, err := Routes6(ctx, l.NodeNS(1))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(routes, func(r Route) bool {
		return r.Dst == "2001:db8:1000:2::/64" && r.Gateway == "2001:db8:1000:2::" && r.Dev == "flannel-v6.1" && r.HasFlag("onlink")
	}) {
		t.Errorf("IPv6 route to 2001:db8:1000:2::/64 not seen: %+v", routes)
	}
	if vx6, err := GetLink(ctx, l.NodeNS(1), "flannel-v6.1"); err != nil || vx6.VXLAN == nil || vx6.VXLAN.Local != "2001:db8::11" {
		t.Errorf("flannel-v6.1 details: %+v, %v", vx6, err)
	}
	if d := Describe(ctx, l.NodeNS(1)); !strings.Contains(d, "2001:db8:1000:2::/64 via 2001:db8:1000:2:: dev flannel-v6.1") || strings.Contains(d, "fe80::/64") {
		t.Errorf("Describe lacks the IPv6 route or shows link-local ones:\n%s", d)
	}

	// An IPv6-only subnet file: cni0 loses its IPv4 address, the pod has only IPv6.
	if err := os.WriteFile(l.SubnetEnvPath(1), []byte("FLANNEL_IPV6_NETWORK=2001:db8:1000::/56\nFLANNEL_IPV6_SUBNET=2001:db8:1000:1::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := l.AddPod(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if p.IP.IsValid() || p.Gateway.IsValid() || p.IPv6 != want.IPv6 || len(p.Addrs()) != 1 {
		t.Errorf("IPv6-only pod: %+v", p)
	}
	cni0, err = GetLink(ctx, l.NodeNS(1), "cni0")
	if err != nil {
		t.Fatal(err)
	}
	if len(cni0.IPv4Addrs()) != 0 || !slices.Equal(cni0.IPv6Addrs(), []string{"2001:db8:1000:1::1/64"}) {
		t.Errorf("cni0 after the IPv6-only file: %v %v", cni0.IPv4Addrs(), cni0.IPv6Addrs())
	}
	if err := l.Ping(p.NS, pods[1].IPv6); err != nil {
		t.Errorf("IPv6-only pod -> pod on node 2: %v", err)
	}
	if _, err := l.Exec(p.NS, "ping", "-n", "-c", "1", "-W", "1", pods[1].IP.String()); err == nil {
		t.Errorf("IPv6-only pod reached an IPv4 address")
	}

	// Files AddPod must refuse.
	for _, text := range []string{
		"FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_MTU=1450\n",
		"FLANNEL_IPV6_SUBNET=10.5.1.1/24\nFLANNEL_MTU=1450\n",
		"FLANNEL_SUBNET=2001:db8:1000:1::1/64\nFLANNEL_MTU=1450\n",
		"FLANNEL_IPV6_SUBNET=2001:db8:1000:1::1/64\nFLANNEL_MTU=1200\n",
	} {
		if err := os.WriteFile(l.SubnetEnvPath(1), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := l.AddPod(1, 1); err == nil {
			t.Errorf("AddPod accepted the subnet file\n%s", text)
		}
	}
}

// handVXLAN is one vxlan device of a node as flanneld's backend programs it, made by hand.
type handVXLAN struct {
	dev   string
	mac   string
	local netip.Addr // the node's underlay address
	mtu   int
	own   netip.Prefix // the node's subnet
}

// program makes the device in ns, up, with the subnet's network address as its only
// address, and per peer the neighbour, FDB and onlink route entries.
func (v handVXLAN) program(t *testing.T, ns string, peers ...handVXLAN) {
	t.Helper()
	ctx := context.Background()
	cmds := [][]string{
		{"ip", "-n", ns, "link", "add", v.dev, "address", v.mac, "type", "vxlan", "id", "1", "local", v.local.String(),
			"dev", "eth0", "dstport", "8472", "nolearning"},
		{"ip", "-n", ns, "link", "set", v.dev, "mtu", strconv.Itoa(v.mtu), "up"},
		{"ip", "-n", ns, "addr", "add", netip.PrefixFrom(v.own.Addr(), v.own.Addr().BitLen()).String(), "dev", v.dev},
	}
	for _, p := range peers {
		gw := p.own.Addr().String()
		cmds = append(cmds,
			[]string{"ip", "-n", ns, "neigh", "replace", gw, "lladdr", p.mac, "dev", v.dev, "nud", "permanent"},
			[]string{"bridge", "-n", ns, "fdb", "replace", p.mac, "dev", v.dev, "dst", p.local.String(), "self", "permanent"},
			[]string{"ip", "-n", ns, "route", "replace", p.own.String(), "via", gw, "dev", v.dev, "onlink"})
	}
	for _, c := range cmds {
		if _, err := run(ctx, c[0], c[1:]...); err != nil {
			t.Fatal(err)
		}
	}
}

// addPodTwice adds pod 0 on each node twice (the second call must converge to the same
// pod) and returns the pods.
func addPodTwice(t *testing.T, l *Lab) []Pod {
	t.Helper()
	var pods []Pod
	for i := 1; i <= l.Nodes(); i++ {
		if _, err := l.AddPod(i, 0); err != nil {
			t.Fatal(err)
		}
		p, err := l.AddPod(i, 0)
		if err != nil {
			t.Fatalf("second AddPod: %v", err)
		}
		pods = append(pods, p)
	}
	return pods
}
