// Package metrics holds flanneld's Prometheus metrics in a registry of their own. Every
// method is safe for concurrent use and a no-op on a nil *Metrics.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/pkg/observe"
)

// Label values of flannel_kernel_object_changes_total{op}.
const (
	OpAdded    = "added"
	OpRemoved  = "removed"
	OpRepaired = "repaired"
)

// Label values of flannel_lease_events_total{type}.
const (
	EventAdded    = "added"
	EventRemoved  = "removed"
	EventSnapshot = "snapshot"
)

// Metrics is flanneld's set of metrics and the registry that serves them.
type Metrics struct {
	reg *prometheus.Registry

	peerLeases        prometheus.Gauge
	leaseEvents       *prometheus.CounterVec
	reconcileRuns     *prometheus.CounterVec
	reconcileDuration prometheus.Histogram
	kernelObjects     *prometheus.CounterVec
	datastoreErrors   *prometheus.CounterVec
	watchRestarts     *prometheus.CounterVec
	leaseExpiry       prometheus.Gauge
	txChecksum        *prometheus.GaugeVec
	udpDropped        *prometheus.CounterVec
	peerFailures      *prometheus.CounterVec
	peersSkipped      *prometheus.GaugeVec
	leasesRejected    *prometheus.CounterVec
	wgImpl            *prometheus.GaugeVec
}

var _ observe.Observer = (*Metrics)(nil)

// New creates the metrics in a new registry, with process and Go runtime collectors.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		peerLeases: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flannel_peer_leases",
			Help: "Subnet leases of other nodes currently known (the node's own lease excluded).",
		}),
		leaseEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flannel_lease_events_total",
			Help: "Lease watch deliveries received: lease added or changed, lease removed, full snapshot.",
		}, []string{"type"}),
		reconcileRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flannel_reconcile_runs_total",
			Help: "Reconcile rounds of the kernel state against the lease set, by result (success, failure).",
		}, []string{"result"}),
		reconcileDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "flannel_reconcile_duration_seconds",
			Help:    "Duration of reconcile rounds.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16), // 0.5 ms .. ~16 s
		}),
		kernelObjects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flannel_kernel_object_changes_total",
			Help: "Kernel objects changed by kind (route, fdb, neigh, device, address, rule) and op: " +
				"added or removed for a lease change, repaired when the lease set had not changed (drift undone).",
		}, []string{"kind", "op"}),
		datastoreErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flannel_datastore_errors_total",
			Help: "Failed datastore operations (retried), by operation.",
		}, []string{"op"}),
		watchRestarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flannel_datastore_watch_restarts_total",
			Help: "Datastore watches re-opened after they broke, by watch (leases, own_lease).",
		}, []string{"watch"}),
		leaseExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flannel_lease_expiry_timestamp_seconds",
			Help: "Expiration of the node's own subnet lease in Unix seconds (0: the lease does not expire).",
		}),
		txChecksum: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flannel_vxlan_tx_checksum_offload",
			Help: "Transmit checksum offload of a vxlan device as set by the ChecksumOffload option (1 on, 0 off).",
		}, []string{"device"}),
		udpDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flannel_udp_dropped_packets_total",
			Help: "Packets the udp backend received and did not write to its TUN device, by reason: unknown_peer (the datagram's source " +
				"is no peer's public IP), source_not_in_peer_subnet, destination_not_in_own_subnet, malformed, ttl_expired.",
		}, []string{"reason"}),
		peerFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flannel_peer_programming_failures_total",
			Help: "Peers the kernel refused to program, one per peer and attempt, by reason: unreachable (address or gateway " +
				"not reachable), exists (a foreign object in the way), invalid (values the kernel rejects). The other peers are programmed.",
		}, []string{"reason"}),
		peersSkipped: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flannel_peer_leases_skipped",
			Help: "Sound peer leases the last reconcile round skipped, by reason: other_backend (the peer runs another backend), " +
				"other_vni (its vxlan uses another VNI). Pods on such a peer are unreachable from this node.",
		}, []string{"reason"}),
		leasesRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flannel_leases_rejected_total",
			Help: "Peer leases the admission rule rejected (each counted once per key and revision), by reason.",
		}, []string{"reason"}),
		wgImpl: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flannel_wireguard_implementation",
			Help: "The WireGuard the wireguard backend runs its devices in: 1 for the one chosen at start (kernel or userspace), 0 for the other.",
		}, []string{"impl"}),
	}
	m.reg.MustRegister(
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector(),
		m.peerLeases, m.leaseEvents, m.reconcileRuns, m.reconcileDuration, m.kernelObjects,
		m.datastoreErrors, m.watchRestarts, m.leaseExpiry, m.txChecksum, m.udpDropped, m.peerFailures,
		m.peersSkipped, m.leasesRejected, m.wgImpl,
	)
	// Declared label values exist at 0 from the start, so rate() sees the first increment.
	for _, t := range []string{EventAdded, EventRemoved, EventSnapshot} {
		m.leaseEvents.WithLabelValues(t)
	}
	for _, r := range []string{"success", "failure"} {
		m.reconcileRuns.WithLabelValues(r)
	}
	for _, k := range observe.KernelKinds() {
		for _, op := range []string{OpAdded, OpRemoved, OpRepaired} {
			m.kernelObjects.WithLabelValues(string(k), op)
		}
	}
	for _, w := range []observe.Kind{observe.LeasesWatch, observe.OwnLeaseWatch} {
		m.watchRestarts.WithLabelValues(string(w))
	}
	for _, r := range observe.RefusalReasons() {
		m.peerFailures.WithLabelValues(r)
	}
	for _, r := range observe.SkipReasons() {
		m.peersSkipped.WithLabelValues(r)
	}
	return m
}

