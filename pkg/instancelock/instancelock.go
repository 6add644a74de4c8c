// Package instancelock keeps two flanneld instances from running for the same network on
// the same node. A lock is an abstract unix socket ("@flannel-go/<key>") bound by the
// holder: abstract socket names live in the network namespace, so the lock is scoped to
// exactly the namespace whose kernel state the daemon owns, needs no file system, and is
// released by the kernel the moment the holder exits, even after kill -9 (a restarted
// daemon never finds a stale lock).
package instancelock

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// namePrefix starts every lock's socket name (after the leading NUL of abstract names).
const namePrefix = "flannel-go/"

// maxNameLen is the longest abstract name: sun_path (108 bytes) minus the leading NUL.
const maxNameLen = 107

// ErrHeld means another process holds the lock; the error wrapping it names the holder.
var ErrHeld = errors.New("another flanneld instance holds the lock")

// Lock is a held instance lock. It is released by Release or when the process exits.
type Lock struct {
	ln   *net.UnixListener
	name string
	done chan struct{}
}

// Name is the socket name of a key, as shown by `ss -xl` ("@flannel-go/...").
//
// The key is kept readable: letters, digits and "/._-" stay, anything else becomes '_'.
// Keys that are too long, or that sanitising made ambiguous, end with a hash of the key.
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

// Acquire takes the lock for key in the caller's network namespace. When another process
// holds it, the error wraps ErrHeld and names the holder's PID when the kernel tells it.
func Acquire(key string) (*Lock, error) {
	name := Name(key)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: name, Net: "unix"})
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			if pid := holderPID(name); pid > 0 {
				return nil, fmt.Errorf("%w (pid %d) for %s (lock %s)", ErrHeld, pid, key, name)
			}
			return nil, fmt.Errorf("%w for %s (lock %s)", ErrHeld, key, name)
		}
		return nil, fmt.Errorf("instance lock %s: %w", name, err)
	}
	l := &Lock{ln: ln, done: make(chan struct{})}
	// Connections are only made by Acquire calls asking who holds the lock: close them,
	// so they do not pile up in the backlog. The loop ends with the listener.
	go func() {
		defer close(l.done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	return l, nil
}

// Release gives the lock up. It is safe to call more than once.
func (l *Lock) Release() error {
	err := l.ln.Close()
	<-l.done
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// holderPID asks the kernel which process listens on the abstract socket name (the
// credentials recorded at listen time), or returns 0.
func holderPID(name string) int {
	c, err := net.DialTimeout("unix", name, time.Second)
	if err != nil {
		return 0
	}
	defer c.Close()
	rc, err := c.(*net.UnixConn).SyscallConn()
	if err != nil {
		return 0
	}
	pid := 0
	_ = rc.Control(func(fd uintptr) {
		if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
			pid = int(cred.Pid)
		}
	})
	return pid
}
