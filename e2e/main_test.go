// Package e2e holds the end-to-end tests: real flanneld processes in a network-namespace
// lab (package e2e/lab) with a real etcd. They need root and skip otherwise, and in
// -short mode. flanneld and the CNI plugin (cmd/flannel) are built once per run (or taken
// from $FLANNEL_TEST_FLANNELD and $FLANNEL_TEST_CNI_PLUGIN).
package e2e

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/flannel-go/flannel/e2e/lab"
)

// labFamily prefixes every lab these tests create (see lab.UniqueName / lab.Sweep).
const labFamily = "fge2e"

// flanneld is the binary under test, set once by TestMain before any test runs.
var flanneld struct {
	bin string
	err error
}

// cniPlugin is the flannel CNI plugin under test (cmd/flannel), built beside flanneld
// (or taken from $FLANNEL_TEST_CNI_PLUGIN).
var cniPlugin struct {
	bin string
	err error
}

func TestMain(m *testing.M) {
	if h := os.Getenv(helperEnv); h != "" {
		os.Exit(runHelper(h)) // this binary started by a test inside a lab namespace
	}
	flag.Parse()
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if testing.Short() || os.Geteuid() != 0 {
		return m.Run() // every test skips itself
	}
	if err := lab.Sweep(labFamily); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: sweeping leftover labs: %v\n", err)
	}
	dir, err := os.MkdirTemp("", "fge2e-bin-")
	if err != nil {
		flanneld.err, cniPlugin.err = err, err
		return m.Run()
	}
	defer os.RemoveAll(dir)
	flanneld.bin, flanneld.err = testBinary(dir, "flanneld", "FLANNEL_TEST_FLANNELD")
	cniPlugin.bin, cniPlugin.err = testBinary(dir, "flannel", "FLANNEL_TEST_CNI_PLUGIN")
	return m.Run()
}

// testBinary returns the binary named by $env, or builds cmd/<name> into dir.
func testBinary(dir, name, env string) (string, error) {
	if b := os.Getenv(env); b != "" {
		if _, err := os.Stat(b); err != nil {
			return b, fmt.Errorf("%s: %w", env, err)
		}
		return b, nil
	}
	out := filepath.Join(dir, name)
	return out, buildCommand(out, name)
}

// buildCommand builds cmd/<name> into out.
func buildCommand(out, name string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	args := []string{"build", "-o", out}
	if os.Getenv("FLANNEL_TEST_RACE") != "" {
		args = append(args, "-race")
	}
	args = append(args, "github.com/flannel-go/flannel/cmd/"+name)
	cmd := exec.Command(goBin, args...)
	if os.Getenv("FLANNEL_TEST_RACE") == "" {
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // static, as make build and the image (-race needs cgo)
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", name, err, b)
	}
	return nil
}