// Registry is the registry holding the metrics.
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// Handler serves the metrics in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, ErrorLog: errorLog{}})
}

type errorLog struct{}

func (errorLog) Println(v ...any) { klog.ErrorS(nil, "Serving metrics", "err", v) }

// PeerLeases sets the number of peer leases known.
func (m *Metrics) PeerLeases(n int) {
	if m == nil {
		return
	}
	m.peerLeases.Set(float64(n))
}

// LeaseResult counts one lease watch delivery: a snapshot, or its added and removed events.
func (m *Metrics) LeaseResult(snapshot bool, added, removed int) {
	if m == nil {
		return
	}
	if snapshot {
		m.leaseEvents.WithLabelValues(EventSnapshot).Inc()
		return
	}
	if added > 0 {
		m.leaseEvents.WithLabelValues(EventAdded).Add(float64(added))
	}
	if removed > 0 {
		m.leaseEvents.WithLabelValues(EventRemoved).Add(float64(removed))
	}
}

// Reconciled records one reconcile round.
func (m *Metrics) Reconciled(d time.Duration, err error) {
	if m == nil {
		return
	}
	res := "success"
	if err != nil {
		res = "failure"
	}
	m.reconcileRuns.WithLabelValues(res).Inc()
	m.reconcileDuration.Observe(d.Seconds())
}

// KernelObjects implements observe.Observer; unknown ops are counted under their own name.
func (m *Metrics) KernelObjects(kind observe.Kind, op observe.Op, n int) {
	if m == nil || n <= 0 {
		return
	}
	label := string(op)
	switch op {
	case observe.Add:
		label = OpAdded
	case observe.Remove:
		label = OpRemoved
	case observe.Repair:
		label = OpRepaired
	}
	m.kernelObjects.WithLabelValues(string(kind), label).Add(float64(n))
}

// TxChecksumOffload implements observe.Observer.
func (m *Metrics) TxChecksumOffload(device string, on bool) {
	if m == nil {
		return
	}
	v := 0.0
	if on {
		v = 1
	}
	m.txChecksum.WithLabelValues(device).Set(v)
}

// PacketsDropped implements observe.Observer; n == 0 declares the reason's series.
func (m *Metrics) PacketsDropped(reason string, n int) {
	if m == nil || n < 0 {
		return
	}
	m.udpDropped.WithLabelValues(reason).Add(float64(n))
}

var wireguardImpls = []string{"kernel", "userspace"} // flannel_wireguard_implementation{impl}

// WireguardImplementation implements observe.Observer: impl gets 1, the other 0.
func (m *Metrics) WireguardImplementation(impl string) {
	if m == nil {
		return
	}
	for _, i := range wireguardImpls {
		v := 0.0
		if i == impl {
			v = 1
		}
		m.wgImpl.WithLabelValues(i).Set(v)
	}
}

// DatastoreError implements observe.Observer.
func (m *Metrics) DatastoreError(op observe.Op, _ error) {
	if m == nil {
		return
	}
	m.datastoreErrors.WithLabelValues(string(op)).Inc()
}

// WatchRestarted implements observe.Observer.
func (m *Metrics) WatchRestarted(watch observe.Kind, _ error) {
	if m == nil {
		return
	}
	m.watchRestarts.WithLabelValues(string(watch)).Inc()
}

// WatchLive implements observe.Observer (readiness uses it; no metric).
func (m *Metrics) WatchLive(observe.Kind) {}

// LeasesRejected counts n rejected peer leases of one reason; n = 0 declares the reason.
func (m *Metrics) LeasesRejected(reason string, n int) {
	if m == nil || n < 0 {
		return
	}
	m.leasesRejected.WithLabelValues(reason).Add(float64(n))
}

// LeaseExpiration implements observe.Observer.
func (m *Metrics) LeaseExpiration(t time.Time) {
	if m == nil {
		return
	}
	if t.IsZero() {
		m.leaseExpiry.Set(0)
		return
	}
	m.leaseExpiry.Set(float64(t.UnixNano()) / 1e9)
}

// PeerProgrammingFailures implements observe.Observer.
func (m *Metrics) PeerProgrammingFailures(reason string, n int) {
	if m == nil || n <= 0 {
		return
	}
	m.peerFailures.WithLabelValues(reason).Add(float64(n))
}

// PeersSkipped implements observe.Observer.
func (m *Metrics) PeersSkipped(reason string, n int) {
	if m == nil {
		return
	}
	m.peersSkipped.WithLabelValues(reason).Set(float64(n))
}
