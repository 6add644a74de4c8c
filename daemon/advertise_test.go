package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/subnet"
)

// watchingBackend is a backend whose network learns of changes by itself
// (backend.Watcher) and describes how it runs (backend.Describer).
type watchingBackend struct {
	fakeBackend
	kick      chan func()
	advertise chan func(subnet.LeaseAttrs)
	health    error
}

func (b *watchingBackend) Start(ctx context.Context, l *subnet.Lease) (backend.Network, error) {
	return b, nil
}

func (b *watchingBackend) Watch(ctx context.Context, kick func(), advertise func(subnet.LeaseAttrs)) {
	b.kick <- kick
	b.advertise <- advertise
	<-ctx.Done()
}

func (b *watchingBackend) Describe() string { return "userspace WireGuard: fake0" }
func (b *watchingBackend) Health() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.health
}

// updatingManager records UpdateLeaseAttrs calls and the leases KeepLease ran with.
type updatingManager struct {
	*fakeManager
	mu      sync.Mutex
	fail    int // fail this many updates first
	updates []subnet.LeaseAttrs
	kept    []subnet.Lease
}

func (m *updatingManager) KeepLease(ctx context.Context, l *subnet.Lease) error {
	m.mu.Lock()
	m.kept = append(m.kept, *l)
	m.mu.Unlock()
	return m.fakeManager.KeepLease(ctx, l)
}

func (m *updatingManager) UpdateLeaseAttrs(ctx context.Context, cfg *subnet.Config, l *subnet.Lease, attrs *subnet.LeaseAttrs) (*subnet.Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail > 0 {
		m.fail--
		return nil, errors.New("etcd unreachable")
	}
	m.updates = append(m.updates, *attrs)
	nl := *l
	nl.Attrs = *attrs
	return &nl, nil
}

func (m *updatingManager) snapshot() ([]subnet.LeaseAttrs, []subnet.Lease) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]subnet.LeaseAttrs(nil), m.updates...), append([]subnet.Lease(nil), m.kept...)
}

// Advertised attributes are written to the lease (retried while the manager fails) and
// the state file, and the lease is kept with them; kicks run Reconcile; description and
// health show in readiness.
func TestWatcherAdvertisesAndKicks(t *testing.T) {
	dir := t.TempDir()
	subnetFile := filepath.Join(dir, "subnet.env")
	own := subnet.Lease{EnableIPv4: true, Subnet: netip.MustParsePrefix("10.5.85.0/24")}
	fm := &fakeManager{configs: []string{`{"Network":"10.5.0.0/16","Backend":{"Type":"fake"}}`}, lease: own,
		results: make(chan subnet.WatchResult), revoke: make(chan struct{})}
	m := &updatingManager{fakeManager: fm, fail: 2}
	be := &watchingBackend{kick: make(chan func(), 1), advertise: make(chan func(subnet.LeaseAttrs), 1)}
	port := freePort(t)
	deps := Deps{
		Manager:        m,
		Backends:       map[string]backend.Constructor{"fake": func(*backend.ExternalInterface, *subnet.Config) (backend.Backend, error) { return be, nil }},
		LookupExtIface: func(*subnet.Config) (*backend.ExternalInterface, error) { return &backend.ExternalInterface{}, nil },
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	tm := timings{configRetry: time.Millisecond, acquireRetry: time.Millisecond, acquireMax: 2 * time.Millisecond, resync: time.Hour, reconcileBack: time.Millisecond}
	go func() {
		errc <- run(ctx, Config{SubnetFile: subnetFile, HealthzAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}, deps, tm)
	}()
	defer func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	kick, advertise := <-be.kick, <-be.advertise
	fm.results <- subnet.WatchResult{Snapshot: []subnet.Candidate{}}
	waitFor(t, "first reconcile", func() bool { return len(be.calls()) == 1 })
	kick()
	waitFor(t, "the kick's reconcile", func() bool { return len(be.calls()) == 2 })

	next := subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.11"), BackendType: "fake", BackendData: json.RawMessage(`{"PublicKey":"new"}`)}
	older := next
	older.BackendData = json.RawMessage(`{"PublicKey":"older"}`)
	advertise(older)
	advertise(next) // replaces older if the daemon has not taken it yet
	waitFor(t, "the update", func() bool {
		u, kept := m.snapshot()
		return len(u) > 0 && string(u[len(u)-1].BackendData) == `{"PublicKey":"new"}` &&
			string(kept[len(kept)-1].Attrs.BackendData) == `{"PublicKey":"new"}`
	})
	st, err := readState(statePath(subnetFile))
	if err != nil || st == nil || string(st.Attrs.BackendData) != `{"PublicKey":"new"}` || st.Key != "10.5.85.0-24" {
		t.Errorf("state after the update: %+v %v", st, err)
	}
	_, kept := m.snapshot()
	if kept[0].Key() != kept[len(kept)-1].Key() {
		t.Errorf("the kept lease changed subnet: %v", kept)
	}

	base := "http://127.0.0.1:" + strconv.Itoa(port)
	waitFor(t, "the backend's check", func() bool {
		code, body := httpGet(base + "/readyz?verbose")
		return code == 200 && strings.Contains(body, "[+]fake ok (userspace WireGuard: fake0)\n")
	})
	be.mu.Lock()
	be.health = errors.New("the userspace WireGuard device fake0 has stopped")
	be.mu.Unlock()
	waitFor(t, "the backend's failing check", func() bool {
		code, body := httpGet(base + "/readyz")
		return code == 503 && strings.Contains(body, "fake: the userspace WireGuard device fake0 has stopped")
	})
}

// Without an updating manager, advertised attributes are logged as needing a restart
// and the lease keeps being kept.
func TestKeepLeaseWithoutUpdater(t *testing.T) {
	fm := &fakeManager{revoke: make(chan struct{})}
	adv := newAttrsBox()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- keepLease(ctx, fm, &subnet.Config{}, &subnet.Lease{}, adv.c, func(*subnet.Lease) { t.Error("updated without an updater") }, nil, defaultTimings)
	}()
	adv.put(subnet.LeaseAttrs{BackendType: "fake"})
	time.Sleep(50 * time.Millisecond)
	close(fm.revoke)
	if err := <-done; !errors.Is(err, subnet.ErrLeaseRevoked) {
		t.Errorf("keepLease = %v, want the revocation KeepLease reported", err)
	}
	cancel()
}
