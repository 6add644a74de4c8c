package etcd

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-go/flannel/pkg/observe"
)

// recorder is an observe.Observer that keeps every datastore call.
type recorder struct {
	observe.Nop
	mu       sync.Mutex
	errors   map[string]int
	lastErr  map[string]error
	restarts map[string]int
	live     map[string]int
	exps     []time.Time
}

func newRecorder() *recorder {
	return &recorder{errors: map[string]int{}, lastErr: map[string]error{}, restarts: map[string]int{}, live: map[string]int{}}
}

func (r *recorder) DatastoreError(op observe.Op, err error) {
	r.mu.Lock()
	r.errors[string(op)]++
	r.lastErr[string(op)] = err
	r.mu.Unlock()
}

func (r *recorder) last(op observe.Op) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastErr[string(op)]
}
func (r *recorder) WatchRestarted(w observe.Kind, _ error) {
	r.mu.Lock()
	r.restarts[string(w)]++
	r.mu.Unlock()
}
func (r *recorder) WatchLive(w observe.Kind) { r.mu.Lock(); r.live[string(w)]++; r.mu.Unlock() }
func (r *recorder) LeaseExpiration(t time.Time) {
	r.mu.Lock()
	r.exps = append(r.exps, t)
	r.mu.Unlock()
}

