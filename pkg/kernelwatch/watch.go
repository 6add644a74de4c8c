// Package kernelwatch kicks a reconciler when kernel objects of a Filter may have been changed
// by someone else, gathering bursts of rtnetlink notifications; it never says what changed.
// Our own writes come back as one idle round; objects kept being undone are backed off.
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
	Filter Filter
	// Namespace to watch; nil: the caller's own.
	Namespace *netns.NsHandle
	// Settle gathers a burst into one kick (0: 10 ms).
	Settle time.Duration
	// Backoff for objects that keep changing (zero: DefaultBackoff()).
	Backoff Backoff
	// RetryDelay before subscribing again after a socket failure (0: 1 s).
	RetryDelay time.Duration
}

// receiveBuffer: the echo of a big round rarely overflows it (overflow costs a round).
const receiveBuffer = 8 << 20

// Run calls kick, on its goroutine and never blocking, whenever selected objects may have changed
// and after each (re)subscription or loss, until ctx ends; only the first subscription can fail it.
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

// subscribe subscribes, then lists links with the matcher locked, so no change is missed.
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

// Change implements netlinkx.Subscriber.
func (w *watcher) Change(ch *netlinkx.Change) {
	w.mmu.Lock()
	o, ok := w.m.match(ch.Type, ch.Body)
	w.mmu.Unlock()
	if ok {
		w.add(o)
	}
}

// Lost implements netlinkx.Subscriber: the next kick is unconditional.
func (w *watcher) Lost() {
	w.overflows.Add(1)
	klog.V(1).InfoS("Kernel change notifications overflowed; comparing everything")
	w.markLost()
}

// read reads until ctx ends, re-subscribing after a failure and then kicking unconditionally.
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

// resubscribe retries every RetryDelay until it works (nil: ctx ended).
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

// receive reads until the Feed fails or ctx ends (an overflow is not a failure).
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

// add records a changed object; a batch past LargeBatch keeps none and is not counted or delayed.
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

// take returns and resets the batch; unconditional: a loss or mass change, kick at once.
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

// dispatch kicks after Settle, or after the back-off when every changed object is hot.
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
