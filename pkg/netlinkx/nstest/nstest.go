// Package nstest gives tests uniquely named network namespaces, removed even when a test fails.
package nstest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NS is a named network namespace owned by one test.
type NS struct {
	Name   string
	NsH    netns.NsHandle  // open handle to the namespace (closed in cleanup)
	Handle *netlink.Handle // netlink handle whose sockets live in the namespace
}

// RequireRoot skips the test unless it runs as root (needed for namespaces).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces; skipping")
	}
}

// New creates the namespace <prefix><random hex>, deleted at t.Cleanup; it skips unless root.
func New(t testing.TB, prefix string) *NS {
	t.Helper()
	RequireRoot(t)
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	name := prefix + hex.EncodeToString(rnd[:])

	type result struct {
		h   netns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	// The thread stays locked, so the runtime discards it with the goroutine: no namespace leaks.
	go func() {
		runtime.LockOSThread()
		h, err := netns.NewNamed(name)
		ch <- result{h, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("create netns %s: %v", name, r.err)
	}
	ns := &NS{Name: name, NsH: r.h}
	t.Cleanup(func() {
		if ns.Handle != nil {
			ns.Handle.Close()
		}
		_ = ns.NsH.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	h, err := netlink.NewHandleAt(r.h, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", name, err)
	}
	ns.Handle = h
	return ns
}

// Do runs f on a discarded OS thread inside the namespace (for per-namespace /proc/sys).
func (ns *NS) Do(f func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := netns.Set(ns.NsH); err != nil {
			ch <- fmt.Errorf("enter netns %s: %w", ns.Name, err)
			return
		}
		ch <- f()
	}()
	return <-ch
}

// Sysctl returns a /proc/sys writer inside the namespace, as the backends take it.
func (ns *NS) Sysctl() func(path, value string) error {
	return func(path, value string) error {
		return ns.Do(func() error { return os.WriteFile(path, []byte(value), 0o644) })
	}
}

// ReadFile reads a file (such as /proc/sys/net/...) from inside the namespace.
func (ns *NS) ReadFile(path string) (string, error) {
	var out []byte
	err := ns.Do(func() error {
		b, err := os.ReadFile(path)
		out = b
		return err
	})
	return string(out), err
}
