package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flannel-go/flannel/e2e/lab"
)

// waitLogSince waits until node i's flanneld log, from byte off on, has a line that
// starts with prefix ("W", "E", "I" or "") and contains s; it returns that line.
func waitLogSince(t *testing.T, l *lab.Lab, i int, off int64, prefix, s string) string {
	t.Helper()
	var found string
	waitFor(t, convergeTimeout, fmt.Sprintf("node %d log line %q", i, s), func() (bool, string) {
		for _, line := range strings.Split(logSince(t, l, i, off), "\n") {
			if strings.HasPrefix(line, prefix) && strings.Contains(line, s) {
				found = line
				return true, ""
			}
		}
		return false, "not yet; tail:\n" + l.LogTail(i, 5)
	})
	return found
}

// ownChanges is what a kernel watch saw flanneld change: its disruptions and writes,
// without the link-local address the kernel itself adds to a new device.
func ownChanges(w *kernelWatch) []string {
	d, wr := w.result()
	out := d
	for _, s := range wr {
		if !strings.Contains(s, " address fe80:") {
			out = append(out, s)
		}
	}
	return out
}

// stillRunning fails the test unless node i's flanneld runs for d more.
func stillRunning(t *testing.T, l *lab.Lab, i int, d time.Duration, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !l.FlanneldRunning(i) {
			t.Fatalf("%s: node %d's flanneld exited, want it to keep retrying:\n%s", what, i, l.LogTail(i, 20))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// A typo written to etcd and a daemon restarted on it. The daemon stays up,
// says every problem (the backend type, then a backend option and an unknown key), is
// not ready, and changes nothing in the kernel: pods keep pinging through the data path
// already in place. Once the config is fixed it starts, adopting that data path.
func TestBadConfigKeepsTheDataPath(t *testing.T) {
	l := newLab(t, "badcfg", 3)
	startAll(t, l, vxlanConfig, restartArgs...)
	for i := 1; i <= 3; i++ {
		waitReadyz(t, l, i, "", 200)
	}
	pods := addPods(t, l)
	pingMesh(t, l, pods)

	before, err := lab.GetLink(context.Background(), l.NodeNS(2), "flannel.1")
	if err != nil {
		t.Fatal(err)
	}
	watches := []*kernelWatch{watchKernel(t, l.NodeNS(2), "flannel.1", labNetwork), watchKernel(t, l.NodeNS(1), "flannel.1", labNetwork)}
	ping := startPing(t, pods[0].NS, pods[1].IP)

	if err := l.StopFlanneld(2); err != nil {
		t.Fatal(err)
	}
	if err := l.PutConfig(context.Background(), `{"Network":"10.5.0.0/16","Backend":{"Type":"vxaln"}}`); err != nil {
		t.Fatal(err)
	}
	off := logSize(t, l, 2)
	if err := l.StartFlanneld(2, restartArgs...); err != nil {
		t.Fatal(err)
	}
	waitLogSince(t, l, 2, off, "E", `"Cannot use the network config; retrying until it is fixed" err="unknown backend type: vxaln (did you mean vxlan? this build has: host-gw, udp, vxlan, wireguard)"`)
	waitReadyz(t, l, 2, "", 503, "network-config: unknown backend type: vxaln")
	stillRunning(t, l, 2, 3*time.Second, "backend type typo")
	if err := l.Ping(pods[0].NS, pods[1].IP); err != nil {
		t.Errorf("pod 1 -> pod 2 while node 2 waits for a usable config: %v", err)
	}

	// Another config, still unusable: a bad backend option and an unknown key, said
	// without a restart (the daemon reads the config again every second).
	off = logSize(t, l, 2)
	if err := l.PutConfig(context.Background(), `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","ChecksumOffload":"yes","VIN":1}}`); err != nil {
		t.Fatal(err)
	}
	waitLogSince(t, l, 2, off, "E", `err="vxlan: ChecksumOffload must be \"auto\", \"on\" or \"off\", not \"yes\""`)
	waitLogSince(t, l, 2, off, "W", `"Unknown key in the network config; ignored" key="Backend.VIN" didYouMean="VNI"`)
	waitReadyz(t, l, 2, "", 503, `network-config: vxlan: ChecksumOffload must be "auto", "on" or "off", not "yes"`)
	stillRunning(t, l, 2, 3*time.Second, "bad ChecksumOffload")
	for _, w := range watches {
		if c := ownChanges(w); len(c) > 0 {
			t.Errorf("%s: the kernel changed while the config was unusable: %q", w.ns, c)
		}
	}
	sent, lost := stopPing(t, ping)
	t.Logf("%d of %d pings at 10 ms lost while node 2 waited for a usable config", lost, sent)
	if lost > maxRestartLoss {
		t.Errorf("%d of %d pings lost (bound %d, target 0)", lost, sent, maxRestartLoss)
	}

	// Fixed: node 2 starts, adopting its device as it is.
	if err := l.PutConfig(context.Background(), vxlanConfig); err != nil {
		t.Fatal(err)
	}
	if _, err := l.WaitSubnetEnv(2, startTimeout); err != nil {
		t.Fatal(err)
	}
	waitReadyz(t, l, 2, "", 200)
	after, err := lab.GetLink(context.Background(), l.NodeNS(2), "flannel.1")
	if err != nil {
		t.Fatal(err)
	}
	if after.Ifindex != before.Ifindex || after.Address != before.Address || after.MTU != before.MTU {
		t.Errorf("flannel.1 changed: index %d->%d mac %s->%s mtu %d->%d",
			before.Ifindex, after.Ifindex, before.Address, after.Address, before.MTU, after.MTU)
	}
	pingMesh(t, l, pods)
}

// The config rewritten from vxlan to host-gw in etcd while the daemons run.
// Each daemon says, in one warning, what changed and that a restart applies it, and
// nothing else changes. Restarting the nodes one by one then shows the switch: each
// side warns about the peer on the other backend and counts it, the restarted node says
// that FLANNEL_MTU changed, and once both run host-gw the pods talk again.
func TestLiveConfigChangeIsSaid(t *testing.T) {
	l := newLab(t, "livecfg", 2)
	startAll(t, l, vxlanConfig, restartArgs...)
	for i := 1; i <= 2; i++ {
		waitReadyz(t, l, i, "", 200)
	}
	pods := addPods(t, l)
	pingMesh(t, l, pods)
	watches := []*kernelWatch{watchKernel(t, l.NodeNS(1), "flannel.1", labNetwork), watchKernel(t, l.NodeNS(2), "flannel.1", labNetwork)}
	offs := []int64{logSize(t, l, 1), logSize(t, l, 2)}

	if err := l.PutConfig(context.Background(), hostgwConfig); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		waitLogSince(t, l, i, offs[i-1], "W", `"The network config changed; restart flanneld to apply it (the running config stays until then)" changes=["Backend.Type: vxlan -> host-gw"]`)
	}
	time.Sleep(3 * time.Second) // several reconcile and config rounds
	for _, w := range watches {
		if c := ownChanges(w); len(c) > 0 {
			t.Errorf("%s: the kernel changed after the config did: %q", w.ns, c)
		}
	}
	for i := 1; i <= 2; i++ {
		if env, _ := l.SubnetEnv(i); env["FLANNEL_MTU"] != "1450" {
			t.Errorf("node %d: FLANNEL_MTU %q before any restart, want 1450", i, env["FLANNEL_MTU"])
		}
		if n := strings.Count(logSince(t, l, i, offs[i-1]), "The network config changed"); n != 1 {
			t.Errorf("node %d said the change %d times, want once", i, n)
		}
	}
	pingMesh(t, l, pods)

	// Node 2 restarts on host-gw, node 1 still runs vxlan: each skips the other.
	off2 := logSize(t, l, 2)
	if err := l.StopFlanneld(2); err != nil {
		t.Fatal(err)
	}
	if err := l.StartFlanneld(2, restartArgs...); err != nil {
		t.Fatal(err)
	}
	if env, err := l.WaitSubnetEnv(2, startTimeout); err != nil {
		t.Fatal(err)
	} else if env["FLANNEL_MTU"] != "1500" {
		t.Errorf("node 2 on host-gw: FLANNEL_MTU %q, want 1500", env["FLANNEL_MTU"])
	}
	waitLogSince(t, l, 2, off2, "W", `"FLANNEL_MTU changed: pods and the bridge keep the old MTU until they are recreated" old=1450 new=1500`)
	waitLogSince(t, l, 2, off2, "W", `"Skipping peer lease: the peer runs another backend; pods on the two nodes cannot reach each other until both run the same (a node applies the network config's backend when it restarts)"`)
	waitLogSince(t, l, 1, offs[0], "W", `reason="backend type \"host-gw\" is not vxlan"`)
	waitMetric(t, l, 1, `flannel_peer_leases_skipped{reason="other_backend"}`, "== 1", func(v float64) bool { return v == 1 })
	waitMetric(t, l, 2, `flannel_peer_leases_skipped{reason="other_backend"}`, "== 1", func(v float64) bool { return v == 1 })
	time.Sleep(2 * time.Second) // more rounds: the warning is not repeated
	if n := strings.Count(logSince(t, l, 1, offs[0]), "Skipping peer lease: the peer runs another backend"); n != 1 {
		t.Errorf("node 1 warned %d times about node 2's backend, want once", n)
	}

	// Node 1 follows: both run host-gw, the pods talk again, nothing is skipped.
	if err := l.StopFlanneld(1); err != nil {
		t.Fatal(err)
	}
	if err := l.StartFlanneld(1, restartArgs...); err != nil {
		t.Fatal(err)
	}
	if _, err := l.WaitSubnetEnv(1, startTimeout); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		waitMetric(t, l, i, `flannel_peer_leases_skipped{reason="other_backend"}`, "== 0", func(v float64) bool { return v == 0 })
		if _, err := lab.GetLink(context.Background(), l.NodeNS(i), "flannel.1"); err == nil {
			t.Errorf("node %d: flannel.1 left behind after the switch to host-gw", i)
		}
	}
	pingMesh(t, l, pods)
}
