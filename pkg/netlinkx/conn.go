package netlinkx

import (
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Limits of one round trip of Conn.Run: the requests sent with one sendmsg, whose
// replies (errors, echoes) must fit in the socket's receive buffer.
const (
	chunkMsgs  = 256
	chunkBytes = 64 << 10
	rcvBuf     = 4 << 20
	rcvTimeout = 30 * time.Second
)

// Conn is a raw NETLINK_ROUTE socket for what the netlink library does one request at a
// time: pipelined writes (Run sends many requests per round trip) and lean dumps filtered
// by the kernel (Routes, Neighs, Nexthops), parsed without per-object allocations. It is
// not safe for concurrent use.
type Conn struct {
	fd    int
	feed  *Feed        // change notifications (changes.go)
	q     *changeQueue // our subscription to feed; nil: not subscribed
	unsub func() error
	// what Changes hands out and the buffers it gives back to q
	ch        Change
	spareBuf  []byte
	spareEnts []queued
	seq       uint32
	rbuf      []byte
	req       Batch // scratch for dump requests
	st        []reply
}

type reply struct {
	err  error
	id   uint32
	seen bool
}

// Open opens a Conn in the calling process's network namespace.
func Open() (*Conn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	c := &Conn{fd: fd, rbuf: make([]byte, 64<<10), seq: uint32(time.Now().UnixNano())}
	if err := c.setup(); err != nil {
		unix.Close(fd)
		return nil, err
	}
	m, err := openMonitor()
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	c.feed = newFeed(m)
	return c, nil
}

// OpenAt opens a Conn in the network namespace ns.
func OpenAt(ns netns.NsHandle) (*Conn, error) { return inNetns(ns, Open) }

// inNetns calls open on a locked OS thread that enters ns and returns: sockets belong to
// the namespace they are made in. If the thread cannot return, it is discarded.
func inNetns[T any](ns netns.NsHandle, open func() (T, error)) (T, error) {
	type res struct {
		v   T
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		var zero T
		cur, err := netns.Get()
		if err != nil {
			ch <- res{zero, fmt.Errorf("current netns: %w", err)}
			return // the thread is discarded with the locked goroutine
		}
		defer cur.Close()
		if err := netns.Set(ns); err != nil {
			ch <- res{zero, fmt.Errorf("enter netns: %w", err)}
			return
		}
		v, err := open()
		if err := netns.Set(cur); err == nil {
			runtime.UnlockOSThread()
		}
		ch <- res{v, err}
	}()
	r := <-ch
	return r.v, r.err
}

func (c *Conn) setup() error {
	if err := unix.Bind(c.fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("bind netlink socket: %w", err)
	}
	// Error replies without the request copied in; kernel-side dump filters. Both are
	// optimisations the parsers do not depend on, so older kernels without them work.
	_ = unix.SetsockoptInt(c.fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	_ = unix.SetsockoptInt(c.fd, unix.SOL_NETLINK, unix.NETLINK_EXT_ACK, 1)
	_ = unix.SetsockoptInt(c.fd, unix.SOL_NETLINK, unix.NETLINK_GET_STRICT_CHK, 1)
	if err := unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvBuf); err != nil {
		_ = unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvBuf)
	}
	tv := unix.NsecToTimeval(rcvTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("netlink socket timeout: %w", err)
	}
	return nil
}

// recv reads one datagram (unix.Recvfrom would allocate the sender's address each time).
func recv(fd int, buf []byte, flags int) (int, error) {
	if flags == 0 {
		return unix.Read(fd, buf)
	}
	n, _, err := unix.Recvfrom(fd, buf, flags)
	return n, err
}

// Close closes the socket (and the change socket of Subscribe).
func (c *Conn) Close() error {
	c.feed.Close()
	return unix.Close(c.fd)
}

// errLost is reported for requests whose reply the kernel dropped (receive buffer full):
// their outcome is unknown; a reconciler reads the state back next round.
var errLost = errors.New("netlink reply lost (receive buffer overrun); outcome unknown")

