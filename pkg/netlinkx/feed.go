package netlinkx

import (
	"context"
	"errors"
	"os"
	"sync"
	"time"

	"github.com/vishvananda/netns"
)

// Feed is one namespace's change subscription shared by several readers: each notification
// goes once to every Subscriber, in order, whoever read it. Safe for concurrent use.
type Feed struct {
	mu      sync.Mutex
	mon     *Monitor
	subs    []Subscriber
	deliver func(ch *Change) // made once: hands ch to every subscriber
}

// Subscriber is called with the Feed's lock held: Change and Lost must be quick, must not
// block and must not call the Feed. ch and its Body are valid only during the call.
type Subscriber interface {
	Change(ch *Change)
	// Lost reports dropped notifications: anything may have changed unseen.
	Lost()
}

// NewFeed opens a Feed in the calling process's namespace (see NewMonitor).
func NewFeed(rcvBuf int) (*Feed, error) {
	m, err := openMonitor()
	if err != nil {
		return nil, err
	}
	m.SetReceiveBuffer(rcvBuf)
	return newFeed(m), nil
}

// NewFeedAt is NewFeed in the network namespace ns.
func NewFeedAt(ns netns.NsHandle, rcvBuf int) (*Feed, error) {
	return inNetns(ns, func() (*Feed, error) { return NewFeed(rcvBuf) })
}

func newFeed(m *Monitor) *Feed {
	f := &Feed{mon: m}
	f.deliver = func(ch *Change) {
		for _, s := range f.subs {
			s.Change(ch)
		}
	}
	return f
}

// Subscribe adds s, joining the groups, and returns the function that removes it.
func (f *Feed) Subscribe(s Subscriber) (unsubscribe func() error, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.subs) == 0 {
		if err := f.mon.join(); err != nil {
			return nil, err
		}
	}
	f.subs = append(f.subs, s)
	return func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		for i, x := range f.subs {
			if x == s {
				f.subs = append(f.subs[:i], f.subs[i+1:]...)
				if len(f.subs) == 0 {
					return f.mon.leave()
				}
				return nil
			}
		}
		return nil
	}, nil
}

// Read hands what was collected to the subscribers without waiting, and a loss to every Lost.
func (f *Feed) Read() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	lost, err := f.mon.Read(f.deliver)
	if lost || err != nil {
		for _, s := range f.subs {
			s.Lost()
		}
	}
	return err
}

// Wait blocks until something is ready for Read, ctx ends or the Feed closes; one waiter at a time.
func (f *Feed) Wait(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { _ = f.mon.file.SetReadDeadline(time.Unix(1, 0)) })
	err := f.mon.Wait()
	if !stop() {
		_ = f.mon.file.SetReadDeadline(time.Time{})
	}
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// SetReceiveBuffer is Monitor.SetReceiveBuffer.
func (f *Feed) SetReceiveBuffer(n int) { f.mon.SetReceiveBuffer(n) }

// Close closes the socket; a Wait in progress returns an error.
func (f *Feed) Close() error { return f.mon.Close() }

// changeQueue keeps a Conn's notifications, minus its own echoes, until Changes reads them.
type changeQueue struct {
	pid  uint32
	mu   sync.Mutex
	buf  []byte
	ents []queued
	lost bool
}

type queued struct {
	typ      uint16
	pid      uint32
	off, end int
}

// maxQueued bounds a changeQueue, past which it reports a loss (a 20,000-peer round takes 2 MB).
const maxQueued = 8 << 20

func (q *changeQueue) Change(ch *Change) {
	if ch.Pid == q.pid {
		return // the echo of our own request
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.lost {
		return // the reader reads the kernel in full anyway
	}
	if len(q.buf)+len(ch.Body) > maxQueued {
		q.dropLocked()
		return
	}
	q.ents = append(q.ents, queued{typ: ch.Type, pid: ch.Pid, off: len(q.buf), end: len(q.buf) + len(ch.Body)})
	q.buf = append(q.buf, ch.Body...)
}

func (q *changeQueue) Lost() {
	q.mu.Lock()
	q.dropLocked()
	q.mu.Unlock()
}

func (q *changeQueue) dropLocked() {
	q.lost = true
	q.buf, q.ents = q.buf[:0], q.ents[:0]
}
