package timerslack

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// childEnv makes the test binary run child() instead of the tests.
const childEnv = "TIMERSLACK_TEST_CHILD"

func TestMain(m *testing.M) {
	if v := os.Getenv(childEnv); v != "" {
		child(v)
		return
	}
	os.Exit(m.Run())
}

// child prints "start <pid>" on every start, applies the slack, then prints every thread's
// slack (sysmon's included) as "threads n1 n2 ..." and every thread's name as "names ...".
func child(slack string) {
	fmt.Printf("start %d\n", os.Getpid())
	d, err := time.ParseDuration(slack)
	if err != nil {
		fmt.Println("error", err)
		return
	}
	if err := Ensure(d); err != nil {
		fmt.Println("error", err)
	}
	tasks, _ := filepath.Glob("/proc/self/task/*")
	var out []string
	for _, t := range tasks {
		// the file is at the top level only: /proc/<tid>/timerslack_ns
		b, err := os.ReadFile(filepath.Join("/proc", filepath.Base(t), "timerslack_ns"))
		if err != nil {
			fmt.Println("error", err)
			return
		}
		out = append(out, strings.TrimSpace(string(b)))
	}
	fmt.Println("threads", strings.Join(out, " "))
	var names []string
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join(t, "comm"))
		if err != nil {
			fmt.Println("error", err)
			return
		}
		names = append(names, strings.TrimSpace(string(b)))
	}
	fmt.Println("names", strings.Join(names, " "))
}

// runChild runs the test binary as child with slack, from a thread whose slack is inherited.
func runChild(t *testing.T, slack string, inherited time.Duration) []string {
	t.Helper()
	runtime.LockOSThread() // the fork below inherits this thread's slack
	defer runtime.UnlockOSThread()
	if inherited > 0 {
		old, err := Current()
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(inherited), 0, 0, 0); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(old), 0, 0, 0) }()
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"="+slack)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

func TestEnsure(t *testing.T) {
	if _, err := os.Stat("/proc/self/task"); err != nil {
		t.Skip("no /proc:", err)
	}
	for _, tc := range []struct {
		name      string
		slack     string
		inherited time.Duration
		starts    int    // 2: Ensure executed the binary again
		want      string // every thread's slack in ns; "" for the inherited default
	}{
		{name: "sets and executes again", slack: "1ms", starts: 2, want: "1000000"},
		{name: "other value", slack: "250us", starts: 2, want: "250000"},
		{name: "already in place", slack: "1ms", inherited: time.Millisecond, starts: 1, want: "1000000"},
		{name: "zero leaves it", slack: "0s", starts: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lines := runChild(t, tc.slack, tc.inherited)
			var pids []string
			var threads, names []string
			for _, l := range lines {
				f := strings.Fields(l)
				switch {
				case len(f) > 0 && f[0] == "start":
					pids = append(pids, f[1])
				case len(f) > 0 && f[0] == "threads":
					threads = f[1:]
				case len(f) > 0 && f[0] == "names":
					names = f[1:]
				default:
					t.Fatalf("child said %q", l)
				}
			}
			if len(pids) != tc.starts {
				t.Fatalf("child started %d times, want %d: %q", len(pids), tc.starts, lines)
			}
			if len(pids) == 2 && pids[0] != pids[1] {
				t.Errorf("pid changed across the exec: %v", pids)
			}
			if len(threads) < 2 {
				t.Fatalf("saw %d threads, want the runtime's monitor thread too: %q", len(threads), lines)
			}
			want := tc.want
			if want == "" {
				want = threads[0]
			}
			for i, v := range threads {
				if v != want {
					t.Errorf("thread %d slack %s ns, want %s: %q", i, v, want, lines)
				}
			}
			// pgrep and pidof look for the binary's name, not the "exe" of /proc/self/exe
			wantName := filepath.Base(os.Args[0])
			if len(wantName) > 15 {
				wantName = wantName[:15]
			}
			if len(names) != len(threads) {
				t.Fatalf("names of %d threads, want %d: %q", len(names), len(threads), lines)
			}
			for i, n := range names {
				if n != wantName {
					t.Errorf("thread %d is named %q, want %q", i, n, wantName)
				}
			}
		})
	}
}
