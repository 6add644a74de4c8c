package daemon

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flannel-go/flannel/pkg/healthz"
	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

// checkLeaseValid is the readiness check of the own lease: held, not expired, renewed when due.
const checkLeaseValid = "lease-valid"

// renewGrace is how long past its renewal time the lease may go unrenewed before readiness fails.
const renewGrace = time.Minute

// datastoreHealth keeps the watches' liveness and the own lease's expiration, for readiness.
type datastoreHealth struct {
	observe.Nop               // the kernel observations are not its concern
	margin      time.Duration // lease renew margin
	now         func() time.Time
	conn        func() error // the manager's connection health; nil: not known

	mu       sync.Mutex
	watchErr map[observe.Kind]error // per watch that reported: nil = live
	exp      time.Time              // own lease expiration (zero: never expires)
	renewErr error                  // last renewal failure, cleared by a new expiration
}

func newDatastoreHealth(margin time.Duration, now func() time.Time) *datastoreHealth {
	return &datastoreHealth{margin: margin, now: now, watchErr: map[observe.Kind]error{}}
}

func (h *datastoreHealth) DatastoreError(op observe.Op, err error) {
	if op == observe.Renew {
		h.mu.Lock()
		h.renewErr = err
		h.mu.Unlock()
	}
}

func (h *datastoreHealth) WatchRestarted(watch observe.Kind, err error) {
	if err == nil {
		err = errors.New("restarting")
	}
	h.mu.Lock()
	h.watchErr[watch] = fmt.Errorf("%s watch broke: %w", watch, err)
	h.mu.Unlock()
}

func (h *datastoreHealth) WatchLive(watch observe.Kind) {
	h.mu.Lock()
	h.watchErr[watch] = nil
	h.mu.Unlock()
}

func (h *datastoreHealth) LeaseExpiration(t time.Time) {
	h.mu.Lock()
	if !t.Equal(h.exp) {
		h.renewErr = nil
	}
	h.exp = t
	h.mu.Unlock()
}

// watchLive fails unless every watch that reported is live and the datastore is usable.
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

// leaseValid fails when the own lease expired or went unrenewed renewGrace past its due time.
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

// driftObserver passes observations on, reporting kernel changes without lease changes as repairs.
type driftObserver struct {
	observe.Observer
	drift atomic.Bool
}

func (d *driftObserver) KernelObjects(kind observe.Kind, op observe.Op, n int) {
	if d.drift.Load() && (op == observe.Add || op == observe.Remove) {
		op = observe.Repair
	}
	d.Observer.KernelObjects(kind, op, n)
}

// observer builds the Observer every part reports to and attaches the lease probes to ready.
func observer(deps Deps, margin time.Duration, ready *healthz.Readiness) (*driftObserver, *outageLog) {
	if margin <= 0 {
		margin = defaultRenewMargin
	}
	ds := newDatastoreHealth(margin, time.Now)
	if hc, ok := deps.Manager.(subnet.HealthChecker); ok {
		ds.conn = hc.Health
	}
	ready.Set(checkLeaseValid, errors.New("no lease acquired yet"))
	ready.SetProbe(checkLeaseWatch, ds.watchLive)
	ready.SetProbe(checkLeaseValid, ds.leaseValid)
	outage := newOutageLog(time.Now)
	return &driftObserver{Observer: observe.Tee{deps.Metrics, ds, outage}}, outage
}

func setObserver(o observe.Observer, parts ...any) {
	for _, p := range parts {
		if s, ok := p.(observe.Setter); ok {
			s.SetObserver(o)
		}
	}
}

// defaultRenewMargin is the renew margin when none is configured (as the etcd manager's).
const defaultRenewMargin = 60 * time.Minute
