package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/flannel-go/flannel/diagnose"
	"github.com/flannel-go/flannel/e2e/lab"
)

// wgDiagnoseNode runs flanneld diagnose on node i as its daemon runs: in its network
// namespace with its /run/wireguard, where the UAPI sockets of its userspace devices are;
// args and env are the datastore's flags and environment beyond the lab's (Kubernetes mode).
func wgDiagnoseNode(t *testing.T, l *lab.Lab, i int, cniDir string, args []string, env ...string) diagnosis {
	t.Helper()
	var argv []string
	for _, a := range l.FlanneldCommand(i, args...) {
		if strings.HasPrefix(a, "-v=") {
			continue
		}
		argv = append(argv, a)
		if a == flanneld.bin {
			argv = append(argv, "diagnose")
		}
	}
	return runDiagnoseArgv(t, append(argv, "--peers=all", "--cni-conf-dir="+cniDir), env...)
}

// wgWantHealthy polls diagnose (run on node i) until it exits 0 with no check failed.
func wgWantHealthy(t *testing.T, i int, run func(i int) diagnosis) diagnosis {
	t.Helper()
	var d diagnosis
	deadline := time.Now().Add(convergeTimeout)
	for {
		d = run(i)
		if d.code == 0 && len(d.failed()) == 0 {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %d: diagnose does not pass on the healthy wireguard cluster after %v:\n%s", i, convergeTimeout, d.text())
		}
		time.Sleep(2 * time.Second)
	}
}

// wgChecksPass fails the test unless d passed every check a wireguard node must pass.
func wgChecksPass(t *testing.T, i int, d diagnosis) {
	t.Helper()
	for _, c := range []string{diagnose.CheckWGImpl, diagnose.CheckWGHandshakes, diagnose.CheckDevice, diagnose.CheckPeerObjects, diagnose.CheckPeerOverlay} {
		if r := d.check(c); r.Outcome != diagnose.Passed {
			t.Errorf("node %d: %s is %s: %s", i, c, r.Outcome, r.Evidence)
		}
	}
	if ev := d.check(diagnose.CheckWGImpl).Evidence; !strings.Contains(ev, "userspace WireGuard") {
		t.Errorf("node %d: %s evidence %q does not say userspace", i, diagnose.CheckWGImpl, ev)
	}
}

// wgState is node i's WireGuard configuration as wg(8) dumps it, without the columns
// that change with traffic (latest handshake, transfer counters), the lines sorted (the
// userspace device lists its peers in no fixed order).
func wgState(t *testing.T, l *lab.Lab, i int) string {
	t.Helper()
	var lines []string
	for _, dev := range []string{"flannel-wg", "flannel-wg-v6"} {
		out, err := l.WG(i, "show", dev, "dump")
		if err != nil {
			t.Fatalf("node %d: wg show %s: %v", i, dev, err)
		}
		for n, line := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Split(line, "\t")
			if n > 0 && len(f) >= 8 {
				f = append(f[:4], f[7:]...) // peer: drop latest-handshake, rx, tx
			}
			lines = append(lines, dev+" "+strings.Join(f, " "))
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n") + "\n"
}

// ownLeaseKey is node i's key below <prefix>/subnets/.
func ownLeaseKey(t *testing.T, l *lab.Lab, i int) (key, value string, lease clientv3.LeaseID) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := l.Etcd().Get(ctx, l.EtcdPrefix()+"/subnets/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if strings.Contains(string(kv.Value), fmt.Sprintf(`"PublicIP":"%s"`, l.NodeIP(i))) {
			return string(kv.Key), string(kv.Value), clientv3.LeaseID(kv.Lease)
		}
	}
	t.Fatalf("no lease of node %d", i)
	return "", "", 0
}

