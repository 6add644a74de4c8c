package kube

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/subnet"
)

// WatchLeases runs a Node informer and sends the peer leases to out: one snapshot once
// the informer has synced, then a batch of events per burst of node changes. Only nodes
// annotated by a kube subnet manager are leases; a node update that leaves its lease as
// it was sends nothing; a deleted node (or one that stops being a peer) sends a removal.
// GetNetworkConfig must have succeeded before. It returns nil when ctx ends.
func (m *Manager) WatchLeases(ctx context.Context, out chan<- subnet.WatchResult) error {
	m.mu.Lock()
	cfg := m.netCfg
	m.mu.Unlock()
	if cfg == nil {
		return errors.New("subnet/kube: WatchLeases called before GetNetworkConfig")
	}
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return m.listSlim(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return m.cs.watchNodes(ctx, o)
		},
	}
	inf := cache.NewSharedIndexInformer(lw, &corev1.Node{}, 0, cache.Indexers{})
	if err := inf.SetTransform(m.slimNode); err != nil {
		return fmt.Errorf("subnet/kube: informer transform: %w", err)
	}
	if err := inf.SetWatchErrorHandler(func(_ *cache.Reflector, err error) {
		klog.ErrorS(withHint(err), "Node list/watch failed; client-go retries with backoff")
	}); err != nil {
		return fmt.Errorf("subnet/kube: informer error handler: %w", err)
	}
	q := newNodeQueue()
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    q.set,
		UpdateFunc: func(_, n any) { q.set(n) },
		DeleteFunc: q.remove,
	})
	if err != nil {
		return fmt.Errorf("subnet/kube: informer handler: %w", err)
	}
	ictx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		inf.RunWithContext(ictx)
	}()
	defer wg.Wait()

	w := leaseWatch{ann: m.ann, cfg: cfg, peers: map[string]*peerNode{}}
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	synced := false
	started := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-q.signal:
		case <-poll.C:
			if synced {
				poll.Stop()
				continue
			}
		}
		// HasSynced before draining: every event delivered before sync is then in the queue.
		nowSynced := synced || reg.HasSynced()
		w.quiet = !synced // until the snapshot is sent, events would be thrown away
		events := w.apply(q.drain())
		var res subnet.WatchResult
		switch {
		case !synced && nowSynced:
			synced = true
			res.Snapshot = w.snapshot()
			klog.InfoS("Node informer synced", "leases", len(res.Snapshot), "duration", time.Since(started))
		case synced && len(events) > 0:
			res.Events = events
		default:
			continue
		}
		select {
		case out <- res:
		case <-ctx.Done():
			return nil
		}
	}
}

// nodeQueue hands informer notifications to WatchLeases without ever blocking the
// informer: the latest state per node name (nil = deleted), coalesced.
type nodeQueue struct {
	mu      sync.Mutex
	pending map[string]*peerNode
	signal  chan struct{}
}

func newNodeQueue() *nodeQueue {
	return &nodeQueue{pending: map[string]*peerNode{}, signal: make(chan struct{}, 1)}
}

func (q *nodeQueue) put(name string, n *peerNode) {
	q.mu.Lock()
	q.pending[name] = n
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

func (q *nodeQueue) set(obj any) {
	if n, ok := obj.(*peerNode); ok {
		q.put(n.Name, n)
	}
}

func (q *nodeQueue) remove(obj any) {
	switch o := obj.(type) {
	case *peerNode:
		q.put(o.Name, nil)
	case cache.DeletedFinalStateUnknown:
		if n, ok := o.Obj.(*peerNode); ok {
			q.put(n.Name, nil)
			return
		}
		if _, name, err := cache.SplitMetaNamespaceKey(o.Key); err == nil {
			q.put(name, nil)
		}
	}
}

func (q *nodeQueue) drain() map[string]*peerNode {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.pending) == 0 {
		return nil
	}
	p := q.pending
	q.pending = map[string]*peerNode{}
	return p
}

// leaseWatch knows the peer nodes (those with a valid lease) and turns node changes into
// lease events. It keeps the informer's peer nodes themselves (shared, never modified)
// rather than a lease per node, and builds leases when it needs them: at 5,000 nodes a
// second copy of every lease was a third of the Kubernetes side's memory.
type leaseWatch struct {
	ann   Annotations
	cfg   *subnet.Config
	peers map[string]*peerNode // by node name; peerToLease succeeds for each
	// quiet: apply folds the changes in without building events (before the first
	// snapshot, when every node would be an event nobody reads: at 5,000 nodes a
	// megabyte more at the daemon's peak).
	quiet bool
}

func (w *leaseWatch) lease(n *peerNode) (subnet.Lease, error) {
	return peerToLease(n, w.ann, w.cfg)
}

// apply folds the latest node states (nil = deleted) in and returns the lease events
// (none when quiet).
func (w *leaseWatch) apply(nodes map[string]*peerNode) []subnet.Event {
	var events []subnet.Event
	emit := func(t subnet.EventType, l subnet.Lease) {
		if !w.quiet {
			events = append(events, subnet.Event{Type: t, Lease: l})
		}
	}
	for name, n := range nodes {
		oldNode, had := w.peers[name]
		var old subnet.Lease
		if had {
			old, _ = w.lease(oldNode) // succeeded when it was stored, and cfg is fixed
		}
		var (
			l   subnet.Lease
			err = errDeleted
		)
		if n != nil {
			l, err = w.lease(n)
			if err != nil && n.managed() {
				klog.V(2).InfoS("Ignoring node", "node", name, "reason", err.Error())
			}
		}
		switch {
		case err != nil:
			if had {
				delete(w.peers, name)
				emit(subnet.EventRemoved, old)
			}
		case !had:
			w.peers[name] = n
			emit(subnet.EventAdded, l)
		default:
			w.peers[name] = n
			if subnet.SamePeer(old, l) {
				continue
			}
			if old.Key() != l.Key() {
				emit(subnet.EventRemoved, old)
			}
			emit(subnet.EventAdded, l)
		}
	}
	return events
}

var errDeleted = errors.New("node deleted")

func (w *leaseWatch) snapshot() []subnet.Lease {
	s := make([]subnet.Lease, 0, len(w.peers))
	for _, n := range w.peers {
		if l, err := w.lease(n); err == nil {
			s = append(s, l)
		}
	}
	return s
}
