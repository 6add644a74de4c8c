package daemon

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/control"
	"github.com/flannel-go/flannel/pkg/healthz"
	"github.com/flannel-go/flannel/pkg/kernelwatch"
	"github.com/flannel-go/flannel/pkg/metrics"
	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/pkg/subnetenv"
	"github.com/flannel-go/flannel/pkg/trafficrules"
	"github.com/flannel-go/flannel/subnet"
)

// Deps are the parts cmd/flanneld builds and hands to the daemon.
type Deps struct {
	Manager subnet.Manager
	// Backends maps a lower-cased backend type to its constructor.
	Backends map[string]backend.Constructor
	// CheckBackendConfig checks a backend type's own config keys (optional per type).
	CheckBackendConfig map[string]backend.ConfigChecker
	// LookupExtIface selects the external interface for a network config.
	LookupExtIface func(cfg *subnet.Config) (*backend.ExternalInterface, error)
	// Notify sends a service state ("READY=1") to the service manager; nil: none.
	Notify func(state string) error
	// TrafficRules installs and keeps the masquerade/forward rules (nil: none).
	TrafficRules TrafficRules
	// Metrics receives every part's metrics, served at /metrics (nil: no metrics).
	Metrics *metrics.Metrics
	// ReadSysctl reads a sysctl ("net.ipv4.ip_forward") to warn about forwarding; nil: no check.
	ReadSysctl func(name string) (string, error)
	// KernelWatch calls kick (never blocking) on changes WatchFilter selects; nil: resyncs only.
	KernelWatch func(ctx context.Context, f kernelwatch.Filter, kick func()) error
	// Status receives what the daemon does and answers status queries (nil: none).
	Status *Status
	// Instances asks the other flanneld instances in this network namespace for their statuses.
	Instances func(ctx context.Context) ([]control.Found, error)
	Admission subnet.RuleOptions
	// Leftovers removes, per backend type, what an earlier run of that type left once this
	// run's type differs; a type absent leaves only devices, which RemoveDevices removes.
	Leftovers map[string]backend.LeftoverRemover
}

// PreviousLeaser is a Manager that knows what this node advertised before (kube: its annotations).
type PreviousLeaser interface {
	PreviousLease() *subnet.Lease
}

// TrafficRules installs the masquerade/forward rules: Setup once after the lease is acquired
// and before the subnet file is written; Run keeps them true until ctx ends.
type TrafficRules interface {
	Setup(ctx context.Context, n trafficrules.Networks) error
	Run(ctx context.Context) error
}

// Readiness check names, reported in /readyz.
const (
	checkSubnetFile = "subnet-file"
	checkLeaseWatch = "lease-watch"
	checkConverged  = "kernel-converged"
)

// attemptTimeout bounds a start-up datastore call, so that an unreachable one is logged.
const attemptTimeout = 5 * time.Second

// Timings of the loops; variables of a daemon, not of the package, so tests can shorten them.
type timings struct {
	configRetry   time.Duration // network config fetch retry (upstream: 1 s)
	acquireRetry  time.Duration // first lease acquisition retry, doubled up to acquireMax
	acquireMax    time.Duration
	resync        time.Duration // safety-net full reconcile period
	reconcileBack time.Duration // first retry after a failed reconcile, doubled up to resync
}

var defaultTimings = timings{
	configRetry:   time.Second,
	acquireRetry:  time.Second,
	acquireMax:    10 * time.Second,
	resync:        30 * time.Second,
	reconcileBack: 200 * time.Millisecond,
}

// Run runs the daemon until ctx ends (nil) or the lease is lost (ErrLeaseRevoked). It retries
// config and datastore problems, not a missing interface, device setup or permanent error.
func Run(ctx context.Context, cfg Config, deps Deps) error {
	return run(ctx, cfg, deps, defaultTimings)
}