// diagnose on a wireguard cluster (userspace: the lab's kernel has no module): every node
// passes, and a run changes nothing (kernel, WireGuard devices, etcd, key files); a peer
// whose lease advertises a key its node does not hold fails the handshake check on the
// other nodes, naming the peer and the key; restoring the lease makes them pass again. An
// address and a route another program keeps putting on flannel-wg are named stale, and the
// daemon removes them once it stops. With the daemon stopped and its key file gone,
// diagnose names what is missing (the blackholes stay) and does not make a key.
func TestDiagnoseWireguard(t *testing.T) {
	needWG(t)
	l := newLab(t, "diagwg", 3, withWireguard)
	startAll(t, l, wgDualConfig)
	waitWGMesh(t, l, wgNodes(t, l))
	addPods(t, l)
	cni := cniConfDir(t)
	diag := func(i int) diagnosis { return wgDiagnoseNode(t, l, i, cni, nil) }
	for i := 1; i <= 3; i++ {
		d := wgWantHealthy(t, i, diag)
		wgChecksPass(t, i, d)
		if i == 1 {
			t.Logf("node 1 healthy:\n%s", d.text())
		}
	}

	// Reads only.
	keyStat := func(i int) string {
		fi, err := os.Stat(filepath.Join(l.NodeDir(i), "wgkey"))
		if err != nil {
			return err.Error()
		}
		return fmt.Sprintf("%v %v %d", fi.ModTime(), fi.Mode(), fi.Size())
	}
	var before []string
	for i := 1; i <= 3; i++ {
		before = append(before, kernelState(t, l, i)+wgState(t, l, i)+keyStat(i))
	}
	rev := etcdRevision(t, l)
	for i := 1; i <= 3; i++ {
		diag(i)
	}
	for i := 1; i <= 3; i++ {
		if after := kernelState(t, l, i) + wgState(t, l, i) + keyStat(i); after != before[i-1] {
			t.Errorf("node %d's state changed under diagnose:\n%s", i, lineDiff(before[i-1], after))
		}
	}
	if after := etcdRevision(t, l); after != rev {
		t.Errorf("the etcd revision moved from %d to %d under diagnose", rev, after)
	}

	// Node 3's lease advertises a key node 3 does not hold: nodes 1 and 2 program it, and
	// no handshake with node 3 completes. The daemon of node 3 only renews its lease (in
	// hours), so the fault stays until repaired.
	key, value, leaseID := ownLeaseKey(t, l, 3)
	wrong, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	n3 := wgNodes(t, l)[2]
	bad := strings.ReplaceAll(value, n3.pub, wrong.PublicKey().String())
	put := func(v string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := l.Etcd().Put(ctx, key, v, clientv3.WithLease(leaseID)); err != nil {
			t.Fatal(err)
		}
	}
	put(bad)
	waitFor(t, convergeTimeout, "node 1 programs the wrong key", func() (bool, string) {
		peers, err := wgPeers(l, 1, "flannel-wg")
		if err != nil {
			return false, err.Error()
		}
		_, ok := peers[wrong.PublicKey().String()]
		return ok, fmt.Sprintf("%v", peers)
	})
	d := diag(1)
	wantFault(t, d, diagnose.CheckWGHandshakes, "no handshake with key "+wrong.PublicKey().String(), l.NodeIP(3).String())
	if c := d.check(diagnose.CheckWGHandshakes); !strings.Contains(c.Fix, "private key matches the public key its lease advertises") {
		t.Errorf("%s fix %q does not name the key", diagnose.CheckWGHandshakes, c.Fix)
	}
	if c := d.check(diagnose.CheckPeerOverlay); c.Outcome != diagnose.Failed || !slices.Contains(c.Objects, l.NodeIP(3).String()+" udp/51820") {
		t.Errorf("%s is %s %q %q, want failed naming node 3", diagnose.CheckPeerOverlay, c.Outcome, c.Evidence, c.Objects)
	}
	if slices.ContainsFunc(d.failed(), func(n string) bool {
		return n != diagnose.CheckWGHandshakes && n != diagnose.CheckPeerOverlay
	}) {
		t.Errorf("more checks failed than the handshakes and the overlay: %v\n%s", d.failed(), d.text())
	}
	// Node 3 itself holds a key its lease does not advertise.
	wantFault(t, diag(3), diagnose.CheckDevice, "want the lease's "+wrong.PublicKey().String(), "")

	put(value)
	for i := 1; i <= 3; i++ {
		wgWantHealthy(t, i, diag)
	}

	// Another program keeps adding an address in the network to node 1's flannel-wg and a
	// route through it (in a /24 no node holds); the daemon removes them, then backs off:
	// diagnose names both stale.
	nodes := wgNodes(t, l)
	third := 200
	for slices.ContainsFunc(nodes, func(n wgNode) bool { return n.subnet.Addr().As4()[2] == byte(third) }) {
		third++
	}
	strayAddr, strayRoute := fmt.Sprintf("10.5.%d.1/32", third), fmt.Sprintf("10.5.%d.0/24", third)
	stop := keepAdding(t, l.NodeNS(1), [][]string{
		{"ip", "addr", "add", strayAddr, "dev", "flannel-wg"},
		{"ip", "route", "add", strayRoute, "dev", "flannel-wg"},
	})
	addrObj, routeObj := "address "+strayAddr+" dev flannel-wg", "route "+strayRoute+" dev flannel-wg"
	waitFor(t, convergeTimeout, "diagnose names the stray address and route", func() (bool, string) {
		d = diag(1)
		return slices.Contains(d.check(diagnose.CheckDevice).Objects, addrObj) &&
			slices.Contains(d.check(diagnose.CheckPeerObjects).Objects, routeObj), d.text()
	})
	wantFault(t, d, diagnose.CheckDevice, "stale: "+addrObj, addrObj)
	wantFault(t, d, diagnose.CheckPeerObjects, "stale (no admitted lease explains them): "+routeObj, routeObj)
	for _, c := range []string{diagnose.CheckDevice, diagnose.CheckPeerObjects} {
		if fix := d.check(c).Fix; !strings.Contains(fix, "another program that keeps changing them") {
			t.Errorf("%s fix %q does not name the other program", c, fix)
		}
	}
	stop()
	waitFor(t, convergeTimeout, "the daemon removes the stray address and route", func() (bool, string) {
		addrs, _ := l.Exec(l.NodeNS(1), "ip", "addr", "show", "dev", "flannel-wg")
		routes, _ := l.Exec(l.NodeNS(1), "ip", "route", "show", "dev", "flannel-wg")
		return !strings.Contains(addrs, strayAddr) && !strings.Contains(routes, strayRoute), addrs + routes
	})
	wgWantHealthy(t, 1, diag)

	// Without the daemon and its key file, diagnose reports and makes no key.
	if err := l.StopFlanneld(2); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(l.NodeDir(2), "wgkey")
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	d = diag(2)
	if _, err := os.Stat(keyFile); !os.IsNotExist(err) {
		t.Errorf("diagnose made a key file: %v", err)
	}
	if d.code != 1 || d.check(diagnose.CheckDevice).Outcome != diagnose.Failed {
		t.Errorf("node 2 without its daemon: exit %d, device %s:\n%s", d.code, d.check(diagnose.CheckDevice).Outcome, d.text())
	}
	n2 := nodes[1]
	for c, obj := range map[string]string{
		diagnose.CheckDevice:      "address " + netip.PrefixFrom(n2.subnet.Addr(), 32).String() + " dev flannel-wg",
		diagnose.CheckPeerObjects: "route " + lab.PodNetwork.String() + " dev flannel-wg",
	} {
		if !slices.Contains(d.check(c).Objects, obj) {
			t.Errorf("node 2 without its daemon: %s does not name %q missing: %q", c, obj, d.check(c).Objects)
		}
	}
	if strings.Contains(d.text(), "blackhole") {
		t.Errorf("node 2 without its daemon: the blackholes, which stay, are named:\n%s", d.text())
	}
}

// keepAdding runs cmds in namespace ns every 100 ms, as a program that keeps changing
// what the daemon owns would, until the returned stop is called (or the test ends).
func keepAdding(t *testing.T, ns string, cmds [][]string) (stop func()) {
	t.Helper()
	var script strings.Builder
	script.WriteString("while :; do\n")
	for _, c := range cmds {
		script.WriteString("  " + strings.Join(c, " ") + " 2>/dev/null\n")
	}
	script.WriteString("  sleep 0.1\ndone\n")
	cmd := exec.Command("ip", "netns", "exec", ns, "sh", "-c", script.String())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			_ = cmd.Wait()
		})
	}
	t.Cleanup(stop)
	return stop
}
