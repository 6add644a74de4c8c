package netlinkx

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// changeGroups covers links and addresses too: removing them takes routes without a notification.
var changeGroups = []int{unix.RTNLGRP_LINK, unix.RTNLGRP_NEIGH, unix.RTNLGRP_IPV4_IFADDR,
	unix.RTNLGRP_IPV6_IFADDR, unix.RTNLGRP_IPV4_ROUTE, unix.RTNLGRP_IPV6_ROUTE, unix.RTNLGRP_NEXTHOP}

// changeRcvBuf holds the echoes of a few thousand writes; overflow only reports a loss.
const changeRcvBuf = 32 << 20

// Change is one rtnetlink notification. Pid is the requesting socket's port id (0: the kernel,
// or a kind that does not say, such as vxlan FDB); Body is valid only during the callback.
type Change struct {
	Type uint16
	Pid  uint32
	Body []byte
}

// PortID is the port id that notifications caused by this Conn's requests carry.
func (c *Conn) PortID() (uint32, error) {
	sa, err := unix.Getsockname(c.fd)
	if err != nil {
		return 0, fmt.Errorf("netlink getsockname: %w", err)
	}
	nl, ok := sa.(*unix.SockaddrNetlink)
	if !ok {
		return 0, errors.New("netlink getsockname: not a netlink address")
	}
	return nl.Pid, nil
}

// Feed is the Conn's change subscription, which others may share.
func (c *Conn) Feed() *Feed { return c.feed }

// Subscribe starts collecting the namespace's notifications, minus our own echoes; idempotent.
func (c *Conn) Subscribe() error {
	if c.q != nil {
		return nil
	}
	pid, err := c.PortID()
	if err != nil {
		return err
	}
	c.feed.SetReceiveBuffer(changeRcvBuf)
	q := &changeQueue{pid: pid}
	unsub, err := c.feed.Subscribe(q)
	if err != nil {
		return err
	}
	c.q, c.unsub = q, unsub
	return nil
}

// Unsubscribe stops collecting and discards what was collected; Changes reports lost.
func (c *Conn) Unsubscribe() error {
	if c.q == nil {
		return nil
	}
	c.q = nil
	return c.unsub()
}

// Changes calls f for each notification collected since the last call, in order, without
// waiting; lost means some were dropped (or no subscription): anything may have changed.
func (c *Conn) Changes(f func(ch *Change)) (lost bool, err error) {
	q := c.q
	if q == nil {
		return true, nil
	}
	err = c.feed.Read()
	q.mu.Lock()
	buf, ents, lost := q.buf, q.ents, q.lost
	q.buf, q.ents, q.lost = c.spareBuf[:0], c.spareEnts[:0], false
	q.mu.Unlock()
	for _, e := range ents {
		c.ch = Change{Type: e.typ, Pid: e.pid, Body: buf[e.off:e.end]}
		f(&c.ch)
	}
	c.ch = Change{}
	c.spareBuf, c.spareEnts = buf[:0], ents[:0]
	return lost || err != nil, err
}

// Monitor is a socket subscribed to one network namespace's change notifications, reading
// many per system call into reused buffers. Not safe for concurrent use, except Close.
type Monitor struct {
	file  *os.File // owns the socket; its runtime poller makes Wait end on Close
	raw   syscall.RawConn
	mm    []mmsghdr // recvmmsg scratch
	iov   []unix.Iovec
	names []unix.RawSockaddrNetlink
	buf   []byte
	// set by Wait on an overflow report (reading it clears it); the next Read reports lost
	overflowed atomic.Bool

	// RawConn callbacks made once: a closure per call would allocate per wake-up.
	ready    func(fd uintptr) bool
	drain    func(fd uintptr)
	readF    func(ch *Change)
	readLost bool
	readErr  error
	ch       Change // what read hands to readF (a local would escape to the heap per call)
}

// NewMonitor opens a Monitor in the calling process's namespace, raising its buffer to rcvBuf.
func NewMonitor(rcvBuf int) (*Monitor, error) {
	m, err := openMonitor()
	if err != nil {
		return nil, err
	}
	m.SetReceiveBuffer(rcvBuf)
	if err := m.join(); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// NewMonitorAt is NewMonitor in the network namespace ns.
func NewMonitorAt(ns netns.NsHandle, rcvBuf int) (*Monitor, error) {
	return inNetns(ns, func() (*Monitor, error) { return NewMonitor(rcvBuf) })
}

func openMonitor() (*Monitor, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink change socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind netlink change socket: %w", err)
	}
	m := &Monitor{file: os.NewFile(uintptr(fd), "netlink-changes")}
	if m.raw, err = m.file.SyscallConn(); err != nil {
		m.file.Close()
		return nil, fmt.Errorf("netlink change socket: %w", err)
	}
	m.ready = m.peek
	m.drain = func(fd uintptr) { m.readLost, m.readErr = m.read(int(fd), m.readF) }
	return m, nil
}

// Close closes the socket; a Wait in progress returns an error.
func (m *Monitor) Close() error { return m.file.Close() }

