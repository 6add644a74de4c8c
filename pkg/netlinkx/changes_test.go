package netlinkx

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestChanges: a subscribed Conn skips the echo of its own writes and sees other
// processes' writes once each, in order; before Subscribe it reports a loss.
func TestChanges(t *testing.T) {
	ns, c, idx := connLab(t)
	if lost, err := c.Changes(func(*Change) {}); !lost || err != nil {
		t.Fatalf("unsubscribed Changes = %v, %v; want lost", lost, err)
	}
	if err := c.Subscribe(); err != nil {
		t.Fatal(err)
	}
	pid, err := c.PortID()
	if err != nil || pid == 0 {
		t.Fatalf("PortID = %d, %v", pid, err)
	}
	type seen struct {
		typ uint16
		own bool
		ip  string
	}
	collect := func() []seen {
		t.Helper()
		var out []seen
		lost, err := c.Changes(func(ch *Change) {
			if ch.Type != unix.RTM_NEWNEIGH && ch.Type != unix.RTM_DELNEIGH {
				return
			}
			var n Neigh
			if err := ParseNeigh(ch.Body, &n); err != nil {
				t.Errorf("parse: %v", err)
			}
			if n.Family == unix.AF_INET && n.State&unix.NUD_PERMANENT != 0 {
				out = append(out, seen{ch.Type, ch.Pid == pid, n.IP.String()})
			}
		})
		if lost || err != nil {
			t.Errorf("Changes: lost %v, err %v", lost, err)
		}
		return out
	}

	const n = 300 // more than one recvmmsg call
	var b Batch
	for i := range n {
		_, gw, mac, _ := peerN(i)
		b.NeighSet(i, idx, gw, mac)
	}
	if err := c.Run(&b, func(tag int, err error, _ uint32) {
		if err != nil {
			t.Errorf("request %d: %v", tag, err)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if got := collect(); len(got) != 0 {
		t.Fatalf("own writes: %d notifications delivered (first %+v), want none", len(got), got[0])
	}
	// More than one recvmmsg call's worth.
	var script strings.Builder
	for i := range n {
		_, gw, _, _ := peerN(i)
		fmt.Fprintf(&script, "neigh replace %s lladdr 0e:00:00:00:00:02 dev vx0 nud permanent\n", gw)
	}
	cmd := exec.Command("ip", "-n", ns.Name, "-batch", "-")
	cmd.Stdin = strings.NewReader(script.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ip -batch: %v\n%s", err, out)
	}
	got := collect()
	if len(got) != n {
		t.Fatalf("foreign writes: %d notifications, want %d", len(got), n)
	}
	for i, s := range got {
		_, gw, _, _ := peerN(i)
		if s.typ != unix.RTM_NEWNEIGH || s.own || s.ip != gw.String() {
			t.Fatalf("notification %d = %+v, want foreign RTM_NEWNEIGH for %s", i, s, gw)
		}
	}
	if out, err := exec.Command("ip", "-n", ns.Name, "neigh", "replace", "10.200.0.1", "lladdr", "0e:00:00:00:00:01",
		"dev", "vx0", "nud", "permanent").CombinedOutput(); err != nil {
		t.Fatalf("ip neigh: %v\n%s", err, out)
	}
	got = collect()
	if len(got) != 1 || got[0].own || got[0].ip != "10.200.0.1" {
		t.Fatalf("foreign write: %+v", got)
	}
	if got := collect(); len(got) != 0 {
		t.Fatalf("nothing changed, yet %+v", got)
	}
}

// TestMonitorWait: Wait returns when a notification is ready and when the Monitor is
// closed; Read delivers other processes' changes.
func TestMonitorWait(t *testing.T) {
	ns, _, _ := connLab(t)
	m, err := NewMonitorAt(ns.NsH, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	done := make(chan error, 1)
	go func() { done <- m.Wait() }()
	select {
	case err := <-done:
		t.Fatalf("Wait with nothing to read returned %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	if out, err := exec.Command("ip", "-n", ns.Name, "neigh", "replace", "10.200.0.9", "lladdr", "0e:00:00:00:00:09",
		"dev", "vx0", "nud", "permanent").CombinedOutput(); err != nil {
		t.Fatalf("ip neigh: %v\n%s", err, out)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Wait = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after a change")
	}
	var got []string
	lost, err := m.Read(func(ch *Change) {
		var n Neigh
		if ch.Type == unix.RTM_NEWNEIGH && ParseNeigh(ch.Body, &n) == nil && n.Family == unix.AF_INET {
			got = append(got, n.IP.String())
		}
	})
	if lost || err != nil || len(got) != 1 || got[0] != "10.200.0.9" {
		t.Fatalf("Read = %v (lost %v, err %v), want the one neighbour", got, lost, err)
	}
	go func() { done <- m.Wait() }()
	time.Sleep(20 * time.Millisecond)
	m.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Wait on a closed Monitor returned nil")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end Wait")
	}
}
