package subnet

import "time"

// Watches a subnet manager reports to its Observer.
const (
	WatchLeases   = "leases"    // the watch of all subnet leases (WatchLeases)
	WatchOwnLease = "own_lease" // the watch of the node's own lease (KeepLease)
)

// Observer hears about the datastore side of a subnet manager: its errors, the state of
// its watches and the own lease's expiration. It feeds metrics and readiness. Contract:
// methods may be called from any goroutine of the manager, must be cheap and must not
// block or call back into the manager.
type Observer interface {
	// DatastoreError reports a failed datastore operation (op names it, e.g. "list",
	// "watch", "renew"); the manager retries it.
	DatastoreError(op string, err error)
	// WatchRestarted reports that a watch (Watch*) broke and is being opened again.
	WatchRestarted(watch string, err error)
	// WatchLive reports that a watch delivered a response (a snapshot, events or a
	// progress notification): it is live again after a WatchRestarted.
	WatchLive(watch string)
	// LeaseExpiration reports the own lease's current expiration (zero: it never
	// expires, e.g. a reservation or a kube lease), after acquisition and each renewal.
	LeaseExpiration(t time.Time)
}

// NopObserver ignores everything.
type NopObserver struct{}

// DatastoreError does nothing.
func (NopObserver) DatastoreError(string, error) {}

// WatchRestarted does nothing.
func (NopObserver) WatchRestarted(string, error) {}

// WatchLive does nothing.
func (NopObserver) WatchLive(string) {}

// LeaseExpiration does nothing.
func (NopObserver) LeaseExpiration(time.Time) {}

// ObserverSetter is implemented by subnet managers that report to an Observer. The
// daemon calls SetObserver once, before any other method.
type ObserverSetter interface {
	SetObserver(o Observer)
}

// HealthChecker is implemented by subnet managers that can tell, without a round trip,
// whether their datastore connection is usable (e.g. the etcd client's connection
// state). Health returns nil when it is, else the reason; it must not block.
type HealthChecker interface {
	Health() error
}
