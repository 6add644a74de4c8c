package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// The binary as a runtime sees it: version line, VERSION's JSON, errors as CNI results
// on stdout with exit status 1.
func TestBinary(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "flannel")
	build := exec.Command("go", "build", "-ldflags", "-X main.version=v9.9.9 -X main.commit=abc123", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	run := func(env []string, stdin string, args ...string) (stdout, stderr string, code int) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append([]string{}, env...) // exactly env, nothing inherited
		cmd.Stdin = strings.NewReader(stdin)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee):
			code = ee.ExitCode()
		case err != nil:
			t.Fatal(err)
		}
		return o.String(), e.String(), code
	}

	about := fmt.Sprintf("CNI Plugin flannel version v9.9.9 (%s/%s) commit abc123", runtime.GOOS, runtime.GOARCH)
	if out, _, code := run(nil, "", "--version"); out != about+"\n" || code != 0 {
		t.Errorf("--version: %q exit %d, want %q", out, code, about)
	}
	if _, errOut, code := run(nil, ""); !strings.HasPrefix(errOut, about+"\n") || code != 0 {
		t.Errorf("without CNI_COMMAND: stderr %q exit %d", errOut, code)
	}
	out, _, code := run([]string{"CNI_COMMAND=VERSION"}, "")
	var vi struct {
		Supported []string `json:"supportedVersions"`
	}
	if err := json.Unmarshal([]byte(out), &vi); err != nil || code != 0 ||
		!slices.Equal(vi.Supported, []string{"0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}) {
		t.Errorf("VERSION: %q exit %d", out, code)
	}

	subnetFile, dataDir := filepath.Join(dir, "subnet.env"), filepath.Join(dir, "data")
	conf := func(v string) string {
		return fmt.Sprintf(`{"cniVersion":%q,"name":"cbr0","type":"flannel","subnetFile":%q,"dataDir":%q}`, v, subnetFile, dataDir)
	}
	type cniErr struct {
		Code uint   `json:"code"`
		Msg  string `json:"msg"`
	}
	cases := []struct {
		name, command, conf string
		code                uint
		msg                 string
	}{
		{"ADD without a subnet file", "ADD", conf("1.0.0"), 11, "failed to load flannel 'subnet.env' file: open " + subnetFile +
			": no such file or directory. Check the flannel pod log for this node. flanneld is not running or not ready on this node"},
		{"STATUS without a subnet file", "STATUS", conf("1.1.0"), 50, "flanneld is not running or not ready on this node"},
		{"STATUS before spec 1.1.0", "STATUS", conf("1.0.0"), 1, "config version does not allow STATUS"},
		{"GC before spec 1.1.0", "GC", conf("1.0.0"), 1, "config version does not allow GC"},
		{"a bad field", "ADD", `{"cniVersion":"1.0.0","name":"cbr0","type":"flannel","delegate":[]}`, 7, `field "delegate" must be an object, not an array`},
	}
	for _, c := range cases {
		env := []string{"CNI_COMMAND=" + c.command, "CNI_CONTAINERID=c1", "CNI_NETNS=/run/netns/none", "CNI_IFNAME=eth0", "CNI_PATH=" + dir}
		out, _, code := run(env, c.conf)
		var e cniErr
		if err := json.Unmarshal([]byte(out), &e); err != nil || code != 1 || e.Code != c.code || !strings.Contains(e.Msg, c.msg) {
			t.Errorf("%s: stdout %q exit %d, want code %d with %q and exit 1", c.name, out, code, c.code, c.msg)
		}
	}
	if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused ADD made the data directory: %v", err)
	}
}
