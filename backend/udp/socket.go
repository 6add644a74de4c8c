package udp

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// rawBatchConn issues sendmmsg/recvmmsg as raw non-blocking system calls, waiting in the
// poller only on EAGAIN: a long batch through the regular syscall path would hand off the P.
// WriteBatch and ReadBatch may run concurrently, each from one goroutine at a time.
type rawBatchConn struct {
	rc   syscall.RawConn
	w, r mmsgBuffers
}

var _ batchConn = (*rawBatchConn)(nil)

// mmsgBuffers are the kernel-facing headers for one batch, reused across calls.
type mmsgBuffers struct {
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet4
}

func newRawBatchConn(c *net.UDPConn) (*rawBatchConn, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	return &rawBatchConn{rc: rc}, nil
}

// prepare fills the headers for ms: iovecs, control data, and the IPv4 address or room for it.
func (b *mmsgBuffers) prepare(ms []ipv4.Message, send bool) error {
	niov := 0
	for i := range ms {
		niov += len(ms[i].Buffers)
	}
	if cap(b.hdrs) < len(ms) {
		b.hdrs = make([]unix.Mmsghdr, len(ms))
		b.names = make([]unix.RawSockaddrInet4, len(ms))
	}
	if cap(b.iovs) < niov {
		b.iovs = make([]unix.Iovec, niov)
	}
	b.hdrs, b.names, b.iovs = b.hdrs[:len(ms)], b.names[:len(ms)], b.iovs[:niov]
	k := 0
	for i := range ms {
		m := &ms[i]
		h := &b.hdrs[i]
		*h = unix.Mmsghdr{}
		first := k
		for _, buf := range m.Buffers {
			iov := &b.iovs[k]
			*iov = unix.Iovec{}
			if len(buf) > 0 {
				iov.Base = &buf[0]
			}
			iov.SetLen(len(buf))
			k++
		}
		if k > first {
			h.Hdr.Iov = &b.iovs[first]
			h.Hdr.SetIovlen(k - first)
		}
		if len(m.OOB) > 0 {
			h.Hdr.Control = &m.OOB[0]
			h.Hdr.SetControllen(len(m.OOB))
		}
		if send {
			a, ok := m.Addr.(*net.UDPAddr)
			var ip4 net.IP
			if ok {
				ip4 = a.IP.To4()
			}
			if ip4 == nil {
				return errors.New("udp: send to a non-IPv4 address")
			}
			sa := &b.names[i]
			sa.Family = unix.AF_INET
			port := (*[2]byte)(unsafe.Pointer(&sa.Port)) // network byte order in memory
			port[0], port[1] = byte(a.Port>>8), byte(a.Port)
			copy(sa.Addr[:], ip4)
			h.Hdr.Name = (*byte)(unsafe.Pointer(sa))
			h.Hdr.Namelen = unix.SizeofSockaddrInet4
		} else {
			b.names[i] = unix.RawSockaddrInet4{}
			h.Hdr.Name = (*byte)(unsafe.Pointer(&b.names[i]))
			h.Hdr.Namelen = unix.SizeofSockaddrInet4
		}
	}
	return nil
}

// WriteBatch sends with sendmmsg and returns how many went; an error refers to message n.
func (c *rawBatchConn) WriteBatch(ms []ipv4.Message, _ int) (int, error) {
	if len(ms) == 0 {
		return 0, nil
	}
	b := &c.w
	if err := b.prepare(ms, true); err != nil {
		return 0, err
	}
	n, err := mmsg(c.rc.Write, unix.SYS_SENDMMSG, "sendmmsg", b.hdrs)
	runtime.KeepAlive(ms)
	return n, err
}

// ReadBatch receives up to len(ms) datagrams, waiting for the first; it sets N, NN, Flags and
// from[i] (message i's IPv4 source or 0, not Addr, which allocates).
func (c *rawBatchConn) ReadBatch(ms []ipv4.Message, from []uint32) (int, error) {
	if len(ms) == 0 {
		return 0, nil
	}
	if len(from) < len(ms) {
		return 0, errors.New("udp: ReadBatch: fewer source slots than messages")
	}
	b := &c.r
	if err := b.prepare(ms, false); err != nil {
		return 0, err
	}
	n, err := mmsg(c.rc.Read, unix.SYS_RECVMMSG, "recvmmsg", b.hdrs)
	runtime.KeepAlive(ms)
	if err != nil {
		return 0, err
	}
	for i := range n {
		h := &b.hdrs[i]
		ms[i].N, ms[i].NN, ms[i].Flags, ms[i].Addr = int(h.Len), int(h.Hdr.Controllen), int(h.Hdr.Flags), nil
		from[i] = 0
		if sa := &b.names[i]; h.Hdr.Namelen >= unix.SizeofSockaddrInet4 && sa.Family == unix.AF_INET {
			from[i] = binary.BigEndian.Uint32(sa.Addr[:])
		}
	}
	return n, nil
}

// mmsg makes one sendmmsg or recvmmsg (trap), waiting through the RawConn's wait while not ready.
func mmsg(wait func(func(fd uintptr) bool) error, trap uintptr, name string, hdrs []unix.Mmsghdr) (int, error) {
	var n int
	var errno syscall.Errno
	err := wait(func(fd uintptr) bool {
		for {
			r, _, e := syscall.RawSyscall6(trap, fd, uintptr(unsafe.Pointer(&hdrs[0])), uintptr(len(hdrs)),
				unix.MSG_DONTWAIT, 0, 0)
			switch e {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false
			}
			n, errno = int(r), e
			return true
		}
	})
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, os.NewSyscallError(name, errno)
	}
	return n, nil
}
