package vxlan

import "github.com/flannel-go/flannel/pkg/observe"

// observing is what reporting and ChecksumOffload need; embedded in Backend.
type observing struct {
	obs           observe.Observer       // nil until SetObserver
	ethtool       *ethtool               // nil: ChecksumOffload is not applied (NewWithHandle)
	kernelRelease func() (string, error) // nil: uname (tests inject a release)
	csumLogged    map[string]bool        // devices whose offload choice was logged
}

var _ observe.Setter = (*Backend)(nil)

// SetObserver implements observe.Setter.
func (b *Backend) SetObserver(o observe.Observer) {
	b.mu.Lock()
	b.obs = o
	b.mu.Unlock()
}

func (b *Backend) observer() observe.Observer { return observe.Or(b.obs) }

func (b *Backend) report(c Counts) {
	o := b.obs
	observe.Count(o, observe.Route, observe.Add, c.RoutesAdded)
	observe.Count(o, observe.Route, observe.Remove, c.RoutesRemoved)
	observe.Count(o, observe.FDB, observe.Add, c.FDBAdded)
	observe.Count(o, observe.FDB, observe.Remove, c.FDBRemoved)
	observe.Count(o, observe.Neigh, observe.Add, c.NeighAdded)
	observe.Count(o, observe.Neigh, observe.Remove, c.NeighRemoved)
	observe.Count(o, observe.Nexthop, observe.Add, c.NexthopsAdded)
	observe.Count(o, observe.Nexthop, observe.Remove, c.NexthopsRemoved)
}

// reportDevice reports a device created (add) or fixed in place (repair).
func (b *Backend) reportDevice(res devResult) {
	switch res {
	case devCreated:
		observe.Count(b.obs, observe.Device, observe.Add, 1)
	case devRepaired:
		observe.Count(b.obs, observe.Device, observe.Repair, 1)
	}
}
