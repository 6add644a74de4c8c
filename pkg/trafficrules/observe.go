package trafficrules

import "github.com/flannel-go/flannel/backend"

var _ backend.ObserverSetter = (*Manager)(nil)

// SetObserver implements backend.ObserverSetter: rules restored after someone else
// changed them are reported as repairs of kind "rule". Call it before Setup.
func (m *Manager) SetObserver(o backend.Observer) { m.obs = o }
