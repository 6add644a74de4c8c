package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/flannel-go/flannel/pkg/control"
	"github.com/flannel-go/flannel/pkg/instancelock"
)

// runFlanneldOnce runs a flanneld command line (Lab.FlanneldCommand), with env added to
// the environment, until it exits or timeout passes; it returns the exit status (-1:
// still running at the timeout, then killed) and the output.
func runFlanneldOnce(t *testing.T, argv []string, timeout time.Duration, env ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return -1, string(out)
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("%v: %v", argv, err)
	}
	if ee != nil {
		return ee.ExitCode(), string(out)
	}
	return 0, string(out)
}

// The control socket answers root with what the daemon is and sees, refuses anyone
// else, and cannot be impersonated: a process that is not root holding its name first
// is named by the daemon (which refuses to start) and not trusted by the client. The
// name of a killed daemon is free at once.
func TestControlSocket(t *testing.T) {
	l := newLab(t, "ctl", 2)
	startAll(t, l, vxlanConfig, fmt.Sprintf("--healthz-port=%d", healthzPort))
	nodes := infos(t, l, "flannel.1")
	waitFullMesh(t, l, "flannel.1", nodes)
	waitReadyz(t, l, 1, "", 200)
	ns, key := l.NodeNS(1), etcdPrefixKey(l.EtcdPrefix())

	st, errText := queryControl(t, ns, key, false)
	if st == nil {
		t.Fatalf("status: %s", errText)
	}
	in := st.Instance
	if in.PID != l.FlanneldPID(1) || in.Phase != control.PhaseRunning || in.Datastore != "etcd" || in.BackendType != "vxlan" ||
		in.Network != labNetwork || in.Socket != instancelock.Name(key) || in.SubnetFile != l.SubnetEnvPath(1) ||
		len(in.Locks) != 2 || in.Locks[0] != key || strings.Join(in.Devices, ",") != "flannel.1" {
		t.Errorf("instance: %+v", in)
	}
	if st.Lease == nil || st.Lease.Subnet != nodes[0].subnet || st.Lease.PublicIP != l.NodeIP(1) {
		t.Errorf("lease %+v, want %s from %s", st.Lease, nodes[0].subnet, l.NodeIP(1))
	}
	if !st.Peers.Synced || len(st.Peers.Admitted) != 1 || st.Peers.Admitted[0].Subnet != nodes[1].subnet ||
		st.Peers.Admitted[0].PublicIP != l.NodeIP(2) || st.Peers.Rejected == nil {
		t.Errorf("peers: %+v", st.Peers)
	}
	if !st.Readiness.Ready || len(st.Readiness.Checks) < 4 {
		t.Errorf("readiness: %+v", st.Readiness)
	}
	if !strings.Contains(string(st.Config.Options), `"EtcdEndpoints":["http://192.0.2.254:2379"]`) ||
		!strings.Contains(string(st.Config.Network), `"Network":"10.5.0.0/16"`) {
		t.Errorf("config: %s %s", st.Config.Options, st.Config.Network)
	}

	// A client that is not root learns nothing.
	if st, errText := queryControl(t, ns, key, true); st != nil || !strings.Contains(errText, "permission denied") {
		t.Errorf("a client running as nobody: %+v %q", st, errText)
	}
	// The subnet file's lock is a lock only: no second control socket.
	if st, errText := queryControl(t, ns, "subnet-file:"+l.SubnetEnvPath(1), false); st != nil || !strings.Contains(errText, "no response") {
		t.Errorf("the subnet file's lock answered: %+v %q", st, errText)
	}

	// A squatter that is not root takes the name while the daemon is down.
	if err := l.StopFlanneld(1); err != nil {
		t.Fatal(err)
	}
	if st, errText := queryControl(t, ns, key, false); st != nil || !strings.Contains(errText, control.ErrNotRunning.Error()) {
		t.Errorf("no daemon: %+v %q", st, errText)
	}
	squat := helperCmd(ns, helperSquat, key, true)
	out, err := squat.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := squat.Start(); err != nil {
		t.Fatal(err)
	}
	squatDone := make(chan struct{})
	go func() { _ = squat.Wait(); close(squatDone) }()
	t.Cleanup(func() { _ = squat.Process.Kill(); <-squatDone })
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || strings.TrimSpace(line) != "held" {
		t.Fatalf("squatter: %q %v", line, err)
	}
	code, output := runFlanneldOnce(t, l.FlanneldCommand(1), 60*time.Second)
	pid := squat.Process.Pid // ip netns exec runs the helper in place
	if code != 1 || !strings.Contains(output, "Refusing to start: a process that is not a flanneld holds") ||
		!strings.Contains(output, fmt.Sprintf("pid %d", pid)) || !strings.Contains(output, "uid 65534") {
		t.Errorf("flanneld beside a squatter (pid %d): exit %d\n%s", pid, code, output)
	}
	t.Logf("flanneld beside a squatter: exit %d\n%s", code, output)
	if strings.Contains(output, "another flanneld") {
		t.Errorf("a squatter reported as a second instance:\n%s", output)
	}
	// The client does not trust it, even though it answers like a daemon would.
	st, errText = queryControl(t, ns, key, false)
	if st != nil || !strings.Contains(errText, control.ErrNotRoot.Error()) || !strings.Contains(errText, fmt.Sprintf("pid %d, uid 65534", pid)) {
		t.Errorf("a squatted socket: %+v %q", st, errText)
	}
	t.Logf("client of a squatted socket: %s", errText)
	_ = squat.Process.Kill()
	<-squatDone

	// Gone with the squatter; and a daemon killed with SIGKILL leaves its name free.
	if err := l.StartFlanneld(1, fmt.Sprintf("--healthz-port=%d", healthzPort)); err != nil {
		t.Fatal(err)
	}
	waitReadyz(t, l, 1, "", 200)
	if err := l.KillFlanneld(1); err != nil {
		t.Fatal(err)
	}
	if err := l.StartFlanneld(1, fmt.Sprintf("--healthz-port=%d", healthzPort)); err != nil {
		t.Fatal(err)
	}
	waitReadyz(t, l, 1, "", 200)
	st, errText = queryControl(t, ns, key, false)
	if st == nil || st.Instance.PID != l.FlanneldPID(1) || st.Lease == nil || st.Lease.Subnet != nodes[0].subnet {
		t.Errorf("after kill -9 and restart: %+v %q (pid %d)", st, errText, l.FlanneldPID(1))
	}
	if st != nil && st.Lease != nil && st.Lease.PublicIP != netip.Addr(l.NodeIP(1)) {
		t.Errorf("lease public IP %s", st.Lease.PublicIP)
	}
}
