package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "cni-conf.json")
	if err := os.WriteFile(src, []byte(`{"name":"cbr0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "net.d", "10-flannel.conflist")
	cases := []struct {
		args   []string
		status int
		stderr string
	}{
		{args: []string{src, dst}, status: 0},
		{args: []string{src, dst}, status: 0}, // again: replaces
		{args: []string{src}, status: 2, stderr: "usage: install-conf SOURCE DESTINATION"},
		{args: []string{src, dst, "x"}, status: 2, stderr: "usage:"},
		{args: []string{"", dst}, status: 2, stderr: "usage:"},
		{args: []string{filepath.Join(dir, "missing"), dst}, status: 1, stderr: "install-conf: install " + filepath.Join(dir, "missing") + " as " + dst + ": open source:"},
	}
	for _, c := range cases {
		var stderr bytes.Buffer
		if got := run(c.args, &stderr); got != c.status {
			t.Errorf("run(%q) = %d, want %d (stderr %q)", c.args, got, c.status, stderr.String())
		}
		if c.stderr == "" && stderr.Len() > 0 || !strings.Contains(stderr.String(), c.stderr) {
			t.Errorf("run(%q) stderr %q, want %q", c.args, stderr.String(), c.stderr)
		}
	}
	b, err := os.ReadFile(dst)
	if err != nil || string(b) != `{"name":"cbr0"}` {
		t.Fatalf("installed %q, %v", b, err)
	}
}
