package kube

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

// WatchLeases lists and watches the nodes (nodeReflector) and sends the peer leases to out: one
// snapshot once the first list is in, then a batch of events per burst of node changes.
// Only nodes annotated by a kube subnet manager are leases; a node update that leaves its
// lease as it was sends nothing; a deleted node (or one that stops being a peer) sends a
// removal. When the watch has to start over from a new list (its resource version
// expired), the difference between the new list and what was known is sent as events. It
// returns nil when ctx ends; API errors are logged and retried with back-off.
// GetNetworkConfig must have succeeded before.
func (m *Manager) WatchLeases(ctx context.Context, out chan<- subnet.WatchResult) error {
	m.mu.Lock()
	cfg := m.netCfg
	m.mu.Unlock()
	if cfg == nil {
		return errors.New("subnet/kube: WatchLeases called before GetNetworkConfig")
	}
	q := newNodeQueue()
	lctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.nodeReflector(lctx, q)
	}()
	defer func() {
		cancel()
		wg.Wait()
	}()

	w := leaseWatch{cfg: cfg, self: m.cachedNodeName(), nodes: map[string]*peerNode{}}
	synced := false
	started := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-q.signal:
		}
		b := q.drain()
		if b.replace {
			// A new list: the peers it lacks are gone.
			for name := range w.nodes {
				if _, ok := b.nodes[name]; !ok {
					b.nodes[name] = nil
				}
			}
		}
		w.quiet = !synced // until the snapshot is sent, events would be thrown away
		events := w.apply(b.nodes)
		var res subnet.WatchResult
		switch {
		case !synced && b.listed:
			synced = true
			res.Snapshot = w.snapshot()
			klog.InfoS("Node list received", "leases", len(res.Snapshot), "duration", time.Since(started))
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

// nodeReflector runs client-go's Reflector over the nodes until ctx ends, keeping q up
// to date: it lists them (first from the API server's cache), then watches from the
// list's resource version with bookmarks, each watch the server ends resuming from the
// last version seen. A watch that fails lists again (from the cache at that version;
// from etcd when it has expired), and the whole list replaces q's node set. Failures are
// reported to the observer (nodeWatchState, the errors with withHint's advice) and
// retried with the Reflector's back-off (0.8 s doubling to 30 s); the Reflector's own
// lines are logged at -v=2 and up (quietLogger). Nothing is resynchronised periodically.
func (m *Manager) nodeReflector(ctx context.Context, q *nodeQueue) {
	st := &nodeWatchState{m: m}
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			l, err := m.cs.listNodes(ctx, opts)
			switch {
			case err != nil && (ctx.Err() != nil || !serverFailure(opts, err)):
				return nil, err // stopping, or the Reflector lists again
			case err != nil:
				err = m.withHint(err)
				st.failed(observe.List, err)
				return nil, err
			}
			st.ok()
			return l, nil
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			w, err := m.cs.watchNodes(ctx, opts)
			switch {
			case err != nil && ctx.Err() != nil:
				return watch.NewEmptyWatch(), nil // stopping: the Reflector returns quietly
			case err != nil && !serverFailure(opts, err):
				return nil, err // the Reflector's own way to fall back or to list again
			case err != nil:
				err = m.withHint(err)
				st.failed(observe.Watch, err)
				return nil, err
			}
			st.ok()
			return w, nil
		},
	}
	logger := quietLogger()
	r := cache.NewReflectorWithOptions(lw, &apiNode{}, &nodeSink{m: m, q: q},
		cache.ReflectorOptions{Name: "nodes", TypeDescription: "*v1.Node", Logger: &logger})
	r.RunWithContext(klog.NewContext(ctx, logger))
}

// watchFailure reports whether a refused watch is a failure of the API server, not the
// Reflector's negotiation: a streaming list (sendInitialEvents) the server does not
// offer makes it list instead, and an expired resource version makes it list again.
func serverFailure(opts metav1.ListOptions, err error) bool {
	switch {
	case apierrors.IsResourceExpired(err), apierrors.IsGone(err):
		return false
	case opts.SendInitialEvents != nil && (apierrors.IsInvalid(err) || apierrors.IsBadRequest(err)):
		return false
	}
	return true
}

// nodeSink is the Reflector's store: it reduces each node to a peerNode at once and
// hands it to the queue; it keeps nothing itself.
type nodeSink struct {
	m *Manager
	q *nodeQueue
}

var _ cache.TransformingStore = (*nodeSink)(nil)

func (s *nodeSink) Add(obj any) error    { return s.put(obj) }
func (s *nodeSink) Update(obj any) error { return s.put(obj) }

func (s *nodeSink) put(obj any) error {
	n, ok := obj.(*apiNode)
	if !ok {
		return fmt.Errorf("node watch: unexpected %T", obj)
	}
	s.q.put(n.Name, s.m.slimNode(n))
	return nil
}

func (s *nodeSink) Delete(obj any) error {
	n, ok := obj.(*apiNode)
	if !ok {
		return fmt.Errorf("node watch: unexpected %T", obj)
	}
	s.q.put(n.Name, nil)
	return nil
}

