package netlinkx

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// changeGroups are the rtnetlink notification groups a change subscription joins: every
// kind of object a backend reads (links and addresses, because a device or address
// going away removes routes without a route notification).
var changeGroups = []int{unix.RTNLGRP_LINK, unix.RTNLGRP_NEIGH, unix.RTNLGRP_IPV4_IFADDR,
	unix.RTNLGRP_IPV6_IFADDR, unix.RTNLGRP_IPV4_ROUTE, unix.RTNLGRP_IPV6_ROUTE, unix.RTNLGRP_NEXTHOP}

// changeRcvBuf is the receive buffer of the change socket: room for the echoes of a few
// thousand writes between two reads (an overflow only reports lost notifications).
const changeRcvBuf = 32 << 20

// Change is one rtnetlink notification: its message type (unix.RTM_NEWROUTE, ...), the
// port id of the socket whose request caused it (0: the kernel itself, or a kind of
// object whose notifications do not say, such as vxlan FDB entries) and its body, valid
// only during the callback.
type Change struct {
	Type uint16
	Pid  uint32
	Body []byte
}

// PortID is the netlink port id of the Conn's request socket: notifications of the
// changes its requests made carry it (Change.Pid).
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

// Subscribe starts collecting notifications of changes to links, addresses, routes,
// neighbours, FDB entries and nexthop objects in the Conn's network namespace, for
// Changes to read. Notifications the kernel addresses with the Conn's own port id (the
// echo of its requests) are dropped by the kernel, not delivered: a socket filter on the
// subscription socket saves reading them back. Calling it again does nothing.
func (c *Conn) Subscribe() error {
	if c.subscribed {
		return nil
	}
	if err := unix.SetsockoptInt(c.mon, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, changeRcvBuf); err != nil {
		_ = unix.SetsockoptInt(c.mon, unix.SOL_SOCKET, unix.SO_RCVBUF, changeRcvBuf)
	}
	if !c.filtered {
		if err := c.dropOwnEcho(); err != nil {
			return err
		}
		c.filtered = true
	}
	for _, g := range changeGroups {
		if err := unix.SetsockoptInt(c.mon, unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, g); err != nil {
			return fmt.Errorf("join netlink group %d: %w", g, err)
		}
	}
	c.subscribed = true
	return nil
}

// Unsubscribe stops collecting notifications and discards those collected; Subscribe
// starts again. Changes reports lost until then.
func (c *Conn) Unsubscribe() error {
	if !c.subscribed {
		return nil
	}
	c.subscribed = false
	var errs []error
	for _, g := range changeGroups {
		if err := unix.SetsockoptInt(c.mon, unix.SOL_NETLINK, unix.NETLINK_DROP_MEMBERSHIP, g); err != nil {
			errs = append(errs, fmt.Errorf("leave netlink group %d: %w", g, err))
		}
	}
	buf := make([]byte, 64<<10)
	for {
		_, err := recv(c.mon, buf, unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EAGAIN) || (err != nil && !errors.Is(err, unix.ENOBUFS) && !errors.Is(err, unix.EINTR)) {
			break
		}
	}
	return errors.Join(errs...)
}

// openChangeSocket makes the (not yet subscribed) change socket; Open calls it, so that
// it lives in the same network namespace as the request socket.
func openChangeSocket() (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return -1, fmt.Errorf("netlink change socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind netlink change socket: %w", err)
	}
	return fd, nil
}

// dropOwnEcho attaches a classic BPF filter to the subscription socket that drops every
// message whose nlmsg_pid is the request socket's port id. The kernel sends each
// notification in its own buffer, so the filter sees one message at a time.
func (c *Conn) dropOwnEcho() error {
	pid, err := c.PortID()
	if err != nil {
		return err
	}
	// A BPF word load reads big-endian; nlmsg_pid is in host order.
	var b [4]byte
	native.PutUint32(b[:], pid)
	k := binary.BigEndian.Uint32(b[:])
	prog := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 12}, // nlmsg_pid
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: k},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0},          // ours: drop
		{Code: unix.BPF_RET | unix.BPF_K, K: 0xffffffff}, // someone else's: keep
	}
	fp := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.SetsockoptSockFprog(c.mon, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fp); err != nil {
		return fmt.Errorf("attach netlink echo filter: %w", err)
	}
	return nil
}

// Subscribed reports whether Subscribe succeeded.
func (c *Conn) Subscribed() bool { return c.subscribed }

// Changes reads the notifications collected since the last call, without waiting, and
// calls f for each, in the kernel's order. lost reports that the kernel dropped some
// (the receive buffer overflowed), or that the Conn is not subscribed: anything may then
// have changed unseen.
func (c *Conn) Changes(f func(ch *Change)) (lost bool, err error) {
	if !c.subscribed {
		return true, nil
	}
	if c.mm == nil {
		c.mmBuf = make([]byte, changeSlots*changeSlotSize)
		c.iov = make([]unix.Iovec, changeSlots)
		c.mm = make([]mmsghdr, changeSlots)
		for i := range c.mm {
			c.iov[i].Base = &c.mmBuf[i*changeSlotSize]
			c.iov[i].SetLen(changeSlotSize)
			c.mm[i].Hdr.Iov = &c.iov[i]
			c.mm[i].Hdr.SetIovlen(1)
		}
	}
	var ch Change
	for {
		// One notification per datagram: recvmmsg takes many per system call.
		r, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(c.mon), uintptr(unsafe.Pointer(&c.mm[0])),
			uintptr(len(c.mm)), unix.MSG_DONTWAIT, 0, 0)
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
			m := &c.mm[i]
			if m.Hdr.Flags&unix.MSG_TRUNC != 0 {
				lost = true // too long for a slot: what it said is unknown
				continue
			}
			buf := c.mmBuf[i*changeSlotSize : i*changeSlotSize+int(m.Len)]
			for len(buf) >= unix.SizeofNlMsghdr {
				l := int(native.Uint32(buf[0:4]))
				if l < unix.SizeofNlMsghdr || l > len(buf) {
					lost = true // malformed: what it said is unknown
					break
				}
				ch = Change{Type: native.Uint16(buf[4:6]), Pid: native.Uint32(buf[12:16]), Body: buf[unix.SizeofNlMsghdr:l]}
				f(&ch)
				al := (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1)
				if al > len(buf) {
					break
				}
				buf = buf[al:]
			}
		}
	}
}

// Change notifications are read changeSlots at a time into slots of changeSlotSize
// bytes (a route, neighbour or nexthop notification takes about 100; a longer one is
// reported as lost).
const (
	changeSlots    = 64
	changeSlotSize = 8 << 10
)

// mmsghdr is the kernel's struct mmsghdr (Go pads it like C).
type mmsghdr struct {
	Hdr unix.Msghdr
	Len uint32
}

// ChangeIfindex returns the interface index a link (ifinfomsg) or address (ifaddrmsg)
// notification body is about, or 0.
func ChangeIfindex(typ uint16, body []byte) int {
	switch typ {
	case unix.RTM_NEWLINK, unix.RTM_DELLINK, unix.RTM_NEWADDR, unix.RTM_DELADDR:
		if len(body) >= 8 {
			return int(int32(native.Uint32(body[4:8])))
		}
	}
	return 0
}