func (r *recorder) count(m map[string]int, k observe.Kind) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return m[string(k)]
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The lease watch reports itself live, and Health follows etcd through an outage.
func TestObserverWatchLiveAndHealth(t *testing.T) {
	cli, p := setup(t, `{"Network":"10.5.0.0/16"}`)
	mustPut(t, cli, subnets+"10.5.1.0-24", leaseValue("198.51.100.1"))
	m := newManager(t, Config{Endpoints: []string{p.Endpoint()}})
	rec := newRecorder()
	m.SetObserver(rec)
	out := startWatch(t, m)
	if r := next(t, out, 30*time.Second); !r.IsSnapshot() {
		t.Fatalf("want a snapshot, got %+v", r)
	}
	eventually(t, 10*time.Second, "WatchLive(leases)", func() bool { return rec.count(rec.live, observe.LeasesWatch) > 0 })
	eventually(t, 10*time.Second, "a healthy connection", func() bool { return m.Health() == nil })

	p.Kill()
	eventually(t, 30*time.Second, "Health to report the outage", func() bool {
		err := m.Health()
		return err != nil && strings.Contains(err.Error(), "etcd connection is")
	})
	t.Logf("during the outage: %v", m.Health())
	if err := p.Restart(tctx(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "Health after etcd is back", func() bool { return m.Health() == nil })
	mustPut(t, cli, subnets+"10.5.2.0-24", leaseValue("198.51.100.2"))
	for {
		r := next(t, out, 20*time.Second)
		if r.IsSnapshot() || (len(r.Events) > 0 && r.Events[0].Lease.Key() == "10.5.2.0-24") {
			break
		}
	}
	m.Close()
	if err := m.Health(); err == nil {
		t.Fatal("a closed manager reports healthy")
	}
}

// Losing etcd under a lease watch is reported though the client bridges it silently: each
// failed attempt is a connect error naming endpoint and cause; one restart, then live.
func TestObserverConnectionLoss(t *testing.T) {
	cli, p := setup(t, `{"Network":"10.5.0.0/16"}`)
	m := newManager(t, Config{Endpoints: []string{p.Endpoint()}})
	rec := newRecorder()
	m.SetObserver(rec)
	out := startWatch(t, m)
	if r := next(t, out, 30*time.Second); !r.IsSnapshot() {
		t.Fatalf("want a snapshot, got %+v", r)
	}
	eventually(t, 10*time.Second, "a healthy connection", func() bool { return m.Health() == nil })
	live := rec.count(rec.live, observe.LeasesWatch)

	p.Kill()
	eventually(t, 30*time.Second, "two failed connection attempts", func() bool { return rec.count(rec.errors, observe.Kind(observe.Connect)) >= 2 })
	err := rec.last(observe.Connect)
	if want := "connecting to etcd: " + p.Endpoint() + ": connection refused (nothing listens on that address and port)"; err == nil || err.Error() != want {
		t.Errorf("connect error %q, want %q", err, want)
	}
	if n := rec.count(rec.restarts, observe.LeasesWatch); n != 1 {
		t.Errorf("lease watch restarts %d during one outage, want 1", n)
	}
	// The watch breaks as etcd dies: its probe finds the port closed or etcd still closing it.
	if n, err := rec.count(rec.errors, observe.Kind(observe.Watch)), rec.last(observe.Watch); n != 1 || err == nil ||
		!(strings.Contains(err.Error(), "connection refused") || strings.Contains(err.Error(), "the server closed the connection")) {
		t.Errorf("lease watch errors %d (%v) during one outage, want 1 naming the cause", n, err)
	}
	if err := p.Restart(tctx(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the lease watch live again", func() bool { return rec.count(rec.live, observe.LeasesWatch) > live })
	mustPut(t, cli, subnets+"10.5.2.0-24", leaseValue("198.51.100.2"))
	for {
		r := next(t, out, 20*time.Second)
		if len(r.Events) > 0 && r.Events[0].Lease.Key() == "10.5.2.0-24" {
			break
		}
	}
	if n := rec.count(rec.restarts, observe.LeasesWatch); n != 1 {
		t.Errorf("lease watch restarts %d after one outage, want 1", n)
	}
}

// With one of two endpoints down, failed attempts are counted; the watch stays unbroken.
func TestObserverOneEndpointDown(t *testing.T) {
	_, p := setup(t, `{"Network":"10.5.0.0/16"}`)
	dead := closedPort(t)
	m := newManager(t, Config{Endpoints: []string{dead, p.Endpoint()}})
	rec := newRecorder()
	m.SetObserver(rec)
	out := startWatch(t, m)
	if r := next(t, out, 30*time.Second); !r.IsSnapshot() {
		t.Fatalf("want a snapshot, got %+v", r)
	}
	eventually(t, 30*time.Second, "failed attempts to the dead endpoint", func() bool { return rec.count(rec.errors, observe.Kind(observe.Connect)) >= 2 })
	if err := rec.last(observe.Connect); err == nil || !strings.Contains(err.Error(), dead+": connection refused") {
		t.Errorf("connect error %v, want it to name %s", err, dead)
	}
	time.Sleep(2 * time.Second)
	if n, r := rec.count(rec.errors, observe.Kind(observe.Watch)), rec.count(rec.restarts, observe.LeasesWatch); n != 0 || r != 0 {
		t.Errorf("watch errors %d, restarts %d with a live endpoint left, want none", n, r)
	}
	if err := m.Health(); err != nil {
		t.Errorf("Health with a live endpoint left: %v", err)
	}
}

// A compaction past the watch revision restarts the watch (counted) with a new snapshot.
func TestObserverWatchRestartOnCompaction(t *testing.T) {
	cli, p := setup(t, `{"Network":"10.5.0.0/16"}`)
	mustPut(t, cli, subnets+"10.5.1.0-24", leaseValue("198.51.100.1"))
	m := newManager(t, Config{Endpoints: []string{p.Endpoint()}})
	rec := newRecorder()
	m.SetObserver(rec)
	paused, resume := make(chan struct{}), make(chan struct{})
	calls := 0
	m.beforeWatch = func(int64) {
		calls++
		if calls == 1 {
			close(paused)
			<-resume
		}
	}
	out := startWatch(t, m)
	next(t, out, 30*time.Second)
	select {
	case <-paused:
	case <-time.After(10 * time.Second):
		t.Fatal("watcher did not reach the watch")
	}
	mustPut(t, cli, subnets+"10.5.2.0-24", leaseValue("198.51.100.2"))
	last := mustPut(t, cli, subnets+"10.5.3.0-24", leaseValue("198.51.100.3"))
	if _, err := cli.Compact(tctx(t, 5*time.Second), last.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	liveBefore := rec.count(rec.live, observe.LeasesWatch)
	close(resume)
	if r := next(t, out, 30*time.Second); !r.IsSnapshot() {
		t.Fatalf("after compaction want a snapshot, got %+v", r)
	}
	eventually(t, 10*time.Second, "the restart to be reported", func() bool { return rec.count(rec.restarts, observe.LeasesWatch) == 1 })
	eventually(t, 10*time.Second, "the watch live again", func() bool { return rec.count(rec.live, observe.LeasesWatch) > liveBefore })
}

// KeepLease reports its starting and each renewed expiration; its watch reports live.
func TestObserverLeaseExpiration(t *testing.T) {
	_, p := setup(t, `{"Network":"10.5.0.0/16"}`)
	m := newManager(t, Config{Endpoints: []string{p.Endpoint()}, LeaseTTL: 3 * time.Second, RenewMargin: time.Second})
	rec := newRecorder()
	m.SetObserver(rec)
	l := acquire(t, m, attrsFor("198.51.100.1"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.KeepLease(ctx, l) }()
	defer func() { cancel(); <-done }()
	eventually(t, 15*time.Second, "two renewals", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return len(rec.exps) >= 3
	})
	rec.mu.Lock()
	exps := append([]time.Time(nil), rec.exps...)
	rec.mu.Unlock()
	if !exps[0].Equal(l.Expiration) {
		t.Errorf("first expiration %v, want the acquired lease's %v", exps[0], l.Expiration)
	}
	for i := 1; i < len(exps); i++ {
		if !exps[i].After(exps[i-1]) {
			t.Errorf("expiration %d (%v) not after %d (%v)", i, exps[i], i-1, exps[i-1])
		}
	}
	if rec.count(rec.live, observe.OwnLeaseWatch) == 0 {
		t.Error("the own-lease watch never reported itself live")
	}
}
