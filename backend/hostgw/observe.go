package hostgw

import "github.com/flannel-go/flannel/pkg/observe"

var _ observe.Setter = (*Backend)(nil)

// SetObserver implements observe.Setter.
func (b *Backend) SetObserver(o observe.Observer) {
	b.mu.Lock()
	b.obs = o
	b.mu.Unlock()
}

func (b *Backend) report(c Counts) {
	observe.Count(b.obs, observe.Route, observe.Add, c.Added)
	observe.Count(b.obs, observe.Route, observe.Remove, c.Removed)
}