func (s *nodeSink) Replace(items []any, _ string) error {
	nodes := make(map[string]*peerNode, len(items))
	for _, it := range items {
		n, ok := it.(*apiNode)
		if !ok {
			return fmt.Errorf("node list: unexpected %T", it)
		}
		nodes[n.Name] = s.m.slimNode(n)
	}
	s.q.replace(nodes)
	return nil
}

func (s *nodeSink) Resync() error { return nil }

// Transformer drops the annotations a peer does not need from the nodes the Reflector
// gathers when it receives a list as a stream of watch events.
func (s *nodeSink) Transformer() cache.TransformFunc {
	return func(obj any) (any, error) {
		if n, ok := obj.(*apiNode); ok {
			n.keepAnnotations(s.m.keep)
		}
		return obj, nil
	}
}

// nodeQueue hands the node changes from listWatch to WatchLeases without ever blocking
// listWatch: the latest state per node name (nil = deleted), coalesced, or a whole new
// list.
type nodeQueue struct {
	mu       sync.Mutex
	pending  map[string]*peerNode
	replaced bool // pending started from a full list: nodes not in it are gone
	listed   bool // a list has been received
	signal   chan struct{}
}

func newNodeQueue() *nodeQueue {
	return &nodeQueue{pending: map[string]*peerNode{}, signal: make(chan struct{}, 1)}
}

func (q *nodeQueue) notify() {
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

func (q *nodeQueue) put(name string, n *peerNode) {
	q.mu.Lock()
	q.pending[name] = n
	q.mu.Unlock()
	q.notify()
}

// replace makes nodes (by name) the whole node set: it supersedes every change pending.
func (q *nodeQueue) replace(nodes map[string]*peerNode) {
	q.mu.Lock()
	q.pending, q.replaced, q.listed = nodes, true, true
	q.mu.Unlock()
	q.notify()
}

// queued is what drain hands over.
type queued struct {
	nodes   map[string]*peerNode // latest state by name, nil = deleted
	replace bool                 // nodes is the whole set (plus later changes)
	listed  bool                 // a list has been received
}

func (q *nodeQueue) drain() queued {
	q.mu.Lock()
	defer q.mu.Unlock()
	b := queued{nodes: q.pending, replace: q.replaced, listed: q.listed}
	q.pending, q.replaced = map[string]*peerNode{}, false
	return b
}

// leaseWatch knows the flannel-managed peer nodes, good or bad (the admission rule
// judges them), and turns node changes into lease events. It keeps the peer nodes
// (never modified) rather than a lease per node, and builds leases when it needs them:
// at 5,000 nodes a second copy of every lease was a third of the Kubernetes side's
// memory. Nodes that are not managed by a flannel kube subnet manager, and the node
// itself, are not kept at all.
type leaseWatch struct {
	cfg   *subnet.Config
	self  string               // this node's name: its lease is not a peer's
	nodes map[string]*peerNode // managed peer nodes by name
	// quiet: apply folds the changes in without building events (before the first
	// snapshot, when every node would be an event nobody reads: at 5,000 nodes a
	// megabyte more at the daemon's peak).
	quiet bool
}

// apply folds the latest node states (nil = deleted) in and returns the lease events
// (none when quiet): every removal before every addition, since the consumer applies the
// last event about a subnet. A batch can hold both for one subnet (node x deleted and
// its pod CIDR given to a new node y, seen together after a relist or while the queue
// coalesced), and y's lease must stay. A node whose lease changes subnets is a removal
// of the old ones and an addition of the new ones. An update that leaves a node's lease
// as it was (a heartbeat, another annotation) sends nothing.
func (w *leaseWatch) apply(nodes map[string]*peerNode) []subnet.Event {
	var removed, added []subnet.Event
	emit := func(t subnet.EventType, c subnet.Candidate) {
		switch {
		case w.quiet:
		case t == subnet.EventRemoved:
			removed = append(removed, subnet.Event{Type: t, Lease: c.Lease, Origin: subnet.Origin{Name: c.Origin.Name}})
		default:
			added = append(added, subnet.Event{Type: t, Lease: c.Lease, Origin: c.Origin})
		}
	}
	for name, n := range nodes {
		old, had := w.nodes[name]
		if n == nil || !n.managed() || name == w.self {
			if had {
				delete(w.nodes, name)
				emit(subnet.EventRemoved, peerCandidate(old, w.cfg))
			}
			continue
		}
		if had && old.sameLease(n) {
			continue // keeps the version the lease last changed in
		}
		w.nodes[name] = n
		c := peerCandidate(n, w.cfg)
		if had {
			if o := peerCandidate(old, w.cfg); o.Lease.Key() != c.Lease.Key() {
				emit(subnet.EventRemoved, o)
			}
		}
		emit(subnet.EventAdded, c)
	}
	return append(removed, added...)
}

// snapshot is every managed peer node's candidate lease.
func (w *leaseWatch) snapshot() []subnet.Candidate {
	s := make([]subnet.Candidate, 0, len(w.nodes))
	for _, n := range w.nodes {
		s = append(s, peerCandidate(n, w.cfg))
	}
	return s
}
