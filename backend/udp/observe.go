package udp

import "github.com/flannel-go/flannel/backend"

var _ backend.ObserverSetter = (*Backend)(nil)

// SetObserver implements backend.ObserverSetter. Repairs of flannel0 (MTU, address,
// up flag, the network route) are reported as device repairs.
func (b *Backend) SetObserver(o backend.Observer) {
	b.mu.Lock()
	b.obs = o
	b.mu.Unlock()
}