// SocketError is the outcome Run reports for a request whose fate is unknown because the
// socket itself failed (a send or a receive): not the kernel's answer to that request.
// It does not unwrap to the socket's errno, so that the error classes of requests
// (IsNotFound, a backend's refusal reasons) never match it.
type SocketError struct{ Err error }

func (e *SocketError) Error() string { return e.Err.Error() }

// Run sends the batch's requests in order, many per round trip, and calls done once per
// request, in order, with its outcome: nil or the kernel's error for that request, and
// for NexthopAdd the id the kernel gave the new nexthop. The kernel handles the requests
// of one socket in order, and answers each on its own, so a request may depend on
// earlier ones of the same batch and an error belongs to the request it is reported
// for. Run returns an error only when the socket itself fails; done has then been
// called for every request with its known outcome or a *SocketError.
func (c *Conn) Run(b *Batch, done func(tag int, err error, nhID uint32)) error {
	var sockErr error
	for i := 0; i < len(b.msgs); {
		j, size := i, 0
		for j < len(b.msgs) && j-i < chunkMsgs {
			l := b.msgs[j].end - b.msgs[j].off
			if size > 0 && size+l > chunkBytes {
				break
			}
			size += l
			j++
		}
		if sockErr == nil {
			sockErr = c.runChunk(b, i, j)
		} else {
			c.st = c.st[:0]
			for range j - i {
				c.st = append(c.st, reply{err: &SocketError{sockErr}, seen: true})
			}
		}
		for k := i; k < j; k++ {
			r := c.st[k-i]
			done(b.msgs[k].tag, r.err, r.id)
		}
		i = j
	}
	return sockErr
}

// runChunk sends requests [i, j) of b in one sendmsg and collects their outcomes in c.st.
func (c *Conn) runChunk(b *Batch, i, j int) error {
	n := j - i
	c.st = c.st[:0]
	for range n {
		c.st = append(c.st, reply{})
	}
	first := c.seq + 1
	for k := i; k < j; k++ {
		c.seq++
		m := b.buf[b.msgs[k].off:]
		native.PutUint32(m[8:], c.seq)
		native.PutUint32(m[12:], 0)
		fl := native.Uint16(m[6:]) &^ unix.NLM_F_ACK
		if k == j-1 {
			fl |= unix.NLM_F_ACK
		}
		native.PutUint16(m[6:], fl)
	}
	last := c.seq
	if err := unix.Sendto(c.fd, b.buf[b.msgs[i].off:b.msgs[j-1].end], 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		err = fmt.Errorf("netlink send: %w", err)
		for k := range c.st {
			c.st[k] = reply{err: &SocketError{err}, seen: true}
		}
		return err
	}
	lost := false
	for {
		flags := 0
		if lost {
			flags = unix.MSG_DONTWAIT
		}
		nr, err := recv(c.fd, c.rbuf, flags)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.ENOBUFS) {
			lost = true
			continue
		}
		if lost && (errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EWOULDBLOCK)) {
			break
		}
		if err != nil {
			err = fmt.Errorf("netlink receive: %w", err)
			for k := range c.st {
				if !c.st[k].seen {
					c.st[k] = reply{err: &SocketError{err}, seen: true}
				}
			}
			return err
		}
		gotLast := false
		eachMsg(c.rbuf[:nr], func(h msgHdr, body []byte) bool {
			idx := int(h.Seq - first)
			if h.Seq-first >= uint32(n) {
				return true
			}
			r := &c.st[idx]
			switch h.Type {
			case unix.NLMSG_ERROR:
				r.seen = true
				if len(body) >= 4 {
					if e := int32(native.Uint32(body[0:4])); e != 0 {
						r.err = unix.Errno(-e)
						if msg := extAckMsg(h.Flags, body); msg != "" {
							r.err = fmt.Errorf("%s: %w", msg, unix.Errno(-e))
						}
					}
				}
				if h.Seq == last {
					gotLast = true
				}
			case unix.RTM_NEWNEXTHOP:
				var nh Nexthop
				if ParseNexthop(body, &nh) == nil {
					r.id = nh.ID
				}
			}
			return true
		})
		if gotLast && !lost {
			break
		}
	}
	for k := range c.st {
		r := &c.st[k]
		switch {
		case r.err != nil:
		case b.msgs[i+k].echo && r.id == 0:
			if lost || !r.seen {
				r.err = errLost // no echo and no error: its reply was dropped
			} else {
				r.err = errors.New("netlink: no id in the kernel's reply")
			}
		case lost && !r.seen && i+k == j-1:
			r.err = errLost
		}
	}
	if lost {
		// Requests without echo whose error reply may have been dropped: unknown.
		for k := range c.st {
			if r := &c.st[k]; r.err == nil && !r.seen && !b.msgs[i+k].echo {
				r.err = errLost
			}
		}
	}
	return nil
}

