package daemon

import (
	"context"
	"encoding/json"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/healthz"
	"github.com/flannel-go/flannel/pkg/kernelwatch"
	"github.com/flannel-go/flannel/pkg/metrics"
	"github.com/flannel-go/flannel/subnet"
)

// A kernel watch kick makes the daemon reconcile again with the current lease set; the
// watch gets the network's filter and ends with the daemon.
func TestKernelKickReconciles(t *testing.T) {
	own := subnet.Lease{EnableIPv4: true, Subnet: netip.MustParsePrefix("10.5.85.0/24")}
	m := &fakeManager{
		configs: []string{`{"Network":"10.5.0.0/16","Backend":{"Type":"fake"}}`},
		lease:   own,
		results: make(chan subnet.WatchResult),
		revoke:  make(chan struct{}),
	}
	be := &fakeBackend{}
	var mu sync.Mutex
	var kick func()
	var gotFilter kernelwatch.Filter
	watchEnded := make(chan struct{})
	deps := Deps{
		Manager:  m,
		Backends: map[string]backend.Constructor{"fake": func(*backend.ExternalInterface, *subnet.Config) (backend.Backend, error) { return be, nil }},
		LookupExtIface: func(*subnet.Config) (*backend.ExternalInterface, error) {
			return &backend.ExternalInterface{}, nil
		},
		KernelWatch: func(ctx context.Context, f kernelwatch.Filter, k func()) error {
			mu.Lock()
			kick, gotFilter = k, f
			mu.Unlock()
			k() // a kick before the first snapshot must not reconcile yet
			<-ctx.Done()
			close(watchEnded)
			return nil
		},
	}
	tm := timings{configRetry: time.Millisecond, acquireRetry: time.Millisecond, acquireMax: time.Millisecond, resync: time.Hour, reconcileBack: time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- run(ctx, Config{SubnetFile: filepath.Join(t.TempDir(), "subnet.env")}, deps, tm) }()

	waitFor(t, "kernel watch started", func() bool { mu.Lock(); defer mu.Unlock(); return kick != nil })
	mu.Lock()
	if !slices.Equal(gotFilter.Devices, []string{"fake0"}) {
		t.Errorf("watch filter %+v, want the network's", gotFilter)
	}
	k := kick
	mu.Unlock()
	time.Sleep(50 * time.Millisecond)
	if n := len(be.calls()); n != 0 {
		t.Fatalf("%d reconciles before the first snapshot", n)
	}
	peer := subnet.Lease{EnableIPv4: true, Subnet: netip.MustParsePrefix("10.5.9.0/24"),
		Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.9"), BackendType: "fake", BackendData: json.RawMessage(`{}`)}}
	m.results <- subnet.WatchResult{Snapshot: subnet.CandidatesOf(peer)}
	waitFor(t, "first reconcile", func() bool { return len(be.calls()) >= 1 })
	before := len(be.calls())
	k()
	waitFor(t, "reconcile after a kick", func() bool { return len(be.calls()) == before+1 })
	if c := be.calls()[before]; len(c) != 1 || c[0].Key() != "10.5.9.0-24" {
		t.Errorf("kicked reconcile got peers %v, want the lease set", c)
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not end")
	}
	select {
	case <-watchEnded:
	default:
		t.Error("run returned before the kernel watch ended")
	}
}

// settlingBackend is a fakeBackend whose Settled answer the test sets.
type settlingBackend struct {
	fakeBackend
	settled atomic.Bool
}

func (b *settlingBackend) Settled() bool { return b.settled.Load() }

// startLoop runs reconcileLoop on nw until the test ends, with the given resync period.
func startLoop(t *testing.T, nw backend.Network, resync time.Duration) (results chan subnet.WatchResult, kicks chan struct{}) {
	m := metrics.New()
	ctx, cancel := context.WithCancel(context.Background())
	results, kicks = make(chan subnet.WatchResult), make(chan struct{})
	loopDone := make(chan error, 1)
	tm := timings{resync: resync, reconcileBack: time.Hour}
	go func() {
		loopDone <- reconcileLoop(ctx, nw, testAdmitter(t, m), results, m, &driftObserver{Observer: m}, kicks, healthz.NewReadiness(checkConverged), tm, nil)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-loopDone; err != nil {
			t.Errorf("reconcileLoop: %v", err)
		}
	})
	return results, kicks
}

func testPeer(sn string) subnet.Lease {
	return subnet.Lease{EnableIPv4: true, Subnet: netip.MustParsePrefix(sn), Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.9")}}
}

// A kick is dropped while the backend says only its own writes happened; a changed lease
// set and an unsettled backend still reconcile.
func TestSettledBackendSkipsKicks(t *testing.T) {
	be := &settlingBackend{}
	be.settled.Store(true)
	results, kicks := startLoop(t, be, time.Hour)
	rounds := func() int { return len(be.calls()) }
	// kick kicks, then sends two results that change nothing: the loop has taken its
	// decision on the kick when it takes the second.
	kick := func() {
		kicks <- struct{}{}
		results <- subnet.WatchResult{}
		results <- subnet.WatchResult{}
	}

	results <- subnet.WatchResult{Snapshot: subnet.CandidatesOf(testPeer("10.5.2.0/24"))}
	waitFor(t, "the first round", func() bool { return rounds() == 1 })
	kick()
	if n := rounds(); n != 1 {
		t.Errorf("%d rounds after a kick with the backend settled, want 1", n)
	}
	results <- subnet.WatchResult{Events: []subnet.Event{{Type: subnet.EventAdded, Lease: testPeer("10.5.3.0/24")}}}
	waitFor(t, "a round for a new lease", func() bool { return rounds() == 2 })
	be.settled.Store(false)
	kick()
	waitFor(t, "a round for a kick with the backend unsettled", func() bool { return rounds() == 3 })
}

// The periodic resync reconciles even while the backend says it is settled.
func TestResyncIgnoresSettled(t *testing.T) {
	be := &settlingBackend{}
	be.settled.Store(true)
	results, _ := startLoop(t, be, 20*time.Millisecond)
	results <- subnet.WatchResult{Snapshot: subnet.CandidatesOf(testPeer("10.5.2.0/24"))}
	waitFor(t, "rounds of the resync", func() bool { return len(be.calls()) >= 3 })
}
