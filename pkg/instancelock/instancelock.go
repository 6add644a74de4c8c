// Package instancelock keeps two flanneld instances for one network out of one netns. A
// lock is an abstract unix socket, scoped to the netns and released by the kernel when the
// holder dies, so never stale; its listener also serves the control socket.
package instancelock

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const namePrefix = "flannel-go/"

const maxNameLen = 107 // sun_path minus the leading NUL

const maxHandlers = 16 // connections handled at once; more are closed

// ErrHeld means another flanneld instance (a root process) holds the lock.
var ErrHeld = errors.New("another flanneld instance holds the lock")

// ErrSquatted means a process that is not root holds the lock's name.
var ErrSquatted = errors.New("a process that is not root holds the lock's socket name")

// Lock is a held instance lock, released by Release or when the process exits.
type Lock struct {
	ln      *net.UnixListener
	name    string
	handler atomic.Pointer[func(*net.UnixConn)]
	done    chan struct{}  // closed when the accept loop has ended
	conns   sync.WaitGroup // running handlers
}

// Name is key's socket name: characters outside [A-Za-z0-9/._-] become '_', and a too
// long or ambiguous result ends with a hash of key.
func Name(key string) string {
	var b strings.Builder
	changed := false
	for _, r := range key {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune("/._-:", r):
			b.WriteRune(r)
		default:
			b.WriteByte('_')
			changed = true
		}
	}
	s := b.String()
	if changed || len(namePrefix)+len(s) > maxNameLen {
		sum := sha256.Sum256([]byte(key))
		h := "#" + hex.EncodeToString(sum[:8])
		if room := maxNameLen - len(namePrefix) - len(h); len(s) > room {
			s = s[:room]
		}
		s += h
	}
	return "@" + namePrefix + s
}

// Acquire takes key's lock in the caller's netns; the error wraps ErrHeld or ErrSquatted
// and names the holder when known. Until Serve, connections are closed.
func Acquire(key string) (*Lock, error) {
	name := Name(key)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: name, Net: "unix"})
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, heldError(key, name)
		}
		return nil, fmt.Errorf("instance lock %s: %w", name, err)
	}
	l := &Lock{ln: ln, name: name, done: make(chan struct{})}
	go l.accept()
	return l, nil
}

func heldError(key, name string) error {
	cred, err := holder(name)
	switch {
	case err != nil:
		return fmt.Errorf("%w for %s (lock %s; its holder is unknown: %v)", ErrHeld, key, name, err)
	case cred.Uid != 0:
		return fmt.Errorf("%w: pid %d%s, uid %d, listens on %s, the lock of %s; stop that process (it is not a flanneld: flanneld runs as root)",
			ErrSquatted, cred.Pid, command(int(cred.Pid)), cred.Uid, name, key)
	default:
		return fmt.Errorf("%w (pid %d%s) for %s (lock %s)", ErrHeld, cred.Pid, command(int(cred.Pid)), key, name)
	}
}

func command(pid int) string {
	if pid <= 0 {
		return ""
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return ""
	}
	return " (" + strings.TrimSpace(string(b)) + ")"
}

func (l *Lock) accept() {
	defer close(l.done)
	busy := make(chan struct{}, maxHandlers)
	for {
		c, err := l.ln.AcceptUnix()
		if err != nil {
			return
		}
		h := l.handler.Load()
		if h == nil {
			_ = c.Close()
			continue
		}
		select {
		case busy <- struct{}{}:
		default:
			_ = c.Close()
			continue
		}
		l.conns.Add(1)
		go func() {
			defer l.conns.Done()
			defer func() { <-busy }()
			defer c.Close()
			(*h)(c)
		}()
	}
}

// Serve runs h on each later connection in its own goroutine, then closes it; h must
// return in bounded time. nil: close connections.
func (l *Lock) Serve(h func(*net.UnixConn)) {
	if h == nil {
		l.handler.Store(nil)
		return
	}
	l.handler.Store(&h)
}

// SocketName is the lock's socket name.
func (l *Lock) SocketName() string { return l.name }

// Release gives the lock up and waits for running handlers; repeated calls are safe.
func (l *Lock) Release() error {
	err := l.ln.Close()
	<-l.done
	l.conns.Wait()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Dial connects to key's socket in the caller's netns and returns the listener's credentials.
func Dial(key string, timeout time.Duration) (*net.UnixConn, *unix.Ucred, error) {
	return DialName(Name(key), timeout)
}

// DialName is Dial by socket name, as Name and Listening give it.
func DialName(name string, timeout time.Duration) (*net.UnixConn, *unix.Ucred, error) {
	c, err := net.DialTimeout("unix", name, timeout)
	if err != nil {
		return nil, nil, err
	}
	uc := c.(*net.UnixConn)
	cred, err := PeerCred(uc)
	if err != nil {
		_ = c.Close()
		return nil, nil, err
	}
	return uc, cred, nil
}

func holder(name string) (*unix.Ucred, error) {
	c, err := net.DialTimeout("unix", name, time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return PeerCred(c.(*net.UnixConn))
}

// PeerCred is the other end's SO_PEERCRED; PID 0 is in a PID namespace we cannot see.
func PeerCred(c *net.UnixConn) (*unix.Ucred, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := rc.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	if credErr != nil {
		return nil, fmt.Errorf("SO_PEERCRED: %w", credErr)
	}
	return cred, nil
}

const unixTable = "/proc/thread-self/net/unix" // the calling thread's netns

// Listening lists, sorted, the lock names listened on in the caller's netns.
func Listening() ([]string, error) {
	data, err := os.ReadFile(unixTable)
	if err != nil {
		return nil, fmt.Errorf("listing the instance locks: %w", err)
	}
	return parseUnixTable(data), nil
}

// parseUnixTable picks our abstract listening stream sockets, sorted and unique, out of
// the table (the kernel writes the NUL as '@'; names with blanks are not ours).
func parseUnixTable(data []byte) []string {
	const (
		acceptCon  = 0x10000 // __SO_ACCEPTCON: listening
		sockStream = 1
	)
	var out []string
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) != 8 || !strings.HasPrefix(f[7], "@"+namePrefix) || len(f[7])-1 > maxNameLen {
			continue
		}
		flags, err1 := strconv.ParseUint(f[3], 16, 32)
		typ, err2 := strconv.ParseUint(f[4], 16, 16)
		if err1 != nil || err2 != nil || flags&acceptCon == 0 || typ != sockStream {
			continue
		}
		out = append(out, f[7])
	}
	slices.Sort(out)
	return slices.Compact(out)
}
