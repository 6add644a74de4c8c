package kubeapi

import (
	"context"
	"net"
	"sync"
)

// connTracker remembers the connections a transport dialed and still has open, so that
// all of them can be closed when the client certificate changes: an HTTP/2 connection
// kept busy by a watch is never idle, and only a new handshake presents a new
// certificate.
type connTracker struct {
	dial func(ctx context.Context, network, addr string) (net.Conn, error)

	mu    sync.Mutex
	conns map[*trackedConn]struct{}
}

func newConnTracker(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *connTracker {
	return &connTracker{dial: dial, conns: map[*trackedConn]struct{}{}}
}

// DialContext dials with the wrapped dialer and tracks the connection until it is closed.
func (t *connTracker) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := t.dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, t: t}
	t.mu.Lock()
	t.conns[tc] = struct{}{}
	t.mu.Unlock()
	return tc, nil
}

// closeAll closes every open connection (requests on them fail; new ones dial again).
func (t *connTracker) closeAll() {
	t.mu.Lock()
	conns := t.conns
	t.conns = map[*trackedConn]struct{}{}
	t.mu.Unlock()
	for c := range conns {
		_ = c.Conn.Close()
	}
}

// open is how many connections are tracked.
func (t *connTracker) open() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}

type trackedConn struct {
	net.Conn
	t    *connTracker
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.t.mu.Lock()
		delete(c.t.conns, c)
		c.t.mu.Unlock()
	})
	return c.Conn.Close()
}
