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

// Limits of one Conn.Run round trip: the replies must fit in the receive buffer.
const (
	chunkMsgs  = 256
	chunkBytes = 64 << 10
	rcvBuf     = 4 << 20
	rcvTimeout = 30 * time.Second
)

// Conn is a raw NETLINK_ROUTE socket for pipelined writes and allocation-free dumps (one user).
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

// inNetns runs open on a locked thread inside ns; a thread that cannot switch back is discarded.
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
	// Optional (no request copy in errors, kernel dump filters): the parsers need neither.
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

// recv avoids unix.Recvfrom, which allocates the sender's address on every call.
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

// errLost marks requests whose reply the kernel dropped: outcome unknown.
var errLost = errors.New("netlink reply lost (receive buffer overrun); outcome unknown")

// SocketError is Run's outcome for a request whose fate is unknown because the socket
// failed. It does not unwrap to the errno, so request error classes never match it.
type SocketError struct{ Err error }

func (e *SocketError) Error() string { return e.Err.Error() }

// Run sends the batch in order, many requests per round trip, and calls done once per request,
// in order, with the kernel's answer (and NexthopAdd's new id); requests may depend on earlier
// ones. It fails only with the socket, done having seen every request (*SocketError if unknown).
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
		for k := range c.st {
			if r := &c.st[k]; r.err == nil && !r.seen && !b.msgs[i+k].echo {
				r.err = errLost
			}
		}
	}
	return nil
}

// extAckMsg returns the NLMSGERR_ATTR_MSG of an error reply whose header flags are fl.
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

// dump dumps c.req, calling f per body of type typ; an interrupted dump returns ErrDumpInterrupted.
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

// Routes calls f for each route the filter selects; f must not keep r.
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
		// With nexthop_compat_mode off a nexthop-object route shows no oif; the kernel filter
		// already matched its nexthop's device.
		if fl.Oif != 0 && r.Oif != fl.Oif && !(r.NhID != 0 && r.Oif == 0) {
			return nil
		}
		f(&r)
		return nil
	})
}

// Neighs calls f for each neighbour of fam (AF_BRIDGE: FDB) on ifindex (0: all); f must not keep n.
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

// Nexthops calls f for each nexthop object on oif (0: all); f must not keep nh. Kernels
// before 5.3 fail with an error IsNoNexthops recognises.
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
