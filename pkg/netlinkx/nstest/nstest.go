// Package nstest creates throwaway network namespaces for tests that need a kernel:
// each namespace gets a unique name with a caller-chosen prefix, a netlink handle bound
// to it, and is deleted in t.Cleanup even when the test fails. Nothing here touches the
// caller's own namespace.
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

// New creates the namespace <prefix><random hex> and registers its deletion with
// t.Cleanup. It skips the test when not root, fails it when the namespace cannot be made.
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
	// The namespace is created by a goroutine that locks its thread and never unlocks
	// it: when the goroutine ends, the Go runtime discards that thread, so the
	// namespace switch cannot leak into other goroutines.
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

// Do runs f on an OS thread that has entered the namespace (for example to read or write
// /proc/sys/net, which is per namespace). The thread is discarded afterwards.
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

// Sysctl returns a function that writes a /proc/sys file inside the namespace, in the
// shape the backends take for their sysctl writer.
func (ns *NS) Sysctl() func(path, value string) error {
	return func(path, value string) error {
		return ns.Do(func() error { return os.WriteFile(path, []byte(value), 0o644) })
	}
}

// ReadFile reads a file (typically under /proc/sys/net) from inside the namespace.
func (ns *NS) ReadFile(path string) (string, error) {
	var out []byte
	err := ns.Do(func() error {
		b, err := os.ReadFile(path)
		out = b
		return err
	})
	return string(out), err
}
