// Package cnikit runs the reference CNI plugins for e2e tests, each in a named netns,
// so libcni drives them without touching the root namespace.
package cnikit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// PluginsVersion is the reference plugins' release (bridge needs v1.6.0 for cniVersion 1.1.0).
const PluginsVersion = "v1.9.1"

// PluginsDir returns $FLANNEL_TEST_CNI_PLUGINS, else the directory tools/cni-plugins caches.
func PluginsDir() (string, error) {
	dir := os.Getenv("FLANNEL_TEST_CNI_PLUGINS")
	if dir == "" {
		cache := os.Getenv("FLANNEL_GO_CACHE")
		if cache == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", fmt.Errorf("CNI plugins: no home directory: %w", err)
			}
			cache = filepath.Join(home, ".cache", "flannel-go")
		}
		dir = filepath.Join(cache, "cni-plugins-"+PluginsVersion)
	}
	for _, p := range []string{"bridge", "host-local", "portmap", "loopback"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			return "", fmt.Errorf("CNI plugins %s not built (run `make cni-plugins`, or set FLANNEL_TEST_CNI_PLUGINS): %w", PluginsVersion, err)
		}
	}
	return dir, nil
}

// Need returns PluginsDir, skipping the test without the plugins; with $CI=true it fails.
func Need(tb testing.TB) string {
	tb.Helper()
	dir, err := PluginsDir()
	if err == nil {
		return dir
	}
	if os.Getenv("CI") == "true" {
		tb.Fatalf("CI=true but a test dependency is missing: %v", err)
	}
	tb.Skipf("skipping: %v", err)
	return ""
}

// BinDir makes dir a CNI_PATH of links to the named plugins and the extra binaries.
func BinDir(dir, pluginsDir string, plugins []string, extra ...string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var targets []string
	for _, p := range plugins {
		targets = append(targets, filepath.Join(pluginsDir, p))
	}
	for _, target := range append(targets, extra...) {
		abs, err := filepath.Abs(target)
		if err != nil {
			return err
		}
		if err := os.Symlink(abs, filepath.Join(dir, filepath.Base(abs))); err != nil {
			return fmt.Errorf("cnikit: %w", err)
		}
	}
	return nil
}

// NetnsExec implements invoke.Exec in a named netns, which delegated plugins inherit.
type NetnsExec struct {
	NS     string
	Stderr io.Writer // succeeding plugins' stderr (nil: dropped)
	version.PluginDecoder
}

var _ invoke.Exec = (*NetnsExec)(nil)

// ExecPlugin runs pluginPath in e.NS; a CNI error result comes back as a *types.Error.
func (e *NetnsExec) ExecPlugin(ctx context.Context, pluginPath string, stdinData []byte, environ []string) ([]byte, error) {
	if e.NS == "" {
		return nil, errors.New("cnikit: refusing to run a plugin in the root network namespace")
	}
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", e.NS, pluginPath)
	cmd.Env = environ
	cmd.Stdin = bytes.NewReader(stdinData)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var res types.Error
		if json.Unmarshal(stdout.Bytes(), &res) == nil && (res.Code != 0 || res.Msg != "") {
			return nil, &res
		}
		return nil, fmt.Errorf("%s in %s: %w (stdout %q, stderr %q)", filepath.Base(pluginPath), e.NS, err,
			strings.TrimSpace(stdout.String()), strings.TrimSpace(stderr.String()))
	}
	if e.Stderr != nil && stderr.Len() > 0 {
		_, _ = stderr.WriteTo(e.Stderr)
	}
	return stdout.Bytes(), nil
}

// FindInPath looks plugin up in paths as the CNI library does.
func (e *NetnsExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}
