// Package klogtest captures klog's output in tests; klog is process-wide, so capturing
// tests must not run in parallel.
package klogtest

import (
	"bytes"
	"flag"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"k8s.io/klog/v2"
)

// Buffer holds the captured lines, each once whatever its severity.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Capture sends klog's lines up to verbosity v to a new Buffer, not stderr, until t ends.
func Capture(t testing.TB, v int) *Buffer {
	t.Helper()
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	for name, value := range map[string]string{
		"logtostderr": "false", "alsologtostderr": "false", "stderrthreshold": "FATAL",
		"v": strconv.Itoa(v),
	} {
		if err := fs.Set(name, value); err != nil {
			t.Fatal(err)
		}
	}
	b := &Buffer{}
	klog.SetOutput(io.Discard)
	// Every line reaches the INFO writer exactly once, whatever its severity.
	klog.SetOutputBySeverity("INFO", b)
	t.Cleanup(func() {
		klog.Flush()
		klog.SetOutput(os.Stderr)
		_ = fs.Set("v", "0")
		_ = fs.Set("stderrthreshold", "ERROR")
		_ = fs.Set("logtostderr", "true")
	})
	return b
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything captured so far.
func (b *Buffer) String() string {
	klog.Flush()
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Take returns what was captured since the last Take and forgets it.
func (b *Buffer) Take() string {
	klog.Flush()
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	b.buf.Reset()
	return s
}

// Lines returns the captured lines that contain s.
func (b *Buffer) Lines(s string) []string {
	var out []string
	for _, line := range strings.Split(b.String(), "\n") {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return out
}

// TakeLines is Take as lines, nil when empty.
func (b *Buffer) TakeLines() []string {
	s := strings.TrimSuffix(b.Take(), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}
