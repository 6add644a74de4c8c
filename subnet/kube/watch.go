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

// WatchLeases sends the annotated nodes' leases: a snapshot after the first list, then a batch per
// burst of changes (unchanged leases send nothing). GetNetworkConfig must have succeeded.
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

// nodeReflector runs client-go's Reflector over the nodes until ctx ends: a cached list, then a
// watch with bookmarks, relisting on failure (backoff 0.8 s to 30 s); no periodic resync.
func (m *Manager) nodeReflector(ctx context.Context, q *nodeQueue) {
	st := &nodeWatchState{m: m}
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			l, err := m.cs.listNodes(ctx, opts, m.slimNode)
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

// serverFailure reports whether a refused watch is the API server's failure, not the
// Reflector's negotiation (no streaming list, expired resource version).
func serverFailure(opts metav1.ListOptions, err error) bool {
	switch {
	case apierrors.IsResourceExpired(err), apierrors.IsGone(err):
		return false
	case opts.SendInitialEvents != nil && (apierrors.IsInvalid(err) || apierrors.IsBadRequest(err)):
		return false
	}
	return true
}

// nodeSink is the Reflector's store: it slims each node and hands it to the queue.
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

// Replace takes a listed node set, its nodes slimmed (listNodes, Transformer) or not.
func (s *nodeSink) Replace(items []any, _ string) error {
	nodes := make(map[string]*peerNode, len(items))
	for _, it := range items {
		switch n := it.(type) {
		case *peerNode:
			nodes[n.Name] = n
		case *apiNode:
			nodes[n.Name] = s.m.slimNode(n)
		default:
			return fmt.Errorf("node list: unexpected %T", it)
		}
	}
	s.q.replace(nodes)
	return nil
}

func (s *nodeSink) Resync() error { return nil }

// Transformer slims each node of a streaming list as it arrives: the list's store holds
// peer nodes, which Replace takes as they are.
func (s *nodeSink) Transformer() cache.TransformFunc {
	return func(obj any) (any, error) {
		if n, ok := obj.(*apiNode); ok {
			return s.m.slimNode(n), nil
		}
		return obj, nil
	}
}

// nodeQueue hands node changes to WatchLeases without blocking the Reflector: the latest
// state per node (nil = deleted), coalesced, or a whole new list.
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

// replace makes nodes the whole node set, superseding every pending change.
func (q *nodeQueue) replace(nodes map[string]*peerNode) {
	q.mu.Lock()
	q.pending, q.replaced, q.listed = nodes, true, true
	q.mu.Unlock()
	q.notify()
}

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

// leaseWatch keeps the managed peer nodes, good or bad, and builds leases on demand: at
// 5,000 nodes a second copy of every lease was a third of the kube side's memory.
type leaseWatch struct {
	cfg   *subnet.Config
	self  string               // this node's name: its lease is not a peer's
	nodes map[string]*peerNode // managed peer nodes by name
	// quiet: apply builds no leases and no events (before the first snapshot; 1 MB at
	// 5,000 nodes).
	quiet bool
}

// apply folds in the latest node states (nil = deleted) and returns the events, none when
// quiet; removals come first, as a batch may move x's subnet to a new node y.
func (w *leaseWatch) apply(nodes map[string]*peerNode) []subnet.Event {
	var removed, added []subnet.Event
	emit := func(t subnet.EventType, c subnet.Candidate) {
		if t == subnet.EventRemoved {
			removed = append(removed, subnet.Event{Type: t, Lease: c.Lease, Origin: subnet.Origin{Name: c.Origin.Name}})
		} else {
			added = append(added, subnet.Event{Type: t, Lease: c.Lease, Origin: c.Origin})
		}
	}
	if len(w.nodes) == 0 {
		w.nodes = make(map[string]*peerNode, len(nodes))
	}
	for name, n := range nodes {
		old, had := w.nodes[name]
		if n == nil || !n.managed() || name == w.self {
			if had {
				delete(w.nodes, name)
				if !w.quiet {
					emit(subnet.EventRemoved, peerCandidate(old, w.cfg))
				}
			}
			continue
		}
		if had && old.sameLease(n) {
			continue // keeps the version the lease last changed in
		}
		w.nodes[name] = n
		if w.quiet {
			continue
		}
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

func (w *leaseWatch) snapshot() []subnet.Candidate {
	s := make([]subnet.Candidate, 0, len(w.nodes))
	for _, n := range w.nodes {
		s = append(s, peerCandidate(n, w.cfg))
	}
	return s
}