// SetReceiveBuffer asks for n bytes (beyond the system limit if privileged); failure is ignored.
func (m *Monitor) SetReceiveBuffer(n int) {
	_ = m.raw.Control(func(fd uintptr) {
		if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n); err != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, n)
		}
	})
}

func (m *Monitor) setsockopt(level, opt, v int) error {
	var err error
	if cerr := m.raw.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), level, opt, v) }); cerr != nil {
		return cerr
	}
	return err
}

func (m *Monitor) join() error {
	for _, g := range changeGroups {
		if err := m.setsockopt(unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, g); err != nil {
			return fmt.Errorf("join netlink group %d: %w", g, err)
		}
	}
	return nil
}

func (m *Monitor) leave() error {
	var errs []error
	for _, g := range changeGroups {
		if err := m.setsockopt(unix.SOL_NETLINK, unix.NETLINK_DROP_MEMBERSHIP, g); err != nil {
			errs = append(errs, fmt.Errorf("leave netlink group %d: %w", g, err))
		}
	}
	_, _ = m.Read(func(*Change) {})
	return errors.Join(errs...)
}

// Wait blocks until something is ready for Read, or the Monitor is closed (an error).
func (m *Monitor) Wait() error {
	if err := m.raw.Read(m.ready); err != nil {
		return fmt.Errorf("netlink change socket: %w", err)
	}
	return nil
}

func (m *Monitor) peek(fd uintptr) bool {
	var b [1]byte
	_, _, errno := unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
		unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	if errno == unix.ENOBUFS {
		m.overflowed.Store(true) // reading the report cleared it
	}
	return errno != unix.EAGAIN && errno != unix.EINTR
}

// Read calls f for each notification collected so far, in order, without waiting; lost means
// the buffer overflowed or one was too long: anything may have changed unseen.
func (m *Monitor) Read(f func(ch *Change)) (lost bool, err error) {
	if m.mm == nil {
		m.buf = make([]byte, changeSlots*changeSlotSize)
		m.iov = make([]unix.Iovec, changeSlots)
		m.names = make([]unix.RawSockaddrNetlink, changeSlots)
		m.mm = make([]mmsghdr, changeSlots)
		for i := range m.mm {
			m.iov[i].Base = &m.buf[i*changeSlotSize]
			m.iov[i].SetLen(changeSlotSize)
			m.mm[i].Hdr.Iov = &m.iov[i]
			m.mm[i].Hdr.SetIovlen(1)
			m.mm[i].Hdr.Name = (*byte)(unsafe.Pointer(&m.names[i]))
		}
	}
	lost = m.overflowed.Swap(false)
	// Control keeps a concurrent Close from closing the socket while it is read.
	m.readF = f
	defer func() { m.readF = nil }()
	if rerr := m.raw.Control(m.drain); rerr != nil {
		return true, fmt.Errorf("netlink change socket: %w", rerr)
	}
	return lost || m.readLost, m.readErr
}

func (m *Monitor) read(fd int, f func(ch *Change)) (lost bool, err error) {
	for {
		for i := range m.mm {
			m.mm[i].Hdr.Namelen = unix.SizeofSockaddrNetlink
		}
		r, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&m.mm[0])),
			uintptr(len(m.mm)), unix.MSG_DONTWAIT, 0, 0)
		switch {
		case errno == unix.EINTR:
			continue
		case errno == unix.ENOBUFS:
			lost = true
			continue
		case errno == unix.EAGAIN:
			return lost, nil
		case errno != 0:
			return true, fmt.Errorf("netlink change socket: %w", errno)
		}
		for i := range int(r) {
			h := &m.mm[i]
			if m.names[i].Pid != 0 {
				continue // not from the kernel: another process writing to our port
			}
			if h.Hdr.Flags&unix.MSG_TRUNC != 0 {
				lost = true // too long for a slot: what it said is unknown
				continue
			}
			ok := eachMsg(m.buf[i*changeSlotSize:i*changeSlotSize+int(h.Len)], func(h msgHdr, body []byte) bool {
				m.ch = Change{Type: h.Type, Pid: h.Pid, Body: body}
				f(&m.ch)
				return true
			})
			if !ok {
				lost = true // malformed: what it said is unknown
			}
		}
	}
}

// Notifications are read changeSlots at a time into changeSlotSize-byte slots (a link's takes
// up to 2 KB; longer ones count as lost); 16 make system calls a small part of a burst.
const (
	changeSlots    = 16
	changeSlotSize = 8 << 10
)

// mmsghdr is the kernel's struct mmsghdr (Go pads it like C).
type mmsghdr struct {
	Hdr unix.Msghdr
	Len uint32
}

// ChangeIfindex returns the ifindex a link or address notification is about, or 0.
func ChangeIfindex(typ uint16, body []byte) int {
	switch typ {
	case unix.RTM_NEWLINK, unix.RTM_DELLINK, unix.RTM_NEWADDR, unix.RTM_DELADDR:
		if len(body) >= 8 {
			return int(int32(native.Uint32(body[4:8])))
		}
	}
	return 0
}
