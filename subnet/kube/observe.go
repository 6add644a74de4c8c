package kube

import (
	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/pkg/observe"
)

var _ observe.Setter = (*Manager)(nil)

// SetObserver implements observe.Setter. It must be called before the manager is used.
func (m *Manager) SetObserver(o observe.Observer) { m.obs = o }

func (m *Manager) observer() observe.Observer { return observe.Or(m.obs) }

// nodeWatchState turns the Reflector's list and watch attempts into observations: failures are
// DatastoreErrors (the first after a success restarts the watch), successes report it live.
type nodeWatchState struct {
	m    *Manager
	down bool
}

func (s *nodeWatchState) failed(op observe.Op, err error) {
	s.m.observer().DatastoreError(op, err)
	if !s.down {
		s.down = true
		s.m.observer().WatchRestarted(observe.LeasesWatch, err)
	}
	klog.V(2).InfoS("Node list or watch failed; retrying", "op", string(op), "err", err)
}

func (s *nodeWatchState) ok() {
	s.down = false
	s.m.observer().WatchLive(observe.LeasesWatch)
}

// quietSink logs the Reflector's lines two levels down, errors as info: nodeWatchState reports.
type quietSink struct{ klog.LogSink }

func (q quietSink) Enabled(level int) bool { return q.LogSink.Enabled(level + 2) }

func (q quietSink) Info(level int, msg string, kv ...any) {
	if q.LogSink.Enabled(level + 2) {
		q.LogSink.Info(level+2, msg, kv...)
	}
}

func (q quietSink) Error(err error, msg string, kv ...any) {
	if q.LogSink.Enabled(2) {
		q.LogSink.Info(2, msg, append(kv, "err", err)...)
	}
}

func (q quietSink) WithValues(kv ...any) klog.LogSink { return quietSink{q.LogSink.WithValues(kv...)} }
func (q quietSink) WithName(name string) klog.LogSink { return quietSink{q.LogSink.WithName(name)} }

func quietLogger() klog.Logger {
	l := klog.Background()
	return l.WithSink(quietSink{l.GetSink()})
}
