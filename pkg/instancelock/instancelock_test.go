package instancelock

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// testKey is unique per test process, so concurrent runs never share a lock.
func testKey(t *testing.T, tag string) string {
	return fmt.Sprintf("test/%d/%s/%s", os.Getpid(), t.Name(), tag)
}

func TestName(t *testing.T) {
	long := strings.Repeat("x", 200)
	tests := []struct {
		key, want string
	}{
		{"etcd-prefix:/coreos.com/network", "@flannel-go/etcd-prefix:/coreos.com/network"},
		{"subnet-file:/run/flannel/subnet.env", "@flannel-go/subnet-file:/run/flannel/subnet.env"},
		{"a b", "@flannel-go/a_b#"},    // sanitised: hashed (prefix checked below)
		{"a_b", "@flannel-go/a_b"},     // already clean: kept as is, distinct from "a b"
		{"é/\x00", "@flannel-go/_/_#"}, // one '_' per rune
		{long, "@flannel-go/xxxxxxxx"},
	}
	for _, tt := range tests {
		got := Name(tt.key)
		if strings.HasSuffix(tt.want, "#") || tt.key == long {
			if !strings.HasPrefix(got, tt.want) {
				t.Errorf("Name(%q) = %q, want prefix %q", tt.key, got, tt.want)
			}
		} else if got != tt.want {
			t.Errorf("Name(%q) = %q, want %q", tt.key, got, tt.want)
		}
		if len(got)-1 > maxNameLen {
			t.Errorf("Name(%q) is %d bytes, more than %d", tt.key, len(got)-1, maxNameLen)
		}
	}
	if Name("a b") == Name("a_b") || Name("a b") == Name("a\tb") {
		t.Error("distinct keys share a lock name")
	}
	if Name(long) == Name(long+"y") {
		t.Error("long keys differing at the end share a lock name")
	}
}

func FuzzName(f *testing.F) {
	f.Add("etcd-prefix:/coreos.com/network")
	f.Add("a b")
	f.Add(strings.Repeat("/", 300))
	f.Fuzz(func(t *testing.T, key string) {
		n := Name(key)
		if !strings.HasPrefix(n, "@"+namePrefix) {
			t.Fatalf("Name(%q) = %q lacks the prefix", key, n)
		}
		if len(n)-1 > maxNameLen {
			t.Fatalf("Name(%q) is %d bytes", key, len(n)-1)
		}
		if strings.ContainsRune(n[1:], 0) {
			t.Fatalf("Name(%q) holds a NUL", key)
		}
		if Name(key) != n {
			t.Fatal("Name is not deterministic")
		}
	})
}

func TestAcquireRefusesSecondHolder(t *testing.T) {
	key := testKey(t, "a")
	l, err := Acquire(key)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(key)
	if !errors.Is(err, ErrHeld) {
		t.Fatalf("second Acquire: %v, want ErrHeld", err)
	}
	if want := fmt.Sprintf("pid %d", os.Getpid()); !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), key) {
		t.Errorf("error %q should name the holder (%s) and the key", err, want)
	}
	// Another key coexists.
	other, err := Acquire(testKey(t, "b"))
	if err != nil {
		t.Fatalf("a different key is refused: %v", err)
	}
	if err := other.Release(); err != nil {
		t.Error(err)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(); err != nil {
		t.Errorf("second Release: %v", err)
	}
	again, err := Acquire(key)
	if err != nil {
		t.Fatalf("Acquire after Release: %v", err)
	}
	again.Release()
}

// The lock is scoped to the network namespace: the same key is free in another one.
func TestLockIsPerNetworkNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	key := testKey(t, "ns")
	l, err := Acquire(key)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()

	errc := make(chan error, 1)
	go func() {
		// The thread is left in the new namespace and thrown away (no UnlockOSThread).
		runtime.LockOSThread()
		ns, err := netns.New() // unnamed: gone when its last reference closes
		if err != nil {
			errc <- err
			return
		}
		defer ns.Close()
		inner, err := Acquire(key)
		if err != nil {
			errc <- fmt.Errorf("same key in another namespace: %w", err)
			return
		}
		_, err = Acquire(key)
		inner.Release()
		if !errors.Is(err, ErrHeld) {
			errc <- fmt.Errorf("second Acquire in the other namespace: %v, want ErrHeld", err)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// A holder killed with SIGKILL leaves no stale lock behind.
func TestKilledHolderReleases(t *testing.T) {
	if os.Getenv("INSTANCELOCK_HOLD") != "" {
		return // the helper body runs from TestMain
	}
	key := testKey(t, "kill")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "INSTANCELOCK_HOLD="+key)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "held" {
		t.Fatalf("helper: %q %v", line, err)
	}
	_, err = Acquire(key)
	if !errors.Is(err, ErrHeld) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", cmd.Process.Pid)) {
		t.Fatalf("Acquire while the helper holds the lock: %v (helper pid %d)", err, cmd.Process.Pid)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	l, err := Acquire(key)
	if err != nil {
		t.Fatalf("Acquire after the holder was killed: %v", err)
	}
	l.Release()
}

func TestMain(m *testing.M) {
	if key := os.Getenv("INSTANCELOCK_HOLD"); key != "" {
		if _, err := Acquire(key); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Println("held")
		time.Sleep(time.Minute) // until killed
		os.Exit(0)
	}
	os.Exit(m.Run())
}