// extAckMsg returns the extended-ack message (NLMSGERR_ATTR_MSG) of an error reply
// whose header flags are fl.
func extAckMsg(fl uint16, body []byte) string {
	if fl&unix.NLM_F_ACK_TLVS == 0 || len(body) < 4+unix.SizeofNlMsghdr {
		return ""
	}
	// body: error (4), the request's header, its payload unless capped, then TLVs
	off := 4 + unix.SizeofNlMsghdr
	if fl&unix.NLM_F_CAPPED == 0 {
		off = 4 + int(native.Uint32(body[4:8]))
	}
	if off < 4+unix.SizeofNlMsghdr || off > len(body) {
		return ""
	}
	msg := ""
	_ = Attrs(body[off:], func(typ uint16, v []byte) {
		if typ == unix.NLMSGERR_ATTR_MSG && len(v) > 0 {
			if v[len(v)-1] == 0 {
				v = v[:len(v)-1]
			}
			msg = string(v)
		}
	})
	return msg
}

// dump sends the request built in c.req as a dump and calls f with the body of each
// message of type typ. An interrupted dump (NLM_F_DUMP_INTR) returns
// netlink.ErrDumpInterrupted after draining.
func (c *Conn) dump(typ uint16, f func(body []byte) error) error {
	m := c.req.buf[c.req.msgs[0].off:c.req.msgs[0].end]
	c.seq++
	seq := c.seq
	native.PutUint32(m[8:], seq)
	native.PutUint16(m[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	if err := unix.Sendto(c.fd, m, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink send: %w", err)
	}
	var ferr error
	intr := false
	for {
		nr, err := recv(c.fd, c.rbuf, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("netlink receive: %w", err)
		}
		done := false
		var result error
		ok := eachMsg(c.rbuf[:nr], func(h msgHdr, body []byte) bool {
			if h.Seq != seq {
				return true
			}
			if h.Flags&unix.NLM_F_DUMP_INTR != 0 {
				intr = true
			}
			switch h.Type {
			case unix.NLMSG_DONE:
				done, result = true, ferr
				switch {
				case ferr != nil:
				case intr:
					result = netlink.ErrDumpInterrupted
				case len(body) >= 4:
					if e := int32(native.Uint32(body[0:4])); e < 0 {
						result = unix.Errno(-e)
					}
				}
				return false
			case unix.NLMSG_ERROR:
				done, result = true, ferr
				if len(body) >= 4 {
					if e := int32(native.Uint32(body[0:4])); e != 0 {
						result = unix.Errno(-e)
					}
				}
				return false
			case typ:
				if ferr == nil {
					ferr = f(body)
				}
			}
			return true
		})
		if done {
			return result
		}
		if !ok {
			return errors.New("netlink: malformed message in dump")
		}
	}
}

// RouteFilter selects routes in a dump; zero fields match everything.
type RouteFilter struct {
	Family uint8  // unix.AF_INET or unix.AF_INET6 (required)
	Table  uint32 // e.g. unix.RT_TABLE_MAIN
	Oif    int    // output interface
}

// Routes dumps the routes the filter selects (filtered by the kernel when it supports
// strict dump checks, and here again) and calls f for each; f must not keep r.
func (c *Conn) Routes(fl RouteFilter, f func(r *Route)) error {
	c.req.Reset()
	c.req.begin(unix.RTM_GETROUTE, 0, 0, false)
	tbl := uint8(0)
	if fl.Table != 0 && fl.Table < 256 {
		tbl = uint8(fl.Table)
	}
	c.req.raw(fl.Family, 0, 0, 0, tbl, 0, 0, 0, 0, 0, 0, 0)
	if fl.Table != 0 {
		c.req.attrU32(unix.RTA_TABLE, fl.Table)
	}
	if fl.Oif != 0 {
		c.req.attrU32(unix.RTA_OIF, uint32(fl.Oif))
	}
	c.req.end()
	var r Route
	return c.dump(unix.RTM_NEWROUTE, func(b []byte) error {
		if err := ParseRoute(b, &r); err != nil {
			return err
		}
		if r.Family != fl.Family || (fl.Table != 0 && r.Table != fl.Table) {
			return nil
		}
		// A nexthop-object route shows no output interface when the kernel's
		// nexthop_compat_mode is off; the kernel filter matched its nexthop's device.
		if fl.Oif != 0 && r.Oif != fl.Oif && !(r.NhID != 0 && r.Oif == 0) {
			return nil
		}
		f(&r)
		return nil
	})
}

// Neighs dumps the neighbour entries of family (unix.AF_INET, unix.AF_INET6, or
// unix.AF_BRIDGE for the FDB) on ifindex (0: all devices) and calls f for each; f must
// not keep n.
func (c *Conn) Neighs(fam uint8, ifindex int, f func(n *Neigh)) error {
	c.req.Reset()
	c.req.begin(unix.RTM_GETNEIGH, 0, 0, false)
	if fam == unix.AF_BRIDGE {
		c.req.ndmsg(fam, ifindex, 0, 0) // the FDB dump filters on ndm_ifindex (bridge port)
	} else {
		c.req.ndmsg(fam, 0, 0, 0)
		if ifindex != 0 {
			c.req.attrU32(unix.NDA_IFINDEX, uint32(ifindex))
		}
	}
	c.req.end()
	var n Neigh
	return c.dump(unix.RTM_NEWNEIGH, func(b []byte) error {
		if err := ParseNeigh(b, &n); err != nil {
			return err
		}
		if n.Family != fam || (ifindex != 0 && n.Ifindex != ifindex) {
			return nil
		}
		f(&n)
		return nil
	})
}

// Nexthops dumps the nexthop objects on oif (0: all) and calls f for each; f must not
// keep nh. A kernel without nexthop objects (before Linux 5.3) answers EOPNOTSUPP (or
// EINVAL); IsNoNexthops recognises both.
func (c *Conn) Nexthops(oif int, f func(nh *Nexthop)) error {
	c.req.Reset()
	c.req.begin(unix.RTM_GETNEXTHOP, 0, 0, false)
	c.req.raw(unix.AF_UNSPEC, 0, 0, 0, 0, 0, 0, 0)
	if oif != 0 {
		c.req.attrU32(unix.NHA_OIF, uint32(oif))
	}
	c.req.end()
	var nh Nexthop
	return c.dump(unix.RTM_NEWNEXTHOP, func(b []byte) error {
		if err := ParseNexthop(b, &nh); err != nil {
			return err
		}
		if oif != 0 && nh.Oif != oif {
			return nil
		}
		f(&nh)
		return nil
	})
}

// IsNoNexthops reports whether err says the kernel has no nexthop objects.
func IsNoNexthops(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EAFNOSUPPORT)
}