func run(ctx context.Context, dc Config, deps Deps, tm timings) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ready := healthz.NewReadiness(checkNetworkConfig, checkSubnetFile, checkLeaseWatch, checkConverged, checkLeaseValid)
	deps.Status.setReadiness(ready)
	defer deps.Status.setPhase(control.PhaseStopping)
	obs, outage := observer(deps, dc.RenewMargin, ready)
	setObserver(obs, deps.Manager) // before any other call to the manager
	if dc.HealthzAddr != "" {
		if err := healthz.Serve(ctx, dc.HealthzAddr, healthz.Handler(ready, deps.Metrics.Handler())); err != nil {
			return err
		}
	}

	cfg, be, err := setupBackend(ctx, deps, obs, ready, tm.configRetry)
	if err != nil {
		if ctx.Err() != nil {
			return nil // cancelled while waiting for a config
		}
		return err
	}
	klog.InfoS("Found network config", "backendType", cfg.BackendType)
	deps.Status.setConfig(cfg)
	deps.Status.setPhase(control.PhaseAcquiring)
	warnForwardingOff(cfg, deps.ReadSysctl)
	if len(cfg.Backend) == 0 {
		klog.InfoS("The network config has no Backend: using the udp backend, as upstream flanneld does. Set Backend.Type (e.g. vxlan) to choose another")
	}
	setObserver(obs, be, deps.TrafficRules)

	stPath := statePath(dc.SubnetFile)
	mine := ownClaims(cfg, be)
	others, err := checkClaims(ctx, deps, mine)
	if err != nil {
		return err
	}
	warnRecordedDevices(stPath, mine, others)
	prev, err := readState(stPath)
	if err != nil {
		klog.ErrorS(err, "Ignoring unreadable state file", "path", stPath)
	}
	prevLease := prev.previousLease()
	if pl, ok := deps.Manager.(PreviousLeaser); ok && prevLease == nil {
		// No state file (/run emptied by a reboot): the datastore may hold what we advertised.
		prevLease = pl.PreviousLease()
	}
	attrs, err := be.Prepare(ctx, prevLease)
	if err != nil {
		return fmt.Errorf("error registering network: %w", err)
	}
	lease, err := acquire(ctx, deps.Manager, obs, cfg, attrs, tm)
	if err != nil {
		if ctx.Err() != nil {
			return nil // cancelled
		}
		return fmt.Errorf("error registering network: %w", err) // permanent (subnet.IsPermanent)
	}
	ready.Set(checkLeaseValid, nil) // from now on its probe judges
	nw, err := be.Start(ctx, lease)
	if err != nil {
		return fmt.Errorf("error registering network: %w", err)
	}
	deps.Status.setLease(lease, nw.Devices())
	stale := staleDevices(prev, nw.Devices())
	if len(stale) > 0 {
		stale = withoutClaimed(stale, listInstances(ctx, deps)) // theirs since we stopped
	}
	removeLeftovers(prev, cfg.BackendType, stale, nw, deps.Leftovers)
	if err := writeState(stPath, &state{Key: lease.Key(), Attrs: lease.Attrs, Devices: nw.Devices()}); err != nil {
		klog.ErrorS(err, "Failed to write state file", "path", stPath)
	}

	if deps.TrafficRules != nil {
		if err := deps.TrafficRules.Setup(ctx, rulesNetworks(cfg, lease)); err != nil {
			if ctx.Err() != nil {
				return nil // stopped while setting up
			}
			return fmt.Errorf("failed to set up traffic rules: %w", err)
		}
		rulesDone := make(chan struct{})
		go func() {
			defer close(rulesDone)
			if err := deps.TrafficRules.Run(ctx); err != nil && ctx.Err() == nil {
				klog.ErrorS(err, "Traffic rules keeper stopped")
			}
		}()
		defer func() { cancel(); <-rulesDone }()
	}
	env := subnetenv.Env{MTU: nw.MTU(), IPMasq: dc.IPMasq}
	if cfg.EnableIPv4 {
		env.Network, env.Subnet = cfg.Network, lease.Subnet
	}
	if cfg.EnableIPv6 {
		env.IPv6Network, env.IPv6Subnet = cfg.IPv6Network, lease.IPv6Subnet
	}
	noteMTUChange(dc.SubnetFile, env.MTU)
	if err := subnetenv.Write(dc.SubnetFile, env); err != nil {
		klog.ErrorS(err, "Failed to write subnet file", "path", dc.SubnetFile)
		ready.Set(checkSubnetFile, err)
	} else {
		klog.InfoS("Wrote subnet file", "path", dc.SubnetFile)
		ready.Set(checkSubnetFile, nil)
	}

	adv := newAttrsBox()
	keepErr := make(chan error, 1)
	go func() {
		keepErr <- keepLease(ctx, deps.Manager, cfg, lease, adv.c, func(l *subnet.Lease) {
			if err := writeState(stPath, &state{Key: l.Key(), Attrs: l.Attrs, Devices: nw.Devices()}); err != nil {
				klog.ErrorS(err, "Failed to write state file", "path", stPath)
			}
			deps.Status.setLease(l, nw.Devices())
		}, obs, tm)
	}()
	results := make(chan subnet.WatchResult, 64)
	go func() {
		if err := deps.Manager.WatchLeases(ctx, results); err != nil && ctx.Err() == nil {
			klog.ErrorS(err, "Lease watch ended")
		}
	}()
	if deps.Notify != nil {
		if err := deps.Notify("READY=1"); err != nil {
			klog.ErrorS(err, "Failed to notify systemd")
		}
	}
	klog.InfoS("Running backend", leaseValues(cfg.BackendType, lease)...)
	outage.arm()

	if w, ok := deps.Manager.(subnet.ConfigWatcher); ok {
		followDone := make(chan struct{})
		go func() { defer close(followDone); followConfig(ctx, w, cfg, deps) }()
		defer func() { cancel(); <-followDone }()
	}

	kicks := make(chan struct{}, 1) // kicks that arrive while one is pending fold into it
	kick := func() {
		select {
		case kicks <- struct{}{}:
		default:
		}
	}
	watchDone := watchKernel(ctx, deps.KernelWatch, nw.WatchFilter(), kick, tm)
	defer func() { cancel(); <-watchDone }()
	if w, ok := nw.(backend.Watcher); ok {
		done := make(chan struct{})
		go func() { defer close(done); w.Watch(ctx, kick, adv.put) }()
		defer func() { cancel(); <-done }()
	}
	if d, ok := nw.(backend.Describer); ok {
		ready.SetProbe(cfg.BackendType, d.Health)
		ready.SetNote(cfg.BackendType, d.Describe)
	}
	loopErr := make(chan error, 1)
	set := newAdmitter(cfg, lease, deps)
	queries, loopDone := make(chan peerQuery), make(chan struct{})
	deps.Status.serveQueries(queries, loopDone)
	deps.Status.setPhase(control.PhaseRunning)
	go func() {
		err := reconcileLoop(ctx, nw, set, results, deps.Metrics, obs, kicks, ready, tm, queries)
		close(loopDone)
		loopErr <- err
	}()
	select {
	case err := <-keepErr:
		cancel()
		<-loopErr
		return err
	case err := <-loopErr:
		return err
	}
}

