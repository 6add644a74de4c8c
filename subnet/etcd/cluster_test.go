package etcd

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flannel-go/flannel/e2e/etcdproc"
	"github.com/flannel-go/flannel/subnet"
)

// startCluster runs a three-member etcd cluster on 127.0.0.1.
func startCluster(t *testing.T) []*etcdproc.Proc {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a three-member etcd cluster")
	}
	if _, err := etcdproc.Binary(); err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	names := []string{"m1", "m2", "m3"}
	opts := make([]etcdproc.Options, len(names))
	var cluster []string
	for i, n := range names {
		opts[i] = etcdproc.Options{
			Name:      n,
			DataDir:   filepath.Join(dir, n),
			ClientURL: fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
			PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
		}
		cluster = append(cluster, n+"="+opts[i].PeerURL)
	}
	procs := make([]*etcdproc.Proc, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range opts {
		opts[i].InitialCluster = strings.Join(cluster, ",")
		wg.Add(1)
		go func() { // members wait for each other: start them together
			defer wg.Done()
			procs[i], errs[i] = etcdproc.Start(ctx, opts[i])
		}()
	}
	wg.Wait()
	for i, p := range procs {
		if p != nil {
			t.Cleanup(p.Kill)
		}
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
	}
	return procs
}

func waitLease(t *testing.T, out <-chan subnet.WatchResult, key string, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case r := <-out:
			if _, ok := byKey(r.Snapshot)[key]; ok {
				return
			}
			for _, e := range r.Events {
				if e.Type == subnet.EventAdded && e.Lease.Key() == key {
					return
				}
			}
		case <-deadline:
			t.Fatalf("lease %s not delivered within %v", key, d)
		}
	}
}

// Each of three members dies in turn; leases written through the others keep arriving,
// watch health recovers, and nothing is lost.
func TestWatchSurvivesMemberDeath(t *testing.T) {
	procs := startCluster(t)
	var eps []string
	for _, p := range procs {
		eps = append(eps, p.Endpoint())
	}
	admin := rawClient(t, eps[2], nil)
	mustPut(t, admin, DefaultPrefix+"/config", `{"Network":"10.5.0.0/16"}`)
	m := newManager(t, Config{Endpoints: eps})
	out := startWatch(t, m)
	if r := next(t, out, 20*time.Second); !r.IsSnapshot() {
		t.Fatalf("first result %+v", r)
	}
	for i, p := range procs {
		p.Kill()
		writer := rawClient(t, eps[(i+1)%len(eps)], nil)
		key := fmt.Sprintf("10.5.%d.0-24", 10+i)
		start := time.Now()
		// A write may time out while the survivors elect a new leader: retried.
		for attempt := 1; ; attempt++ {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := writer.Put(ctx, subnets+key, leaseValue(fmt.Sprintf("198.51.100.%d", 10+i)))
			cancel()
			if err == nil {
				break
			}
			if attempt == 10 {
				t.Fatalf("put %s: %v", key, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		written := time.Now()
		waitLease(t, out, key, 20*time.Second)
		t.Logf("member %d down: lease written through member %d after %v, delivered %v later", i+1, (i+1)%len(eps)+1,
			written.Sub(start).Round(time.Millisecond), time.Since(written).Round(time.Millisecond))
		deadline := time.Now().Add(20 * time.Second)
		for m.Health() != nil {
			if time.Now().After(deadline) {
				t.Fatalf("watch health with member %d down: %v", i+1, m.Health())
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err := p.Restart(tctx(t, 60*time.Second)); err != nil {
			t.Fatal(err)
		}
		// Back in the cluster before the next member goes, so the cluster keeps its quorum.
		cli := rawClient(t, p.Endpoint(), nil)
		deadline = time.Now().Add(60 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := cli.Get(ctx, "health")
			cancel()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("member %d did not rejoin: %v", i+1, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}
