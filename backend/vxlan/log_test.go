package vxlan

import (
	"bytes"
	"flag"
	"strings"
	"testing"

	"k8s.io/klog/v2"
)

func TestLogProblemsOncePerDistinctProblem(t *testing.T) {
	var buf bytes.Buffer
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	_ = fs.Set("logtostderr", "false")
	_ = fs.Set("alsologtostderr", "false")
	klog.SetOutput(&buf)
	t.Cleanup(func() {
		klog.SetOutput(nil)
		_ = fs.Set("logtostderr", "true")
	})

	b := &Backend{logged: map[string]struct{}{}, seen: map[string]struct{}{}}
	round := func(probs ...problem) int {
		buf.Reset()
		b.probs = append(b.probs[:0], probs...)
		b.logProblems()
		klog.Flush()
		return strings.Count(buf.String(), "Skipping peer lease")
	}
	a := problem{"10.5.2.0-24", "no IPv4 public address"}
	c := problem{"10.5.3.0-24", `backend type "host-gw" is not vxlan`}
	if n := round(a, c, c); n != 2 {
		t.Errorf("first round logged %d lines, want 2", n)
	}
	if n := round(a, c); n != 0 {
		t.Errorf("unchanged problems logged %d lines, want 0", n)
	}
	if n := round(c); n != 0 {
		t.Errorf("a problem going away logged %d lines", n)
	}
	if n := round(a, c); n != 1 {
		t.Errorf("a recurring problem logged %d lines, want 1", n)
	}
	if !strings.Contains(buf.String(), `peer="10.5.2.0-24"`) {
		t.Errorf("log line does not name the peer: %s", buf.String())
	}
}
