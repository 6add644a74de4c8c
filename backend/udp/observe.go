package udp

import "github.com/flannel-go/flannel/pkg/observe"

var _ observe.Setter = (*Backend)(nil)

// SetObserver implements observe.Setter; repairs of flannel0 count as device repairs.
func (b *Backend) SetObserver(o observe.Observer) {
	b.mu.Lock()
	b.obs = o
	b.mu.Unlock()
}