func newAdmitter(cfg *subnet.Config, own *subnet.Lease, deps Deps) *subnet.Admitter {
	m := deps.Metrics
	for _, r := range subnet.Reasons() {
		m.LeasesRejected(string(r), 0)
	}
	return subnet.NewAdmitter(subnet.NewRule(cfg, deps.Admission), own, func(r subnet.Reason) { m.LeasesRejected(string(r), 1) })
}

// leaseValues are the log values of the backend type and the subnets the lease has.
func leaseValues(backendType string, l *subnet.Lease) []any {
	kv := []any{"type", backendType}
	if l.Subnet.IsValid() {
		kv = append(kv, "subnet", l.Subnet)
	}
	if l.IPv6Subnet.IsValid() {
		kv = append(kv, "ipv6Subnet", l.IPv6Subnet)
	}
	return kv
}

func rulesNetworks(cfg *subnet.Config, lease *subnet.Lease) trafficrules.Networks {
	n := trafficrules.Networks{NFTables: cfg.EnableNFTables}
	if cfg.EnableIPv4 {
		n.Network, n.Subnet = cfg.Network, lease.Subnet
	}
	if cfg.EnableIPv6 {
		n.IPv6Network, n.IPv6Subnet = cfg.IPv6Network, lease.IPv6Subnet
	}
	return n
}

// acquire gets the lease, retrying all but a PermanentError with backoff and reporting to obs.
func acquire(ctx context.Context, sm subnet.Manager, obs observe.Observer, cfg *subnet.Config, attrs *subnet.LeaseAttrs, tm timings) (*subnet.Lease, error) {
	wait := tm.acquireRetry
	for {
		actx, cancel := context.WithTimeout(ctx, 6*attemptTimeout)
		l, err := sm.AcquireLease(actx, cfg, attrs)
		if err != nil && ctx.Err() == nil {
			obs.DatastoreError(observe.Acquire, err)
		}
		cancel()
		if err == nil {
			obs.LeaseExpiration(l.Expiration)
			return l, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if subnet.IsPermanent(err) {
			return nil, err
		}
		klog.ErrorS(err, "Failed to acquire lease; retrying", "retryIn", wait)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, tm.acquireMax)
	}
}

