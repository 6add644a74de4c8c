package metrics

import (
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/flannel-go/flannel/pkg/observe"
)

func TestCounters(t *testing.T) {
	m := New()
	m.PeerLeases(3)
	m.LeaseResult(true, 0, 0)
	m.LeaseResult(false, 2, 1)
	m.Reconciled(3*time.Millisecond, nil)
	m.Reconciled(time.Second, errors.New("boom"))
	m.KernelObjects(observe.Route, observe.Add, 2)
	m.KernelObjects(observe.Route, observe.Repair, 1)
	m.KernelObjects(observe.FDB, observe.Remove, 4)
	m.KernelObjects(observe.Neigh, observe.Add, 0) // ignored
	m.DatastoreError("list", errors.New("x"))
	m.DatastoreError("list", errors.New("x"))
	m.WatchRestarted(observe.LeasesWatch, errors.New("x"))
	m.LeaseExpiration(time.Unix(1700000000, 500_000_000))
	m.TxChecksumOffload("flannel.1", false)
	m.PacketsDropped("unknown_peer", 0) // declared
	m.PacketsDropped("malformed", 0)
	m.PacketsDropped("malformed", 3)
	m.PacketsDropped("malformed", 2)
	m.PeerProgrammingFailures(observe.RefusedUnreachable, 2)
	m.PeerProgrammingFailures(observe.RefusedUnreachable, 1)
	m.PeerProgrammingFailures(observe.RefusedInvalid, 0) // ignored
	m.PeersSkipped(observe.SkippedOtherBackend, 2)
	m.PeersSkipped(observe.SkippedOtherBackend, 1) // a state: the last round's count
	m.LeasesRejected("overlaps_peer", 0)
	m.LeasesRejected("too_large", 1)
	m.LeasesRejected("too_large", 1)
	m.WireguardImplementation("userspace")

	tests := []struct {
		name string
		got  float64
		want float64
	}{
		{"peer leases", testutil.ToFloat64(m.peerLeases), 3},
		{"snapshots", testutil.ToFloat64(m.leaseEvents.WithLabelValues("snapshot")), 1},
		{"added events", testutil.ToFloat64(m.leaseEvents.WithLabelValues("added")), 2},
		{"removed events", testutil.ToFloat64(m.leaseEvents.WithLabelValues("removed")), 1},
		{"reconcile ok", testutil.ToFloat64(m.reconcileRuns.WithLabelValues("success")), 1},
		{"reconcile failed", testutil.ToFloat64(m.reconcileRuns.WithLabelValues("failure")), 1},
		{"routes added", testutil.ToFloat64(m.kernelObjects.WithLabelValues("route", "added")), 2},
		{"routes repaired", testutil.ToFloat64(m.kernelObjects.WithLabelValues("route", "repaired")), 1},
		{"fdb removed", testutil.ToFloat64(m.kernelObjects.WithLabelValues("fdb", "removed")), 4},
		{"neigh added", testutil.ToFloat64(m.kernelObjects.WithLabelValues("neigh", "added")), 0},
		{"list errors", testutil.ToFloat64(m.datastoreErrors.WithLabelValues("list")), 2},
		{"lease watch restarts", testutil.ToFloat64(m.watchRestarts.WithLabelValues("leases")), 1},
		{"own watch restarts", testutil.ToFloat64(m.watchRestarts.WithLabelValues("own_lease")), 0},
		{"expiry", testutil.ToFloat64(m.leaseExpiry), 1700000000.5},
		{"checksum", testutil.ToFloat64(m.txChecksum.WithLabelValues("flannel.1")), 0},
		{"udp drops declared", testutil.ToFloat64(m.udpDropped.WithLabelValues("unknown_peer")), 0},
		{"udp drops", testutil.ToFloat64(m.udpDropped.WithLabelValues("malformed")), 5},
		{"peers unreachable", testutil.ToFloat64(m.peerFailures.WithLabelValues("unreachable")), 3},
		{"peers invalid", testutil.ToFloat64(m.peerFailures.WithLabelValues("invalid")), 0},
		{"skipped, other backend", testutil.ToFloat64(m.peersSkipped.WithLabelValues("other_backend")), 1},
		{"skipped, other VNI", testutil.ToFloat64(m.peersSkipped.WithLabelValues("other_vni")), 0},
		{"rejected too large", testutil.ToFloat64(m.leasesRejected.WithLabelValues("too_large")), 2},
		{"rejected overlaps declared", testutil.ToFloat64(m.leasesRejected.WithLabelValues("overlaps_peer")), 0},
		{"wireguard userspace", testutil.ToFloat64(m.wgImpl.WithLabelValues("userspace")), 1},
		{"wireguard kernel", testutil.ToFloat64(m.wgImpl.WithLabelValues("kernel")), 0},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %v, want %v", tt.name, tt.got, tt.want)
		}
	}
	if n := testutil.CollectAndCount(m.reconcileDuration); n != 1 {
		t.Errorf("histogram series = %d", n)
	}
	m.TxChecksumOffload("flannel.1", true)
	m.LeaseExpiration(time.Time{})
	if v := testutil.ToFloat64(m.txChecksum.WithLabelValues("flannel.1")); v != 1 {
		t.Errorf("checksum after on = %v", v)
	}
	if v := testutil.ToFloat64(m.leaseExpiry); v != 0 {
		t.Errorf("expiry of a lease without TTL = %v", v)
	}
}

