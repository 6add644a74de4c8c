package backend

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/pkg/observe"
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
	var buf bytes.Buffer
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	_ = fs.Set("logtostderr", "false")
	_ = fs.Set("alsologtostderr", "false")
	klog.SetOutputBySeverity("INFO", &buf) // each line once (errors go to every severity's output)
	t.Cleanup(func() {
		klog.SetOutput(nil)
		_ = fs.Set("logtostderr", "true")
	})

	var l ProblemLog
	round := func(skipped, refused []Problem) (skips, refusals int) {
		buf.Reset()
		l.Round(skipped, refused)
		klog.Flush()
		return strings.Count(buf.String(), "Skipping peer lease"), strings.Count(buf.String(), "Kernel refused peer")
	}
	a := Problem{"10.5.2.0-24", "no IPv4 public address"}
	c := Problem{"10.5.3.0-24", `backend type "host-gw" is not vxlan`}
	r := Problem{"10.5.4.0-24", "the kernel refuses the route 10.5.4.0/24 via 192.0.2.255 dev eth0: invalid argument"}
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