// watchKernel runs the kernel watch, if any, in a goroutine owned by ctx; done closes after.
func watchKernel(ctx context.Context, watch func(context.Context, kernelwatch.Filter, func()) error, f kernelwatch.Filter, kick func(), tm timings) (done <-chan struct{}) {
	d := make(chan struct{})
	if watch == nil {
		close(d)
		return d
	}
	go func() {
		defer close(d)
		if err := watch(ctx, f, kick); err != nil && ctx.Err() == nil {
			klog.ErrorS(err, "Cannot watch kernel changes; repairs wait for the periodic resync", "resync", tm.resync)
		}
	}()
	return d
}

// From these sizes the heap is collected before the round: the leases of the snapshots
// folded, the events of the batches folded (a churn's watch response, decoded, then
// converted, was live when the heap goal was last set).
const (
	bigSnapshot = 5000
	bigEvents   = 2000
)

// reconcileLoop folds watch results into the admitted set and converges the backend to it,
// one Reconcile per burst of results and kicks and none before the first snapshot, so a
// restart never removes unheard-of peers; a kick is dropped while a backend.Settler says
// only its own writes happened. It answers peer queries between rounds.
func reconcileLoop(ctx context.Context, nw backend.Network, set *subnet.Admitter, results <-chan subnet.WatchResult, m *metrics.Metrics, obs *driftObserver, kicks <-chan struct{}, ready *healthz.Readiness, tm timings, queries <-chan peerQuery) error {
	resync := time.NewTicker(tm.resync)
	defer resync.Stop()
	var retry <-chan time.Time
	backoff := tm.reconcileBack
	dirty := false
	var gen uint64       // incremented whenever the peer set changes
	var converged uint64 // gen at the last successful round
	anyRound := false    // a round succeeded
	lastOK := false      // the last round succeeded
	forced := false      // a resync or retry asked for the round: the backend's word is not enough
	settler, _ := nw.(backend.Settler)
	changed := func(c bool) {
		if c {
			gen++
			dirty = true
		}
	}
	// fold applies one watch result and returns the number of leases of its snapshot and
	// of its events.
	fold := func(r subnet.WatchResult) (snapped, events int) {
		added, removed := r.EventCounts()
		m.LeaseResult(r.IsSnapshot(), added, removed)
		changed(set.Apply(r))
		return len(r.Snapshot), len(r.Events)
	}
	for {
		var snapped, events int // leases in the snapshots and events applied
		folded := false
		select {
		case <-ctx.Done():
			return nil
		case r := <-results:
			snapped, events = fold(r)
			folded = true
		case <-kicks:
			dirty = true
		case <-resync.C:
			dirty, forced = true, true
			changed(set.Refresh())
			if v, ok := nw.(backend.Invalidator); ok {
				v.Invalidate() // the safety net reads the kernel in full
			}
		case <-retry:
			retry = nil
			dirty, forced = true, true
		case q := <-queries:
			q.reply <- peersOf(set)
		}
		// Results that came meanwhile join this round: a kick must not put a round before them.
	drain:
		for {
			select {
			case r := <-results:
				s, e := fold(r)
				snapped, events, folded = snapped+s, events+e, true
			default:
				break drain
			}
		}
		if folded {
			if snapped >= bigSnapshot || events >= bigEvents {
				// The heap goal was set while they were live; collecting now resets it.
				runtime.GC()
			}
			if set.Synced() {
				ready.Set(checkLeaseWatch, nil)
			}
		}
		if !dirty || !set.Synced() {
			continue
		}
		dirty = false
		if !forced && lastOK && gen == converged && settler != nil && settler.Settled() {
			continue // a kernel change that was our own: nothing to do
		}
		forced = false
		peers := set.Peers()
		m.PeerLeases(peers.Len())
		obs.drift.Store(anyRound && gen == converged)
		start := time.Now()
		err := nw.Reconcile(ctx, peers)
		obs.drift.Store(false)
		if err != nil && ctx.Err() != nil {
			return nil // stopped: not a failed round
		}
		lastOK = err == nil
		m.Reconciled(time.Since(start), err)
		if err != nil {
			ready.Set(checkConverged, err)
			klog.ErrorS(err, "Reconcile failed; retrying", "retryIn", backoff)
			retry = time.After(backoff)
			backoff = min(2*backoff, tm.resync)
			continue
		}
		converged, anyRound = gen, true
		backoff = tm.reconcileBack
		ready.Set(checkConverged, nil)
		klog.V(2).InfoS("Reconciled", "peers", peers.Len(), "duration", time.Since(start))
	}
}
