package backend

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/pkg/observe"

	"github.com/flannel-go/flannel/pkg/klogtest"
)

func TestRefusalReason(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{unix.ENETUNREACH, observe.RefusedUnreachable},
		{unix.EHOSTUNREACH, observe.RefusedUnreachable},
		{fmt.Errorf("route 10.5.3.0/24: %w", unix.ENETUNREACH), observe.RefusedUnreachable},
		{unix.EEXIST, observe.RefusedExists},
		{unix.EINVAL, observe.RefusedInvalid},
		{fmt.Errorf("Nexthop has invalid gateway: %w", unix.EINVAL), observe.RefusedInvalid},
		{unix.EOPNOTSUPP, observe.RefusedInvalid},
		{unix.EAFNOSUPPORT, observe.RefusedInvalid},
		{unix.EACCES, observe.RefusedInvalid},
		// not the peer's: the node's or the kernel's
		{unix.ENOMEM, ""},
		{unix.ENOBUFS, ""},
		{unix.ENODEV, ""},
		{unix.EPERM, ""},
		{errors.New("netlink reply lost"), ""},
		{nil, ""},
	} {
		if got := RefusalReason(tc.err); got != tc.want {
			t.Errorf("RefusalReason(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

func TestProblemLogOncePerDistinctProblem(t *testing.T) {
	buf := klogtest.Capture(t, 0)

	var l ProblemLog
	round := func(skipped, refused []Problem) (skips, refusals int) {
		buf.Take()
		l.Round(skipped, refused)
		klog.Flush()
		return strings.Count(buf.String(), "Skipping peer lease"), strings.Count(buf.String(), "Kernel refused peer")
	}
	a := Problem{Peer: "10.5.2.0-24", Reason: "no IPv4 public address"}
	c := Problem{Peer: "10.5.3.0-24", Reason: "VtepMAC 0e:00:00:00:00:02 is also used by the peer at 192.0.2.2; skipped"}
	r := Problem{Peer: "10.5.4.0-24", Reason: "the kernel refuses the route 10.5.4.0/24 via 192.0.2.255 dev eth0: invalid argument"}
	steps := []struct {
		name             string
		skipped, refused []Problem
		skips, refusals  int
	}{
		{"first round", []Problem{a, c, c}, []Problem{r}, 2, 1},
		{"unchanged", []Problem{a, c}, []Problem{r}, 0, 0},
		{"a problem going away", []Problem{c}, nil, 0, 0},
		{"a recurring problem", []Problem{a, c}, []Problem{r}, 1, 1},
		{"the same text, refused rather than skipped", []Problem{c}, []Problem{r, a}, 0, 1},
	}
	for i, s := range steps {
		if skips, refusals := round(s.skipped, s.refused); skips != s.skips || refusals != s.refusals {
			t.Errorf("%s: logged %d skipped and %d refused peers, want %d and %d", s.name, skips, refusals, s.skips, s.refusals)
		}
		if out := buf.String(); i == 0 && (!strings.Contains(out, `peer="10.5.4.0-24"`) || !strings.Contains(out, "invalid argument")) {
			t.Errorf("log lines do not name the refused peer and the kernel's answer: %s", out)
		}
	}
}

// Peers on another backend or VNI are warnings, once per peer and cause while it lasts,
// and counted per reason every round (distinct peers, whatever the families).
func TestProblemLogSkippedPeers(t *testing.T) {
	buf := klogtest.Capture(t, 0)
	var l ProblemLog
	round := func(skipped ...Problem) (warnings int, counts map[string]int) {
		buf.Take()
		counts = l.Round(skipped, nil)
		klog.Flush()
		for _, line := range strings.Split(buf.String(), "\n") {
			if strings.HasPrefix(line, "W") && strings.Contains(line, "Skipping peer lease: ") {
				warnings++
			}
		}
		return warnings, counts
	}
	hg := Problem{Peer: "10.5.3.0-24", Reason: `backend type "host-gw" is not vxlan`, Skip: observe.SkippedOtherBackend}
	vni := Problem{Peer: "10.5.4.0-24", Reason: "VNI 2, ours is 1", Skip: observe.SkippedOtherVNI}
	vni6 := Problem{Peer: "10.5.4.0-24", Reason: "VNI 3, ours is 1", Skip: observe.SkippedOtherVNI} // its IPv6 data
	other := Problem{Peer: "10.5.2.0-24", Reason: "no IPv4 public address"}
	if w, c := round(hg, hg, vni, vni6, other); w != 3 || c[observe.SkippedOtherBackend] != 1 || c[observe.SkippedOtherVNI] != 1 {
		t.Errorf("first round: %d warnings, counts %v; want 3, one peer per reason", w, c)
	}
	want := `"Skipping peer lease: the peer runs another backend; pods on the two nodes cannot reach each other until both run the same (a node applies the network config's backend when it restarts)" peer="10.5.3.0-24" reason="backend type \"host-gw\" is not vxlan"`
	if !strings.Contains(buf.String(), want) {
		t.Errorf("warning line:\n%s", buf.String())
	}
	if w, c := round(hg, vni, vni6); w != 0 || c[observe.SkippedOtherBackend] != 1 || c[observe.SkippedOtherVNI] != 1 {
		t.Errorf("unchanged round: %d warnings, counts %v", w, c)
	}
	if w, c := round(hg); w != 0 || c[observe.SkippedOtherVNI] != 0 {
		t.Errorf("VNI fixed: %d warnings, counts %v", w, c)
	}
	if w, c := round(); w != 0 || len(c) != 0 {
		t.Errorf("all fixed: %d warnings, counts %v", w, c)
	}
}
