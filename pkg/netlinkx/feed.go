package netlinkx

import (
	"context"
	"errors"
	"os"
	"sync"
	"time"

	"github.com/vishvananda/netns"
)

// Feed is one subscription to the change notifications of a network namespace (a
// Monitor) shared by several readers: each notification, whichever reader's Read took
// it from the socket, is handed once to every Subscriber, in the kernel's order.
// pkg/kernelwatch and a Conn's Changes (vxlan's kernel cache) read one Feed: one socket
// and one parser serve both. The socket joins the notification groups while the Feed
// has subscribers. Safe for concurrent use.
type Feed struct {
	mu      sync.Mutex
	mon     *Monitor
	subs    []Subscriber
	deliver func(ch *Change) // made once: hands ch to every subscriber
}

// Subscriber receives a Feed's notifications. The Feed calls it with its lock held, from
// the goroutine whose Read took the notifications: Change and Lost must be quick, must
// not block and must not call the Feed. ch and its Body are valid only during the call.
type Subscriber interface {
	Change(ch *Change)
	// Lost reports that notifications were dropped (the receive buffer overflowed, or
	// one could not be read whole): anything may have changed unseen.
	Lost()
}

// NewFeed opens a Feed in the calling process's network namespace, with a receive
// buffer of rcvBuf bytes when larger than the default.
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

// Subscribe adds s, joining the notification groups when s is the first subscriber. The
// function it returns removes s, leaving the groups (and discarding what was collected)
// when s was the last.
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

// Read takes the notifications collected so far, without waiting, and hands them to the
// subscribers; a loss is reported to every subscriber's Lost. The error is the socket's.
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

// Wait blocks until a notification (or an overflow report) is ready for Read, ctx ends
// (ctx.Err()), or the Feed is closed (another error). One goroutine at a time may Wait.
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

// SetReceiveBuffer asks for a receive buffer of n bytes (see Monitor.SetReceiveBuffer).
func (f *Feed) SetReceiveBuffer(n int) { f.mon.SetReceiveBuffer(n) }

// Close closes the socket; a Wait in progress returns an error.
func (f *Feed) Close() error { return f.mon.Close() }

// changeQueue is a Conn's subscription to its Feed: it keeps, until Changes reads them,
// the notifications that are not the echo of the Conn's own requests (those carry its
// port id), in buffers reused from call to call.
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

// maxQueued bounds the bytes a changeQueue keeps between two Changes calls (the
// notifications of a 20,000-peer round's FDB writes take about 2 MB); past it the
// queue reports a loss.
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
