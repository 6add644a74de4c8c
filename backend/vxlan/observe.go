package vxlan

import "github.com/flannel-go/flannel/backend"

// observing is what the backend needs to report to a backend.Observer and to apply
// the ChecksumOffload option; embedded in Backend.
type observing struct {
	obs           backend.Observer       // nil until SetObserver
	ethtool       *ethtool               // nil: ChecksumOffload is not applied (NewWithHandle)
	kernelRelease func() (string, error) // nil: uname (tests inject a release)
	csumLogged    map[string]bool        // devices whose offload choice was logged
}

var _ backend.ObserverSetter = (*Backend)(nil)

// SetObserver implements backend.ObserverSetter.
func (b *Backend) SetObserver(o backend.Observer) {
	b.mu.Lock()
	b.obs = o
	b.mu.Unlock()
}

func (b *Backend) observer() backend.Observer {
	if b.obs == nil {
		return backend.NopObserver{}
	}
	return b.obs
}

// report passes a Reconcile round's changes to the observer.
func (b *Backend) report(c Counts) {
	o := b.obs
	backend.ReportCount(o, backend.KindRoute, backend.OpAdd, c.RoutesAdded)
	backend.ReportCount(o, backend.KindRoute, backend.OpRemove, c.RoutesRemoved)
	backend.ReportCount(o, backend.KindFDB, backend.OpAdd, c.FDBAdded)
	backend.ReportCount(o, backend.KindFDB, backend.OpRemove, c.FDBRemoved)
	backend.ReportCount(o, backend.KindNeigh, backend.OpAdd, c.NeighAdded)
	backend.ReportCount(o, backend.KindNeigh, backend.OpRemove, c.NeighRemoved)
	backend.ReportCount(o, backend.KindNexthop, backend.OpAdd, c.NexthopsAdded)
	backend.ReportCount(o, backend.KindNexthop, backend.OpRemove, c.NexthopsRemoved)
}

// reportDevice reports a device created (add) or fixed in place (repair).
func (b *Backend) reportDevice(res devResult) {
	switch res {
	case devCreated:
		backend.ReportCount(b.obs, backend.KindDevice, backend.OpAdd, 1)
	case devRepaired:
		backend.ReportCount(b.obs, backend.KindDevice, backend.OpRepair, 1)
	}
}
