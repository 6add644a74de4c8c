// Package kernelwatch tells a reconciler when the kernel state it owns may have been
// changed by someone else. It reads rtnetlink notifications (links, addresses,
// IPv4/IPv6 routes, nexthops, neighbours and FDB entries) from a netlinkx.Feed, the one
// the backend already reads for itself when it has one (Filter.Feed: one notification
// path for both), else one of its own; it keeps those about the objects a Filter
// selects, gathers bursts and calls a kick function: "look at the kernel again soon". It
// never says what changed; the reconciler compares the kernel with its desired state, so
// a lost or reordered notification costs nothing but a full comparison.
//
// The reconciler's own writes come back as notifications too. They cost one more
// comparison that finds nothing to do (and writes nothing, so it raises no further
// notifications): there is no loop. Someone who keeps undoing our state would cause one,
// so objects that keep changing are tracked (Backoff): their repairs are delayed
// exponentially and each such object is logged once, by name.
package kernelwatch

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/pkg/netlinkx"
)

// Config configures Run.
type Config struct {
	// Filter selects the objects whose changes matter.
	Filter Filter
	// Namespace is the network namespace to watch; nil means the caller's own.
	Namespace *netns.NsHandle
	// Settle is how long a burst of notifications is gathered into one kick
	// (0: 10 ms).
	Settle time.Duration
	// Backoff slows down the repair of objects that keep changing (zero value:
	// DefaultBackoff()).
	Backoff Backoff
	// RetryDelay is the wait before subscribing again after the socket failed (0: 1 s).
	RetryDelay time.Duration
}

// receiveBuffer is the socket receive buffer we ask for: large enough that the echo of
// a big reconcile round rarely overflows it (an overflow only costs a full round).
const receiveBuffer = 8 << 20

// Run watches until ctx ends, calling kick whenever objects the filter selects may have
// changed. kick is called from Run's goroutine and must not block (a non-blocking send
// on a channel of capacity one is the intended use); several changes may be folded into
// one call. kick is also called after every (re)subscription and after the kernel
// reported lost notifications (ENOBUFS), since anything may have changed unseen.
// Run returns nil when ctx ends and an error only when the first subscription fails;
// later socket failures are logged and the subscription is renewed.
func Run(ctx context.Context, cfg Config, kick func()) error {
	if cfg.Settle <= 0 {
		cfg.Settle = 10 * time.Millisecond
	}
	if cfg.Backoff == (Backoff{}) {
		cfg.Backoff = DefaultBackoff()
	}
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = time.Second
	}
	w := &watcher{cfg: cfg, m: newMatcher(cfg.Filter), pending: make(map[Object]struct{}), wake: make(chan struct{}, 1)}
	s, err := w.subscribe()
	if err != nil {
		return fmt.Errorf("kernelwatch: %w", err)
	}
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		w.read(ctx, s)
	}()
	w.dispatch(ctx, kick)
	<-readerDone
	return nil
}

type watcher struct {
	cfg Config

	mmu sync.Mutex // the matcher: Change runs on whichever goroutine reads the Feed
	m   *matcher

	mu      sync.Mutex
	pending map[Object]struct{}
	spare   map[Object]struct{} // the batch take returned before: dispatch is done with it, take reuses it
	mass    bool                // more than Backoff.LargeBatch objects changed: pending is not kept
	lost    bool                // notifications were lost: the next kick is unconditional

	wake      chan struct{}
	overflows atomic.Int64 // losses reported
}

// source is the Feed a watcher is subscribed to.
type source struct {
	feed  *netlinkx.Feed
	own   bool // opened by the watcher: closed, and opened again when it fails
	unsub func() error
}

func (s *source) close() {
	_ = s.unsub()
	if s.own {
		s.feed.Close()
	}
}

// subscribe subscribes to the filter's Feed, or opens one, and refreshes the link index
// map from a listing made after the subscription, the matcher locked meanwhile, so that
// no change falls in between.
func (w *watcher) subscribe() (*source, error) {
	s := &source{feed: w.cfg.Filter.Feed}
	var h *netlink.Handle
	var err error
	if w.cfg.Namespace != nil {
		if s.feed == nil {
			s.feed, err = netlinkx.NewFeedAt(*w.cfg.Namespace, receiveBuffer)
			s.own = true
		}
		if err == nil {
			h, err = netlink.NewHandleAt(*w.cfg.Namespace, unix.NETLINK_ROUTE)
		}
	} else {
		if s.feed == nil {
			s.feed, err = netlinkx.NewFeed(receiveBuffer)
			s.own = true
		}
		if err == nil {
			h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
		}
	}
	if err != nil {
		if s.own && s.feed != nil {
			s.feed.Close()
		}
		return nil, fmt.Errorf("subscribe to rtnetlink notifications: %w", err)
	}
	defer h.Close()
	w.mmu.Lock()
	defer w.mmu.Unlock()
	if s.unsub, err = s.feed.Subscribe(w); err != nil {
		if s.own {
			s.feed.Close()
		}
		return nil, fmt.Errorf("subscribe to rtnetlink notifications: %w", err)
	}
	links, err := h.LinkList()
	if err != nil {
		s.close()
		return nil, fmt.Errorf("list links: %w", err)
	}
	idx := make(map[int]string, len(links))
	for _, l := range links {
		idx[l.Attrs().Index] = l.Attrs().Name
	}
	w.m.setLinks(idx)
	return s, nil
}

