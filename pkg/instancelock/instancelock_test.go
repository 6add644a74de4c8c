package instancelock

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"syscall"
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

// The lock is per network namespace: the same key is free in another one.
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
		// The thread stays in the new namespace and is thrown away.
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

func TestParseUnixTable(t *testing.T) {
	const table = `Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 1001 @flannel-go/etcd-prefix:/coreos.com/network
0000000000000000: 00000003 00000000 00000000 0001 03 1002 @flannel-go/etcd-prefix:/coreos.com/network
0000000000000000: 00000002 00000000 00010000 0001 01 1003 @flannel-go/subnet-file:/run/flannel/subnet.env
0000000000000000: 00000002 00000000 00010000 0001 01 1004 @flannel-go/etcd-prefix:/coreos.com/network
0000000000000000: 00000002 00000000 00010000 0002 01 1005 @flannel-go/datagram
0000000000000000: 00000002 00000000 00010000 0001 01 1006 /run/flannel-go/not-abstract
0000000000000000: 00000002 00000000 00010000 0001 01 1007 @other/name
0000000000000000: 00000002 00000000 00010000 0001 01 1008 @flannel-go/with blank
0000000000000000: 00000002 00000000 0001000g 0001 01 1009 @flannel-go/bad-flags
0000000000000000: 00000002 00000000 00010000 0001 01 1010
0000000000000000: 00000002 00000000 00010000 0001 01 1011 @flannel-go/a_b#0123456789abcdef
`
	got := parseUnixTable([]byte(table))
	want := []string{"@flannel-go/a_b#0123456789abcdef", "@flannel-go/etcd-prefix:/coreos.com/network", "@flannel-go/subnet-file:/run/flannel/subnet.env"}
	if !slices.Equal(got, want) {
		t.Errorf("parseUnixTable = %q, want %q", got, want)
	}
}

func FuzzParseUnixTable(f *testing.F) {
	f.Add([]byte("Num       RefCount Protocol Flags    Type St Inode Path\n0: 00000002 00000000 00010000 0001 01 1001 @flannel-go/x\n"))
	f.Add([]byte("0: 2 0 10000 1 1 1 @flannel-go/" + strings.Repeat("y", 200)))
	f.Fuzz(func(t *testing.T, data []byte) {
		names := parseUnixTable(data)
		for i, n := range names {
			if !strings.HasPrefix(n, "@"+namePrefix) || len(n)-1 > maxNameLen || strings.ContainsAny(n, " \t\n") {
				t.Fatalf("name %q is none of ours", n)
			}
			if i > 0 && names[i-1] >= n {
				t.Fatalf("names not sorted and unique: %q", names)
			}
		}
	})
}

// Listening lists the locks of the caller's network namespace, and only those.
func TestListening(t *testing.T) {
	key := testKey(t, "listed")
	l, err := Acquire(key)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	names, err := Listening()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(names, Name(key)) {
		t.Errorf("Listening = %q, lacks %q", names, Name(key))
	}
	// A connection to the lock is not listed again.
	c, _, err := Dial(key, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	again, err := Listening()
	if err != nil || !slices.Equal(again, names) {
		t.Errorf("with a connection open: %q %v, want %q", again, err, names)
	}
	if os.Geteuid() != 0 {
		return
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // left in the new namespace and thrown away
		ns, err := netns.New()
		if err != nil {
			errc <- err
			return
		}
		defer ns.Close()
		inner, err := Acquire(key + "/inner")
		if err != nil {
			errc <- err
			return
		}
		defer inner.Release()
		names, err := Listening()
		if err == nil && !slices.Equal(names, []string{Name(key + "/inner")}) {
			err = fmt.Errorf("in a new namespace: %q, want only the lock taken there", names)
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// holdInChild runs this binary as a helper holding key (as nobody when squat) until
// killed, and returns once it holds the lock.
func holdInChild(t *testing.T, key string, squat bool) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "INSTANCELOCK_HOLD="+key)
	if squat {
		cmd.Env = append(cmd.Env, "INSTANCELOCK_AS_NOBODY=1")
	}
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
	return cmd
}

// A holder killed with SIGKILL leaves no stale lock behind.
func TestKilledHolderReleases(t *testing.T) {
	key := testKey(t, "kill")
	cmd := holdInChild(t, key, false)
	_, err := Acquire(key)
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

// A non-root holder is reported as a squatter, naming process and user; the lock is free
// once it is gone.
func TestSquatterNamed(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a helper as nobody")
	}
	key := testKey(t, "squat")
	cmd := holdInChild(t, key, true)
	_, err := Acquire(key)
	if !errors.Is(err, ErrSquatted) || errors.Is(err, ErrHeld) {
		t.Fatalf("Acquire of a squatted name: %v, want ErrSquatted", err)
	}
	for _, want := range []string{fmt.Sprintf("pid %d", cmd.Process.Pid), "uid 65534", Name(key)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	// A client learns the same from Dial.
	c, cred, err := Dial(key, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if cred.Uid != 65534 || int(cred.Pid) != cmd.Process.Pid {
		t.Errorf("Dial: holder %+v, want pid %d uid 65534", cred, cmd.Process.Pid)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	l, err := Acquire(key)
	if err != nil {
		t.Fatalf("Acquire after the squatter was killed: %v", err)
	}
	l.Release()
}

// Serve hands connections to the handler; each side sees the other's credentials;
// Release waits for running handlers.
func TestServe(t *testing.T) {
	key := testKey(t, "serve")
	l, err := Acquire(key)
	if err != nil {
		t.Fatal(err)
	}
	if got := l.SocketName(); got != Name(key) {
		t.Errorf("SocketName = %q", got)
	}
	exchange := func() (string, error) {
		c, cred, err := Dial(key, time.Second)
		if err != nil {
			return "", err
		}
		defer c.Close()
		if int(cred.Pid) != os.Getpid() || int(cred.Uid) != os.Geteuid() {
			t.Errorf("Dial: holder %+v, want this process", cred)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(c)
		return string(b), err
	}
	// Before Serve, connections are closed at once.
	if got, err := exchange(); err != nil || got != "" {
		t.Fatalf("before Serve: %q %v", got, err)
	}
	released := make(chan struct{})
	l.Serve(func(c *net.UnixConn) {
		cred, err := PeerCred(c)
		if err != nil {
			fmt.Fprintf(c, "error %v", err)
			return
		}
		fmt.Fprintf(c, "hello pid %d uid %d", cred.Pid, cred.Uid)
		<-released
	})
	go func() { time.Sleep(200 * time.Millisecond); close(released) }()
	want := fmt.Sprintf("hello pid %d uid %d", os.Getpid(), os.Geteuid())
	if got, err := exchange(); err != nil || got != want {
		t.Fatalf("served: %q %v, want %q", got, err, want)
	}
	l.Serve(nil)
	if got, err := exchange(); err != nil || got != "" {
		t.Fatalf("after Serve(nil): %q %v", got, err)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
}

func TestMain(m *testing.M) {
	if key := os.Getenv("INSTANCELOCK_HOLD"); key != "" {
		if os.Getenv("INSTANCELOCK_AS_NOBODY") != "" {
			// Go applies these to every thread of the process.
			if err := syscall.Setgroups(nil); err != nil {
				fmt.Println(err)
				os.Exit(1)
			}
			if err := syscall.Setgid(65534); err != nil {
				fmt.Println(err)
				os.Exit(1)
			}
			if err := syscall.Setuid(65534); err != nil {
				fmt.Println(err)
				os.Exit(1)
			}
		}
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
