package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/healthz"
	"github.com/flannel-go/flannel/pkg/metrics"
	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

func TestLeaseValid(t *testing.T) {
	now := time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC)
	margin := time.Hour
	tests := []struct {
		name     string
		exp      time.Time
		renewErr error
		want     string // "" = valid
	}{
		{"never expires", time.Time{}, nil, ""},
		{"far from renewal", now.Add(23 * time.Hour), nil, ""},
		{"renewal due, within grace", now.Add(margin - renewGrace/2), errors.New("etcd down"), ""},
		{"renewal overdue", now.Add(margin - 2*renewGrace), nil, "lease not renewed: renewal was due at 2026-01-02T11:58:00Z, it expires at 2026-01-02T12:58:00Z"},
		{"renewal overdue with its error", now.Add(10 * time.Minute), errors.New("etcd down"), "it expires at 2026-01-02T12:10:00Z: etcd down"},
		{"expired", now.Add(-time.Second), nil, "lease expired at 2026-01-02T11:59:59Z and was not renewed"},
	}
	for _, tt := range tests {
		h := newDatastoreHealth(margin, func() time.Time { return now })
		h.LeaseExpiration(tt.exp)
		if tt.renewErr != nil {
			h.DatastoreError("renew", tt.renewErr)
		}
		err := h.leaseValid()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: got %v, want %q", tt.name, err, tt.want)
		}
	}
	// A renewal (new expiration) clears the overdue state and the remembered error.
	h := newDatastoreHealth(margin, func() time.Time { return now })
	h.LeaseExpiration(now.Add(time.Minute))
	h.DatastoreError("renew", errors.New("etcd down"))
	if h.leaseValid() == nil {
		t.Fatal("overdue lease reported valid")
	}
	h.LeaseExpiration(now.Add(24 * time.Hour))
	if err := h.leaseValid(); err != nil {
		t.Fatalf("renewed lease: %v", err)
	}
}

func TestWatchLive(t *testing.T) {
	h := newDatastoreHealth(time.Hour, time.Now)
	if err := h.watchLive(); err != nil {
		t.Fatalf("no reports yet: %v", err)
	}
	h.WatchRestarted(observe.LeasesWatch, errors.New("connection refused"))
	h.WatchRestarted(observe.OwnLeaseWatch, nil)
	err := h.watchLive()
	if err == nil || !strings.Contains(err.Error(), "leases watch broke: connection refused") || !strings.Contains(err.Error(), "own_lease watch broke: restarting") {
		t.Fatalf("got %v", err)
	}
	h.WatchLive(observe.LeasesWatch)
	h.WatchLive(observe.OwnLeaseWatch)
	if err := h.watchLive(); err != nil {
		t.Fatalf("live again: %v", err)
	}
	h.conn = func() error { return errors.New("etcd connection is TRANSIENT_FAILURE") }
	if err := h.watchLive(); err == nil || !strings.Contains(err.Error(), "TRANSIENT_FAILURE") {
		t.Fatalf("stalled connection: %v", err)
	}
}

// counter reads one flannel_ counter (or gauge) from the registry; -1 when absent.
func counter(t *testing.T, m *metrics.Metrics, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, mt := range mf.GetMetric() {
			for _, lp := range mt.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue next
				}
			}
			if mt.GetCounter() != nil {
				return mt.GetCounter().GetValue()
			}
			return mt.GetGauge().GetValue()
		}
	}
	return -1
}

// reportingNetwork adds routes through the observer, as a backend does, and counts
// its rounds.
type reportingNetwork struct {
	fakeBackend
	mu      sync.Mutex
	obs     observe.Observer
	add     int
	failing bool
	rounds  int
}

func (n *reportingNetwork) Reconcile(ctx context.Context, peers subnet.Peers) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.rounds++
	observe.Count(n.obs, observe.Route, observe.Add, n.add)
	if n.failing {
		return errors.New("route refused")
	}
	return nil
}

func (n *reportingNetwork) set(add int, failing bool) {
	n.mu.Lock()
	n.add, n.failing = add, failing
	n.mu.Unlock()
}

func (n *reportingNetwork) roundsDone() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.rounds
}

