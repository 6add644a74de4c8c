package etcd

import (
	"fmt"

	"google.golang.org/grpc/connectivity"

	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

var (
	_ observe.Setter       = (*Manager)(nil)
	_ subnet.HealthChecker = (*Manager)(nil)
)

// SetObserver implements observe.Setter; call it before the manager is used.
func (m *Manager) SetObserver(o observe.Observer) { m.obs = o }

func (m *Manager) observer() observe.Observer { return observe.Or(m.obs) }

// Health implements subnet.HealthChecker: the client's gRPC connection must be ready. A
// watch on a lost connection stays silent, so this tells a live watch from a stalled one.
func (m *Manager) Health() error {
	m.mu.Lock()
	cli, closed := m.cli, m.closed
	m.mu.Unlock()
	switch {
	case closed:
		return errClosed
	case cli == nil:
		return fmt.Errorf("no etcd client yet (endpoints %v)", m.cfg.Endpoints)
	}
	conn := cli.ActiveConnection()
	if conn == nil {
		return fmt.Errorf("no etcd connection (endpoints %v)", m.cfg.Endpoints)
	}
	if s := conn.GetState(); s != connectivity.Ready {
		return m.withConnError(fmt.Errorf("etcd connection is %s (endpoints %v)", s, m.cfg.Endpoints))
	}
	return nil
}
