package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/pkg/kubeapi"
	"github.com/flannel-go/flannel/subnet"
)

// WatchLeases lists and watches the nodes (listWatch) and sends the peer leases to out: one
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
		m.listWatch(lctx, q, m.lwTiming)
	}()
	defer func() {
		cancel()
		wg.Wait()
	}()

	w := leaseWatch{ann: m.ann, cfg: cfg, peers: map[string]*peerNode{}}
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
			for name := range w.peers {
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

// listWatchTiming are listWatch's delays (tests shorten them).
type listWatchTiming struct {
	minBackoff, maxBackoff time.Duration // after a failure: doubling from min to max
	minWatch               time.Duration // a watch that ends sooner, without events, counts as a failure
	// wait waits d or until ctx ends (false); nil: a timer. Tests record the delays.
	wait func(ctx context.Context, d time.Duration) bool
}

func (t *listWatchTiming) defaults() {
	if t.minBackoff == 0 {
		t.minBackoff = 800 * time.Millisecond
	}
	if t.maxBackoff == 0 {
		t.maxBackoff = 30 * time.Second
	}
	if t.minWatch == 0 {
		t.minWatch = time.Second
	}
	if t.wait == nil {
		t.wait = func(ctx context.Context, d time.Duration) bool {
			tm := time.NewTimer(d)
			defer tm.Stop()
			select {
			case <-ctx.Done():
				return false
			case <-tm.C:
				return true
			}
		}
	}
}

// listTimeout bounds one node list (thousands of nodes, streamed).
const listTimeout = 5 * time.Minute

// listWatch keeps q up to date with the nodes until ctx ends: it lists them (from the API
// server's cache: resourceVersion 0), then watches from the list's resource version, and
// when a watch ends watches again from the last resource version seen (events and
// bookmarks move it). When that version has expired (410 Gone, or an ERROR event saying
// so) it lists again, from etcd, and hands the whole list to q as a replacement. Failures
// are logged and retried with back-off; nothing is resynchronised periodically, as no
// event is missed: every watch starts where the last one ended.
//
// The back-off doubles with each failure (a failed list or watch, a watch that ends at
// once without an event) and starts again from the minimum after a successful list and
// after a watch that delivered node events (bookmarks do not count) or ran at least
// minWatch without expiring. An expired watch lists again at once, except when the
// watch before it expired too with nothing in between, or it was the first watch after
// a list and gave no event: then it backs off, and the lists that follow do not reset
// the back-off, so that a server answering 410 to every watch gets a list at most every
// maxBackoff.
func (m *Manager) listWatch(ctx context.Context, q *nodeQueue, t listWatchTiming) {
	t.defaults()
	backoff := t.minBackoff
	fail := func(what string, err error) bool {
		if ctx.Err() != nil {
			return false
		}
		klog.ErrorS(withHint(err), what, "retryIn", backoff)
		if !t.wait(ctx, backoff) {
			return false
		}
		backoff = min(2*backoff, t.maxBackoff)
		return true
	}
	listRV := "0"
	rv := ""
	expired := 0 // watches in a row that ended 410 without delivering anything
	for ctx.Err() == nil {
		justListed := rv == ""
		if rv == "" {
			lctx, cancel := context.WithTimeout(ctx, listTimeout)
			l, err := m.listSlim(lctx, listRV)
			cancel()
			if err != nil {
				if !fail("Node list failed; retrying", err) {
					return
				}
				continue
			}
			if expired == 0 {
				backoff = t.minBackoff
			}
			nodes := make(map[string]*peerNode, len(l.Items))
			for _, p := range l.Items {
				nodes[p.Name] = p
			}
			q.replace(nodes)
			rv = l.ResourceVersion
			if rv == "" {
				rv = "0" // a list without a version (not from a real API server): watch from now
			}
		}
		start := time.Now()
		events, err := m.watchOnce(ctx, q, &rv)
		if ctx.Err() != nil {
			return
		}
		ran := time.Since(start) >= t.minWatch
		if events > 0 || (ran && !kubeapi.IsGone(err)) {
			backoff, expired = t.minBackoff, 0
		}
		switch {
		case kubeapi.IsGone(err):
			expired++
			if expired > 1 || (justListed && events == 0) {
				// Expired again, or right after a list: do not list again at once.
				if !fail("Node watch expired again; listing the nodes again", err) {
					return
				}
			} else {
				klog.InfoS("Node watch expired; listing the nodes again", "resourceVersion", rv, "reason", err.Error())
			}
			rv, listRV = "", "" // the latest list, from etcd
		case err != nil:
			if !fail("Node watch failed; retrying", err) {
				return
			}
		case events == 0 && !ran:
			// Ended at once without an event: do not spin.
			if !fail("Node watch ended at once; retrying", errors.New("watch closed by the server")) {
				return
			}
		}
	}
}

// watchOnce runs one watch from *rv until the server ends it (nil), it fails, or ctx ends,
// and moves *rv along. It returns how many node events (not bookmarks) it read.
func (m *Manager) watchOnce(ctx context.Context, q *nodeQueue, rv *string) (int, error) {
	// As client-go: the server ends each watch after 5 to 10 minutes, spreading the
	// re-watches of many clients.
	timeout := 300 + rand.IntN(300)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	body, err := m.cs.watchNodes(wctx, *rv, timeout)
	if err != nil {
		return 0, err
	}
	defer body.Close()
	dec := kubeapi.NewWatchDecoder(body)
	n := 0
	for {
		ev, err := dec.Next()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		var node apiNode
		if err := json.Unmarshal(ev.Object, &node); err != nil {
			return n, fmt.Errorf("decode watched node: %w", err)
		}
		if node.Metadata.ResourceVersion != "" {
			*rv = node.Metadata.ResourceVersion
		}
		switch ev.Type {
		case kubeapi.Added, kubeapi.Modified:
			n++
			q.put(node.Metadata.Name, m.slimNode(&node))
		case kubeapi.Deleted:
			n++
			q.put(node.Metadata.Name, nil)
		}
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

// leaseWatch knows the peer nodes (those with a valid lease) and turns node changes into
// lease events. It keeps the peer nodes (never modified) rather than a lease per node, and
// builds leases when it needs them: at 5,000 nodes a second copy of every lease was a
// third of the Kubernetes side's memory. Nodes that are not peers are not kept at all.
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
// (none when quiet): every removal before every addition, since the consumer applies the
// last event about a subnet. A batch can hold both for one subnet (node x deleted and
// its pod CIDR given to a new node y, seen together after a relist or while the queue
// coalesced), and y's lease must stay.
func (w *leaseWatch) apply(nodes map[string]*peerNode) []subnet.Event {
	var removed, added []subnet.Event
	emit := func(t subnet.EventType, l subnet.Lease) {
		switch {
		case w.quiet:
		case t == subnet.EventRemoved:
			removed = append(removed, subnet.Event{Type: t, Lease: l})
		default:
			added = append(added, subnet.Event{Type: t, Lease: l})
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
	return append(removed, added...)
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
