package e2e

import (
	"context"
	"os"
	"strings"
	"testing"
)

// The start-up log says what holds on the node and nothing else: the options with
// durations in Go's notation; on an IPv4-only node no IPv6 placeholder; no clean-up of
// nftables rules that never existed; a warning, with what to do, when the node does not
// forward packets (which flanneld leaves as it is). A --iface that matches nothing ends
// the daemon with the node's interfaces and their addresses listed. A FLANNELD_ variable
// that fills no flag is warned about, with the one it probably misspells.
func TestStartLog(t *testing.T) {
	l := newLab(t, "startlog", 2)
	if _, err := l.Exec(l.NodeNS(1), "sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward"); err != nil {
		t.Fatal(err)
	}
	if err := l.PutConfig(context.Background(), vxlanConfig); err != nil {
		t.Fatal(err)
	}
	if err := l.StartFlanneld(1); err != nil {
		t.Fatal(err)
	}
	// Node 2 has a misspelt FLANNELD_ variable.
	if err := l.StartFlanneldEnv(2, []string{"FLANNELD_IP_MAQS=true"}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		if _, err := l.WaitSubnetEnv(i, startTimeout); err != nil {
			t.Fatal(err)
		}
	}
	waitLog(t, l, 2, `"Ignoring an environment variable that fills no flag" variable="FLANNELD_IP_MAQS" didYouMean="FLANNELD_IP_MASQ"`)
	if w := logLines(t, l, 1, "Ignoring an environment variable"); len(w) != 0 {
		t.Errorf("node 1 warns about its environment: %q", w)
	}
	const forwardOff = `"IP forwarding is off, so pods on this node cannot talk to pods on other nodes; flanneld does not change it: ` +
		`turn it on, and keep the setting in /etc/sysctl.d/" sysctl="net.ipv4.ip_forward" value=0 run="sysctl -w net.ipv4.ip_forward=1"`
	waitLog(t, l, 1, forwardOff)
	if fwd, err := l.Exec(l.NodeNS(1), "cat", "/proc/sys/net/ipv4/ip_forward"); err != nil || strings.TrimSpace(fwd) != "0" {
		t.Errorf("ip_forward on node 1 is %q (%v): flanneld must leave it as it is", fwd, err)
	}
	waitLog(t, l, 1, `"Running backend" type="vxlan" subnet="`)
	for i := 1; i <= 2; i++ {
		b, err := os.ReadFile(l.LogPath(i))
		if err != nil {
			t.Fatal(err)
		}
		log := string(b)
		start := logLines(t, l, i, `"Starting flanneld"`)
		if len(start) != 1 || !strings.Contains(start[0], `"SubnetLeaseRenewMargin":"1h0m0s"`) || !strings.Contains(start[0], `"IPTablesResync":"5s"`) {
			t.Errorf("node %d: start line %q: want durations as 1h0m0s and 5s", i, start)
		}
		for _, bad := range []string{"invalid", "Removed this instance's traffic rules", "ipv6Subnet"} {
			if strings.Contains(log, bad) {
				t.Errorf("node %d: the log says %q on an IPv4-only node with nothing to clean up:\n%s", i, bad, strings.Join(logLines(t, l, i, bad), "\n"))
			}
		}
		if w := logLines(t, l, i, "IP forwarding is off"); (i == 1) != (len(w) == 1) {
			t.Errorf("node %d: forwarding warnings %q", i, w)
		}
	}
	// With forwarding back on (by the operator), pods talk.
	if _, err := l.Exec(l.NodeNS(1), "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"); err != nil {
		t.Fatal(err)
	}
	pingMesh(t, l, addPods(t, l))

	// A --iface that matches nothing lists what there is.
	if err := l.StopFlanneld(2); err != nil {
		t.Fatal(err)
	}
	var argv []string
	for _, a := range l.FlanneldCommand(2, "--iface=eth9") {
		if a != "--iface=eth0" {
			argv = append(argv, a)
		}
	}
	code, out := runFlanneldOnce(t, argv, startTimeout)
	want := "Failed to find interface to use that matches the interfaces and/or regexes provided; the interfaces here are lo ("
	if code != 1 || !strings.Contains(out, want) || !strings.Contains(out, ", eth0 ("+l.NodeIP(2).String()) {
		t.Fatalf("flanneld with --iface=eth9: exit %d, want 1 and the interfaces listed:\n%s", code, out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, want) {
			t.Logf("node 2: %s", line)
		}
	}
}