// TestExposition scrapes the handler as Prometheus would and checks the names, the
// pre-declared series and the process/Go collectors.
func TestExposition(t *testing.T) {
	m := New()
	m.KernelObjects(observe.Device, observe.Repair, 1)
	m.Reconciled(2*time.Millisecond, nil)
	m.PacketsDropped("unknown_peer", 0)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("status %d", rec.Code)
	}
	b, _ := io.ReadAll(rec.Body)
	body := string(b)
	for _, want := range []string{
		`flannel_kernel_object_changes_total{kind="device",op="repaired"} 1`,
		`flannel_kernel_object_changes_total{kind="rule",op="added"} 0`,
		`flannel_reconcile_runs_total{result="success"} 1`,
		`flannel_reconcile_duration_seconds_bucket{le="0.002"} 1`,
		`flannel_reconcile_duration_seconds_count 1`,
		`flannel_lease_events_total{type="snapshot"} 0`,
		`flannel_datastore_watch_restarts_total{watch="own_lease"} 0`,
		`flannel_peer_leases 0`,
		`flannel_lease_expiry_timestamp_seconds 0`,
		`flannel_udp_dropped_packets_total{reason="unknown_peer"} 0`,
		`flannel_peer_programming_failures_total{reason="unreachable"} 0`,
		`flannel_peer_programming_failures_total{reason="exists"} 0`,
		`flannel_peer_programming_failures_total{reason="invalid"} 0`,
		`flannel_peer_leases_skipped{reason="other_backend"} 0`,
		`flannel_peer_leases_skipped{reason="other_vni"} 0`,
		"process_resident_memory_bytes",
		"go_goroutines",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
}

// TestNamingConventions runs the Prometheus linter over our own metrics.
func TestNamingConventions(t *testing.T) {
	m := New()
	m.DatastoreError("renew", errors.New("x"))
	m.TxChecksumOffload("flannel.1", true)
	m.PacketsDropped("unknown_peer", 1)
	m.LeasesRejected("bad_json", 1)
	m.WireguardImplementation("kernel")
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	probs, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range probs {
		if strings.HasPrefix(p.Metric, "flannel_") {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	}
	var ours int
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "flannel_") {
			ours++
		}
	}
	if ours != 14 {
		t.Errorf("%d flannel_ metric families, want 14", ours)
	}
}

// TestRegistriesIndependent: two Metrics do not share state (no global registry).
func TestRegistriesIndependent(t *testing.T) {
	a, b := New(), New()
	a.PeerLeases(7)
	if v := testutil.ToFloat64(b.peerLeases); v != 0 {
		t.Fatalf("second Metrics sees %v", v)
	}
}

func TestNilSafe(t *testing.T) {
	var m *Metrics
	m.PeerLeases(1)
	m.LeaseResult(false, 0, 0)
	m.Reconciled(time.Second, nil)
	m.KernelObjects("route", "add", 1)
	m.TxChecksumOffload("x", true)
	m.PacketsDropped("x", 1)
	m.WireguardImplementation("kernel")
	m.DatastoreError("x", nil)
	m.WatchRestarted("x", nil)
	m.WatchLive("x")
	m.LeaseExpiration(time.Now())
	m.PeerProgrammingFailures("invalid", 1)
	m.LeasesRejected("bad_json", 1)
	if m.Registry() != nil {
		t.Fatal("nil Metrics has a registry")
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 404 {
		t.Fatalf("nil Metrics handler: %d", rec.Code)
	}
}