// Change implements netlinkx.Subscriber: a notification about a watched object is
// gathered for the next kick.
func (w *watcher) Change(ch *netlinkx.Change) {
	w.mmu.Lock()
	o, ok := w.m.match(ch.Type, ch.Body)
	w.mmu.Unlock()
	if ok {
		w.add(o)
	}
}

// Lost implements netlinkx.Subscriber: what was dropped is unknown, so the next kick is
// unconditional.
func (w *watcher) Lost() {
	w.overflows.Add(1)
	klog.V(1).InfoS("Kernel change notifications overflowed; comparing everything")
	w.markLost()
}

// read reads the Feed until ctx ends. A Feed of its own that fails is opened again; a
// shared one is read again after RetryDelay. Either way the next kick is unconditional.
func (w *watcher) read(ctx context.Context, s *source) {
	for {
		err := w.receive(ctx, s.feed)
		if ctx.Err() != nil {
			s.close()
			return
		}
		if s.own {
			s.close()
			if s = w.resubscribe(ctx, err); s == nil {
				return
			}
		} else {
			klog.ErrorS(err, "Kernel change notifications failed; reading again", "retryIn", w.cfg.RetryDelay)
			select {
			case <-ctx.Done():
				s.close()
				return
			case <-time.After(w.cfg.RetryDelay):
			}
		}
		w.markLost()
	}
}

// resubscribe opens a Feed again, every RetryDelay, until it works (nil: ctx ended).
func (w *watcher) resubscribe(ctx context.Context, err error) *source {
	for {
		klog.ErrorS(err, "Kernel change notifications failed; subscribing again", "retryIn", w.cfg.RetryDelay)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(w.cfg.RetryDelay):
		}
		s, serr := w.subscribe()
		if serr == nil {
			return s
		}
		err = serr
	}
}

// receive reads notifications until the Feed fails or ctx ends. An overflow is not a
// failure: the Feed reports it to Lost and goes on.
func (w *watcher) receive(ctx context.Context, f *netlinkx.Feed) error {
	for {
		if err := f.Wait(ctx); err != nil {
			return err
		}
		if err := f.Read(); err != nil {
			return err
		}
	}
}

// add records a changed object. Past LargeBatch objects a batch is a mass change, which
// the damper neither counts nor delays: the objects are no longer kept (the echo of a
// round that programmed 20,000 peers would otherwise fill a map of them).
func (w *watcher) add(o Object) {
	w.mu.Lock()
	if !w.mass {
		w.pending[o] = struct{}{}
		if len(w.pending) > w.cfg.Backoff.LargeBatch {
			w.mass = true
			clear(w.pending)
		}
	}
	w.mu.Unlock()
	w.signal()
}

func (w *watcher) markLost() {
	w.mu.Lock()
	w.lost = true
	w.mu.Unlock()
	w.signal()
}

func (w *watcher) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// take returns and resets what was gathered. unconditional reports lost notifications
// or a mass change: the kick is due at once, whatever the objects.
func (w *watcher) take() (batch map[Object]struct{}, unconditional bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	batch, unconditional = w.pending, w.lost || w.mass
	next := w.spare
	if next == nil {
		next = make(map[Object]struct{})
	}
	clear(next)
	w.pending, w.spare = next, batch
	w.lost, w.mass = false, false
	return batch, unconditional
}

// dispatch turns gathered changes into kicks: after Settle, at once unless every
// changed object is hot, else after the back-off delay (a later batch with a cold
// object kicks at once).
func (w *watcher) dispatch(ctx context.Context, kick func()) {
	d := newDamper(w.cfg.Backoff)
	var delayed *time.Timer
	var delayedC <-chan time.Time
	var due time.Time
	stopDelayed := func() {
		if delayed != nil {
			delayed.Stop()
		}
		delayed, delayedC = nil, nil
	}
	defer stopDelayed()
	kick() // the state may have changed before we subscribed
	for {
		select {
		case <-ctx.Done():
			return
		case <-delayedC:
			stopDelayed()
			klog.V(2).InfoS("Repairing kernel objects after back-off")
			kick()
			continue
		case <-w.wake:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(w.cfg.Settle):
		}
		batch, urgent := w.take()
		if len(batch) == 0 && !urgent {
			continue // a wake-up for changes an earlier batch already took
		}
		now := time.Now()
		wait, hot := d.batch(now, batch)
		for _, h := range hot {
			klog.InfoS("A kernel object we own keeps being changed by someone else; slowing down its repair",
				"object", h.Obj.String(), "changes", h.Changes, "window", w.cfg.Backoff.Window, "repairIn", h.Wait)
		}
		if urgent || wait == 0 {
			stopDelayed()
			if klog.V(2).Enabled() {
				for o := range batch {
					klog.V(2).InfoS("Kernel change; reconciling", "object", o.String(), "changes", len(batch))
					break
				}
			}
			kick()
			continue
		}
		if delayed == nil || now.Add(wait).Before(due) {
			stopDelayed()
			delayed = time.NewTimer(wait)
			delayedC, due = delayed.C, now.Add(wait)
		}
	}
}
