package trafficrules

import "github.com/flannel-go/flannel/pkg/observe"

var _ observe.Setter = (*Manager)(nil)

// SetObserver implements observe.Setter (restored rules are repairs of kind "rule"); before Setup.
func (m *Manager) SetObserver(o observe.Observer) { m.obs = o }
