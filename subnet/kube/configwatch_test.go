package kube

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestWatchFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "net-conf.json")
	if err := os.WriteFile(path, []byte("v1"), 0o644); err != nil {
		t.Fatal(err)
	}
	texts := make(chan string, 64)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); watchFile(ctx, path, 5*time.Millisecond, func(s string) { texts <- s }) }()
	until := func(want string) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case got := <-texts:
				if got == want {
					return
				}
			case <-deadline:
				t.Fatalf("%q not delivered", want)
			}
		}
	}
	until("v1")
	// Replaced by a rename, as kubelet's atomic writer updates a ConfigMap volume.
	if err := os.WriteFile(path+".new", []byte("v2"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	until("v2")
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	until("")
	cancel()
	<-done
}
