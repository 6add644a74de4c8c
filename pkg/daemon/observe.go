package daemon

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/healthz"
	"github.com/flannel-go/flannel/pkg/metrics"
	"github.com/flannel-go/flannel/subnet"
)

// checkLeaseValid is the readiness check of the own lease (held, not expired, renewed
// when due).
const checkLeaseValid = "lease-valid"

// renewGrace is how long past its renewal time the own lease may stay unrenewed (while
// renewal retries) before readiness reports it.
const renewGrace = time.Minute

// datastoreHealth is the subnet.Observer the daemon hands to the subnet manager: it
// forwards everything to the metrics and keeps what readiness needs, the liveness of
// the watches and the own lease's expiration.
type datastoreHealth struct {
	m      *metrics.Metrics
	margin time.Duration // lease renew margin
	now    func() time.Time
	conn   func() error // the manager's connection health; nil: not known

	mu       sync.Mutex
	watchErr map[string]error // per watch that reported: nil = live
	exp      time.Time        // own lease expiration (zero: never expires)
	renewErr error            // last renewal failure, cleared by a new expiration
}

var _ subnet.Observer = (*datastoreHealth)(nil)

func newDatastoreHealth(m *metrics.Metrics, margin time.Duration, now func() time.Time) *datastoreHealth {
	return &datastoreHealth{m: m, margin: margin, now: now, watchErr: map[string]error{}}
}

func (h *datastoreHealth) DatastoreError(op string, err error) {
	h.m.DatastoreError(op, err)
	if op == "renew" {
		h.mu.Lock()
		h.renewErr = err
		h.mu.Unlock()
	}
}

func (h *datastoreHealth) WatchRestarted(watch string, err error) {
	h.m.WatchRestarted(watch, err)
	if err == nil {
		err = errors.New("restarting")
	}
	h.mu.Lock()
	h.watchErr[watch] = fmt.Errorf("%s watch broke: %w", watch, err)
	h.mu.Unlock()
}

func (h *datastoreHealth) WatchLive(watch string) {
	h.mu.Lock()
	h.watchErr[watch] = nil
	h.mu.Unlock()
}

func (h *datastoreHealth) LeaseExpiration(t time.Time) {
	h.m.LeaseExpiration(t)
	h.mu.Lock()
	if !t.Equal(h.exp) {
		h.renewErr = nil
	}
	h.exp = t
	h.mu.Unlock()
}

// watchLive is the readiness probe of the lease watches: every watch that reported is
// live, and the datastore connection is usable.
func (h *datastoreHealth) watchLive() error {
	h.mu.Lock()
	var errs []string
	for _, err := range h.watchErr {
		if err != nil {
			errs = append(errs, err.Error())
		}
	}
	h.mu.Unlock()
	if h.conn != nil {
		if err := h.conn(); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) == 0 {
		return nil
	}
	sort.Strings(errs)
	return errors.New(strings.Join(errs, "; "))
}

// leaseValid is the readiness probe of the own lease: not expired, and renewed in time
// (renewal is due margin before expiry; a renewal still failing renewGrace later is
// reported).
func (h *datastoreHealth) leaseValid() error {
	h.mu.Lock()
	exp, renewErr := h.exp, h.renewErr
	h.mu.Unlock()
	if exp.IsZero() {
		return nil // a reservation or a kube lease: it does not expire
	}
	now := h.now()
	if !now.Before(exp) {
		return fmt.Errorf("lease expired at %s and was not renewed", exp.UTC().Format(time.RFC3339))
	}
	if due := exp.Add(-h.margin); now.After(due.Add(renewGrace)) {
		why := ""
		if renewErr != nil {
			why = ": " + renewErr.Error()
		}
		return fmt.Errorf("lease not renewed: renewal was due at %s, it expires at %s%s",
			due.UTC().Format(time.RFC3339), exp.UTC().Format(time.RFC3339), why)
	}
	return nil
}

