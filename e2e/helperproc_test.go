package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flannel-go/flannel/pkg/control"
	"github.com/flannel-go/flannel/pkg/instancelock"
)

// The tests start this test binary inside lab namespaces (ip netns exec) in a helper
// mode, to act there as a process other than flanneld: a client of the control socket,
// or a process that is not root squatting a lock's socket name.
const (
	helperEnv       = "FLANNEL_E2E_HELPER"        // the mode
	helperKeyEnv    = "FLANNEL_E2E_HELPER_KEY"    // the instance-lock key
	helperNobodyEnv = "FLANNEL_E2E_HELPER_NOBODY" // "1": become nobody first
	helperQuery     = "control-query"             // print control.Query's status as JSON, or "error: ..."
	helperSquat     = "squat"                     // bind the key's socket name, print "held", sleep
)

func runHelper(mode string) int {
	if os.Getenv(helperNobodyEnv) == "1" {
		// The test binary is not readable by nobody, so the helper starts as root and
		// drops the privileges (Go applies them to every thread) before anything else.
		for _, err := range []error{syscall.Setgroups(nil), syscall.Setgid(65534), syscall.Setuid(65534)} {
			if err != nil {
				fmt.Println("error:", err)
				return 1
			}
		}
	}
	key := os.Getenv(helperKeyEnv)
	switch mode {
	case helperQuery:
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		st, err := control.Query(ctx, key)
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
		if err := json.NewEncoder(os.Stdout).Encode(st); err != nil {
			fmt.Println("error:", err)
			return 1
		}
		return 0
	case helperSquat:
		if _, err := instancelock.Acquire(key); err != nil {
			fmt.Println("error:", err)
			return 1
		}
		fmt.Println("held")
		time.Sleep(10 * time.Minute) // until the test kills it
		return 0
	}
	fmt.Println("error: unknown helper mode", mode)
	return 2
}

// helperCmd is this test binary in a helper mode inside namespace ns.
func helperCmd(ns, mode, key string, nobody bool) *exec.Cmd {
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, helperKeyEnv+"="+key)
	if nobody {
		cmd.Env = append(cmd.Env, helperNobodyEnv+"=1")
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// queryControl asks the daemon holding key in namespace ns for its status, from a
// process in that namespace (as nobody when nobody is set). It returns the status or
// the client's error text.
func queryControl(t *testing.T, ns, key string, nobody bool) (*control.Status, string) {
	t.Helper()
	out, err := helperCmd(ns, helperQuery, key, nobody).Output()
	text := strings.TrimSpace(string(out))
	if err != nil || strings.HasPrefix(text, "error:") {
		if text == "" {
			text = fmt.Sprint(err)
		}
		return nil, text
	}
	var st control.Status
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("control status %q: %v", out, err)
	}
	return &st, ""
}

// etcdPrefixKey is the instance-lock key, and so the control socket, of a daemon with
// --etcd-prefix=prefix.
func etcdPrefixKey(prefix string) string { return "etcd-prefix:" + prefix }
