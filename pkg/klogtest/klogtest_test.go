package klogtest

import (
	"errors"
	"strings"
	"testing"

	"k8s.io/klog/v2"
)

func TestCaptureOnceEachUpToVerbosity(t *testing.T) {
	b := Capture(t, 2)
	klog.InfoS("info line")
	klog.V(2).InfoS("verbose line")
	klog.V(3).InfoS("too verbose")
	klog.ErrorS(errors.New("boom"), "error line")
	lines := b.TakeLines()
	if len(lines) != 3 {
		t.Fatalf("captured %d lines, want 3 (each once, V(3) left out):\n%s", len(lines), strings.Join(lines, "\n"))
	}
	if !strings.HasPrefix(lines[2], "E") || len(b.Lines("error line")) != 0 {
		t.Errorf("lines %q; Take must leave nothing behind", lines)
	}
	klog.InfoS("after take")
	if got := b.Lines("after take"); len(got) != 1 {
		t.Errorf("Lines after a Take: %q", got)
	}
}