// observedManager counts the datastore errors of the start-up calls (the manager's own
// loops report theirs through the Observer).
type observedManager struct {
	subnet.Manager
	obs subnet.Observer
}

func (o observedManager) GetNetworkConfig(ctx context.Context) (*subnet.Config, error) {
	cfg, err := o.Manager.GetNetworkConfig(ctx)
	if err != nil && ctx.Err() == nil {
		o.obs.DatastoreError("get_config", err)
	}
	return cfg, err
}

func (o observedManager) AcquireLease(ctx context.Context, cfg *subnet.Config, attrs *subnet.LeaseAttrs) (*subnet.Lease, error) {
	l, err := o.Manager.AcquireLease(ctx, cfg, attrs)
	if err != nil && ctx.Err() == nil {
		o.obs.DatastoreError("acquire", err)
	}
	if err == nil {
		o.obs.LeaseExpiration(l.Expiration)
	}
	return l, err
}

// kernelObserver is the backend.Observer the daemon hands to the backend: it forwards to
// the metrics, reporting additions and removals made while the lease set had not changed
// since the last converged round as repairs (drift undone).
type kernelObserver struct {
	next  backend.Observer
	drift atomic.Bool
}

func (k *kernelObserver) KernelObjects(kind, op string, n int) {
	if k.drift.Load() && (op == backend.OpAdd || op == backend.OpRemove) {
		op = backend.OpRepair
	}
	k.next.KernelObjects(kind, op, n)
}

func (k *kernelObserver) TxChecksumOffload(device string, on bool) {
	k.next.TxChecksumOffload(device, on)
}

// meteredNetwork times Reconcile rounds for the metrics and tells the kernel observer
// whether a round follows a change of the lease set. It is called from the reconcile
// loop's goroutine, which also applies the lease results to set.
type meteredNetwork struct {
	backend.Network
	m         *metrics.Metrics
	kobs      *kernelObserver
	set       *leaseSet
	converged uint64 // set.gen at the last successful round
	any       bool   // a round succeeded
}

// Invalidate passes the periodic resync's request for a full read to the backend.
func (n *meteredNetwork) Invalidate() {
	if v, ok := n.Network.(backend.Invalidator); ok {
		v.Invalidate()
	}
}

func (n *meteredNetwork) Reconcile(ctx context.Context, peers subnet.Peers) error {
	gen := n.set.gen
	n.kobs.drift.Store(n.any && gen == n.converged)
	n.m.PeerLeases(peers.Len())
	start := time.Now()
	err := n.Network.Reconcile(ctx, peers)
	n.kobs.drift.Store(false)
	if err != nil && ctx.Err() != nil {
		return err // stopped: not a failed round
	}
	n.m.Reconciled(time.Since(start), err)
	if err == nil {
		n.converged, n.any = gen, true
	}
	return err
}

// observe connects the subnet manager to the metrics and to readiness: it hands the
// manager an Observer, attaches the probes of the lease watch and the lease's validity,
// and returns deps.Manager wrapped to count the errors of the start-up calls (used for
// GetNetworkConfig and AcquireLease only: deps.Manager itself stays as it is, so checks
// for optional interfaces on it keep working).
func observe(deps Deps, margin time.Duration, ready *healthz.Readiness) subnet.Manager {
	if margin <= 0 {
		margin = defaultRenewMargin
	}
	ds := newDatastoreHealth(deps.Metrics, margin, time.Now)
	if s, ok := deps.Manager.(subnet.ObserverSetter); ok {
		s.SetObserver(ds)
	}
	if hc, ok := deps.Manager.(subnet.HealthChecker); ok {
		ds.conn = hc.Health
	}
	ready.Set(checkLeaseValid, errors.New("no lease acquired yet"))
	ready.SetProbe(checkLeaseWatch, ds.watchLive)
	ready.SetProbe(checkLeaseValid, ds.leaseValid)
	return observedManager{Manager: deps.Manager, obs: ds}
}

// defaultRenewMargin is the renew margin when none is configured (as the etcd manager's).
const defaultRenewMargin = 60 * time.Minute