// testAdmitter is the daemon's admission stage for node 10.5.1.0/24 of 10.5.0.0/16,
// counting its rejections in m.
func testAdmitter(t *testing.T, m *metrics.Metrics) *subnet.Admitter {
	t.Helper()
	own := subnet.Lease{EnableIPv4: true, Subnet: netip.MustParsePrefix("10.5.1.0/24")}
	cfg, err := subnet.ParseConfig(`{"Network":"10.5.0.0/16"}`)
	if err != nil {
		t.Fatal(err)
	}
	return newAdmitter(cfg, &own, Deps{Metrics: m})
}

// TestRepairsAreChangesWithoutLeaseChange drives the reconcile loop round by round (a
// lease result or a kick each) and follows the metrics it and the drift observer feed.
func TestRepairsAreChangesWithoutLeaseChange(t *testing.T) {
	m := metrics.New()
	obs := &driftObserver{Observer: m}
	set := testAdmitter(t, m)
	nw := &reportingNetwork{obs: obs}
	peer := func(s string) subnet.Lease {
		return subnet.Lease{EnableIPv4: true, Subnet: netip.MustParsePrefix(s), Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.2")}}
	}
	route := func(op string) float64 {
		return counter(t, m, "flannel_kernel_object_changes_total", map[string]string{"kind": "route", "op": op})
	}
	runs := func(result string) float64 {
		return counter(t, m, "flannel_reconcile_runs_total", map[string]string{"result": result})
	}
	ctx, cancel := context.WithCancel(context.Background())
	results := make(chan subnet.WatchResult)
	kicks := make(chan struct{})
	ready := healthz.NewReadiness(checkConverged, checkLeaseWatch)
	loopDone := make(chan error, 1)
	// no timed rounds: each step below causes exactly one
	tm := timings{resync: time.Hour, reconcileBack: time.Hour}
	go func() { loopDone <- reconcileLoop(ctx, nw, set, results, m, obs, kicks, ready, tm, nil) }()
	defer func() {
		cancel()
		if err := <-loopDone; err != nil {
			t.Errorf("reconcileLoop: %v", err)
		}
	}()
	steps := []struct {
		name           string
		result         *subnet.WatchResult
		add            int
		failing        bool
		added, repaird float64
	}{
		{"first snapshot", &subnet.WatchResult{Snapshot: subnet.CandidatesOf(peer("10.5.2.0/24"), peer("10.5.3.0/24"))}, 2, false, 2, 0},
		{"resync, nothing drifted", nil, 0, false, 2, 0},
		{"resync after a route was deleted", nil, 1, false, 2, 1},
		{"a lease is added", &subnet.WatchResult{Events: []subnet.Event{{Type: subnet.EventAdded, Lease: peer("10.5.4.0/24")}}}, 1, false, 3, 1},
		{"a lease is added but the round fails", &subnet.WatchResult{Events: []subnet.Event{{Type: subnet.EventAdded, Lease: peer("10.5.5.0/24")}}}, 1, true, 4, 1},
		{"the retry still applies the lease change", nil, 1, false, 5, 1},
		{"drift again", nil, 3, false, 5, 4},
	}
	var ok, failed float64
	for i, s := range steps {
		nw.set(s.add, s.failing)
		if s.result != nil {
			results <- *s.result
		} else {
			kicks <- struct{}{}
		}
		if s.failing {
			failed++
		} else {
			ok++
		}
		waitFor(t, s.name, func() bool {
			return nw.roundsDone() == i+1 && runs("success") == ok && runs("failure") == failed
		})
		if a, r := route("added"), route("repaired"); a != s.added || r != s.repaird {
			t.Fatalf("%s: added %v repaired %v, want %v %v", s.name, a, r, s.added, s.repaird)
		}
	}
	if v := runs("failure"); v != 1 {
		t.Errorf("failed runs %v", v)
	}
	if v := runs("success"); v != 6 {
		t.Errorf("successful runs %v", v)
	}
	if v := counter(t, m, "flannel_peer_leases", nil); v != 4 {
		t.Errorf("peer leases %v", v)
	}
}

// observableManager is a fakeManager that reports to an Observer and has a connection
// health, as the etcd manager does.
type observableManager struct {
	*fakeManager
	mu   sync.Mutex
	obs  observe.Observer
	conn error
}

func (m *observableManager) SetObserver(o observe.Observer) { m.mu.Lock(); m.obs = o; m.mu.Unlock() }
func (m *observableManager) observer() observe.Observer {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.obs
}
func (m *observableManager) Health() error { m.mu.Lock(); defer m.mu.Unlock(); return m.conn }

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func httpGet(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestRunReadinessAndMetrics follows /readyz and /metrics through a node's life: waiting
// for the snapshot, ready, watch broken, datastore failing, lease expiring.
func TestRunReadinessAndMetrics(t *testing.T) {
	own := subnet.Lease{EnableIPv4: true, Subnet: netip.MustParsePrefix("10.5.85.0/24"), Expiration: time.Now().Add(24 * time.Hour)}
	fm := &fakeManager{
		configs: []string{`{"Network":"10.5.0.0/16","Backend":{"Type":"fake"}}`},
		lease:   own, results: make(chan subnet.WatchResult), revoke: make(chan struct{}),
	}
	om := &observableManager{fakeManager: fm}
	be := &fakeBackend{}
	met := metrics.New()
	port := freePort(t)
	deps := Deps{
		Manager:  om,
		Backends: map[string]backend.Constructor{"fake": func(*backend.ExternalInterface, *subnet.Config) (backend.Backend, error) { return be, nil }},
		LookupExtIface: func(*subnet.Config) (*backend.ExternalInterface, error) {
			return &backend.ExternalInterface{}, nil
		},
		Metrics: met,
	}
	opts := Config{SubnetFile: filepath.Join(t.TempDir(), "subnet.env"), HealthzAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, opts, deps, timings{configRetry: time.Millisecond, acquireRetry: time.Millisecond, acquireMax: time.Millisecond, resync: time.Hour, reconcileBack: time.Millisecond})
	}()
	defer func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	readyz := func(wantCode int, want string) {
		t.Helper()
		var code int
		var body string
		waitFor(t, fmt.Sprintf("/readyz %d %q", wantCode, want), func() bool {
			code, body = httpGet(base + "/readyz")
			return code == wantCode && strings.Contains(body, want)
		})
	}
	// Before the first lease snapshot: only the watch and the kernel are pending.
	waitFor(t, "/readyz waiting for the lease snapshot only", func() bool {
		code, body := httpGet(base + "/readyz")
		return code == 503 && body == "flanneld is not ready yet\nkernel-converged: not done yet\nlease-watch: not done yet\n"
	})
	// A rejected lease beside the peer does not make the node unready.
	peer := subnet.Lease{EnableIPv4: true, Subnet: netip.MustParsePrefix("10.5.9.0/24"), Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.9")}}
	garbage := subnet.Candidate{Lease: subnet.Lease{Subnet: netip.MustParsePrefix("10.5.10.0/24")},
		Origin: subnet.Origin{Defect: subnet.Reject(subnet.BadJSON, "invalid character 'x'")}}
	fm.results <- subnet.WatchResult{Snapshot: append(subnet.CandidatesOf(peer), garbage)}
	readyz(200, "flanneld is ready")
	if code, body := httpGet(base + "/healthz"); code != 200 || body != "flanneld is running" {
		t.Fatalf("/healthz %d %q", code, body)
	}

	obs := om.observer()
	if obs == nil {
		t.Fatal("the daemon gave the manager no observer")
	}
	obs.WatchRestarted(observe.LeasesWatch, errors.New("etcdserver: no leader"))
	readyz(503, "lease-watch: leases watch broke: etcdserver: no leader")
	obs.WatchLive(observe.LeasesWatch)
	readyz(200, "flanneld is ready")
	om.mu.Lock()
	om.conn = errors.New("etcd connection is TRANSIENT_FAILURE")
	om.mu.Unlock()
	readyz(503, "lease-watch: etcd connection is TRANSIENT_FAILURE")
	om.mu.Lock()
	om.conn = nil
	om.mu.Unlock()
	obs.LeaseExpiration(time.Now().Add(-time.Minute))
	readyz(503, "lease-valid: lease expired at")
	_, verbose := httpGet(base + "/readyz?verbose")
	for _, want := range []string{"[+]kernel-converged ok", "[+]lease-watch ok", "[-]lease-valid: lease expired", "[+]subnet-file ok"} {
		if !strings.Contains(verbose, want) {
			t.Errorf("verbose /readyz lacks %q:\n%s", want, verbose)
		}
	}
	obs.DatastoreError("renew", errors.New("x"))

	code, body := httpGet(base + "/metrics")
	if code != 200 {
		t.Fatalf("/metrics %d", code)
	}
	for _, want := range []string{
		"flannel_peer_leases 1",
		`flannel_lease_events_total{type="snapshot"} 1`,
		`flannel_reconcile_runs_total{result="success"} 1`,
		`flannel_datastore_watch_restarts_total{watch="leases"} 1`,
		`flannel_datastore_errors_total{op="renew"} 1`,
		`flannel_leases_rejected_total{reason="bad_json"} 1`,
		`flannel_leases_rejected_total{reason="overlaps_peer"} 0`,
		"process_cpu_seconds_total",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// The backend's receive drops reach the metrics unchanged, whatever the drift state.
func TestPacketsDroppedForwarded(t *testing.T) {
	m := metrics.New()
	obs := &driftObserver{Observer: observe.Tee{m, newDatastoreHealth(time.Hour, time.Now)}}
	obs.drift.Store(true)
	obs.PacketsDropped("unknown_peer", 0)
	obs.PacketsDropped("unknown_peer", 3)
	if v := counter(t, m, "flannel_udp_dropped_packets_total", map[string]string{"reason": "unknown_peer"}); v != 3 {
		t.Errorf("flannel_udp_dropped_packets_total{reason=unknown_peer} = %v, want 3", v)
	}
}

// refusingNetwork is a backend whose rounds report peers the kernel refused (and
// succeed), or fail on its own objects.
type refusingNetwork struct {
	reportingNetwork
	refused int
}

func (n *refusingNetwork) Reconcile(ctx context.Context, peers subnet.Peers) error {
	n.mu.Lock()
	if n.refused > 0 {
		n.obs.PeerProgrammingFailures(observe.RefusedUnreachable, n.refused)
	}
	n.mu.Unlock()
	return n.reportingNetwork.Reconcile(ctx, peers)
}

// TestPeerRefusalsKeepTheNodeReady: a round that skipped refused peers succeeds and counts
// them without a retry; a round failing on the backend's own objects fails the check.
func TestPeerRefusalsKeepTheNodeReady(t *testing.T) {
	m := metrics.New()
	obs := &driftObserver{Observer: m}
	set := testAdmitter(t, m)
	nw := &refusingNetwork{reportingNetwork: reportingNetwork{obs: obs}, refused: 1}
	ctx, cancel := context.WithCancel(context.Background())
	results := make(chan subnet.WatchResult)
	kicks := make(chan struct{})
	ready := healthz.NewReadiness(checkConverged)
	loopDone := make(chan error, 1)
	// a failed round is retried after reconcileBack; no resync
	tm := timings{resync: time.Hour, reconcileBack: 50 * time.Millisecond}
	go func() { loopDone <- reconcileLoop(ctx, nw, set, results, m, obs, kicks, ready, tm, nil) }()
	defer func() {
		cancel()
		if err := <-loopDone; err != nil {
			t.Errorf("reconcileLoop: %v", err)
		}
	}()
	converged := func() error { return ready.Checks()[0].Err }
	refused := func() float64 {
		return counter(t, m, "flannel_peer_programming_failures_total", map[string]string{"reason": observe.RefusedUnreachable})
	}
	results <- subnet.WatchResult{Snapshot: subnet.CandidatesOf(subnet.Lease{EnableIPv4: true, Subnet: netip.MustParsePrefix("10.5.2.0/24"),
		Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.2")}})}
	waitFor(t, "a round with a refused peer", func() bool { return nw.roundsDone() == 1 && converged() == nil })
	if v := refused(); v != 1 {
		t.Errorf("refusals counted %v, want 1", v)
	}
	time.Sleep(4 * tm.reconcileBack)
	if n := nw.roundsDone(); n != 1 {
		t.Errorf("%d rounds after a round with a refused peer, want no retry", n)
	}

	nw.set(0, true)
	kicks <- struct{}{}
	waitFor(t, "a failed round", func() bool { return converged() != nil })
	nw.set(0, false)
	waitFor(t, "the retry", func() bool { return converged() == nil })
	if v := counter(t, m, "flannel_reconcile_runs_total", map[string]string{"result": "failure"}); v < 1 {
		t.Errorf("failed runs %v", v)
	}
}
