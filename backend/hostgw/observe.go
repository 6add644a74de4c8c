package hostgw

import "github.com/flannel-go/flannel/backend"

var _ backend.ObserverSetter = (*Backend)(nil)

// SetObserver implements backend.ObserverSetter.
func (b *Backend) SetObserver(o backend.Observer) {
	b.mu.Lock()
	b.obs = o
	b.mu.Unlock()
}

// report passes a Reconcile round's route changes to the observer.
func (b *Backend) report(c Counts) {
	backend.ReportCount(b.obs, backend.KindRoute, backend.OpAdd, c.Added)
	backend.ReportCount(b.obs, backend.KindRoute, backend.OpRemove, c.Removed)
}
