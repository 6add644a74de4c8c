package diagnose

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// PathError is an ICMP error the path returned for a sent probe (unreachable, frag needed).
type PathError struct {
	From netip.Addr
	Msg  string
}

func (e *PathError) Error() string { return e.Msg + " (from " + e.From.String() + ")" }

// ICMPProber is the Prober of the netns it was made in, on a raw socket when permitted,
// else an unprivileged ping socket. Safe for concurrent probes.
type ICMPProber struct {
	ctx context.Context

	mu    sync.Mutex
	socks map[sockKey]*pinger
}

type sockKey struct{ v6, df bool }

// NewICMPProber makes a prober whose sockets close when ctx ends.
func NewICMPProber(ctx context.Context) *ICMPProber {
	return &ICMPProber{ctx: ctx, socks: map[sockKey]*pinger{}}
}

var _ Prober = (*ICMPProber)(nil)

type pinger struct {
	conn  net.PacketConn
	raw   bool
	v6    bool
	id    uint16
	nonce [8]byte
	err   error

	mu      sync.Mutex
	seq     uint16
	waiting map[uint16]chan error // nil error: echo reply; else the path's ICMP error
}

// Ping implements Prober; size must leave room for the IP and ICMP headers and an 8-byte tag.
func (p *ICMPProber) Ping(ctx context.Context, dst netip.Addr, size int, df bool, timeout time.Duration) (bool, error) {
	dst = dst.Unmap()
	v6 := dst.Is6()
	hdr := 20 + 8
	if v6 {
		hdr = 40 + 8
	}
	if size < hdr+8 {
		size = hdr + 8
	}
	pg := p.pinger(sockKey{v6, df})
	if pg.err != nil {
		return false, pg.err
	}
	seq, ch := pg.register()
	defer pg.unregister(seq)
	msg, err := pg.message(seq, size-hdr)
	if err != nil {
		return false, err
	}
	var to net.Addr = &net.IPAddr{IP: dst.AsSlice()}
	if !pg.raw {
		to = &net.UDPAddr{IP: dst.AsSlice()}
	}
	send := func() error {
		if _, err := pg.conn.WriteTo(msg, to); err != nil {
			if errors.Is(err, syscall.EMSGSIZE) {
				return fmt.Errorf("a %d-byte packet with DF set is larger than the local link or route MTU to %s", size, dst)
			}
			return fmt.Errorf("sending to %s: %w", dst, err)
		}
		return nil
	}
	if err := send(); err != nil {
		return false, err
	}
	// One repeat halfway, for a first request lost while the neighbour was resolved.
	again := time.NewTimer(timeout / 2)
	defer again.Stop()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		select {
		case err := <-ch:
			return err == nil, err
		case <-again.C:
			if err := send(); err != nil {
				return false, err
			}
		case <-deadline.C:
			return false, nil
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

func (p *ICMPProber) pinger(k sockKey) *pinger {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pg := p.socks[k]; pg != nil {
		return pg
	}
	pg := &pinger{v6: k.v6, waiting: map[uint16]chan error{}}
	var b [2]byte
	_, _ = rand.Read(b[:])
	_, _ = rand.Read(pg.nonce[:])
	pg.id = binary.BigEndian.Uint16(b[:])
	pg.conn, pg.raw, pg.err = openICMP(k.v6, k.df)
	if pg.err == nil {
		go pg.receive()
		go func() { <-p.ctx.Done(); pg.conn.Close() }()
	}
	p.socks[k] = pg
	return pg
}

// openICMP opens a raw ICMP socket, else a ping socket; the bool reports a raw one.
func openICMP(v6, df bool) (net.PacketConn, bool, error) {
	fam, proto := unix.AF_INET, unix.IPPROTO_ICMP
	if v6 {
		fam, proto = unix.AF_INET6, unix.IPPROTO_ICMPV6
	}
	raw := true
	fd, err := unix.Socket(fam, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		raw = false
		fd, err = unix.Socket(fam, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, proto)
	}
	if err != nil {
		return nil, false, fmt.Errorf("%w (an ICMP socket: %v)", ErrPermission, err)
	}
	// PROBE sets DF ignoring the cached path MTU, so a stale entry cannot fail the probe here.
	mode := unix.IP_PMTUDISC_DONT
	if df {
		mode = unix.IP_PMTUDISC_PROBE
	}
	if v6 {
		err = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, mode)
		if err == nil && df {
			err = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_DONTFRAG, 1)
		}
	} else {
		err = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, mode)
	}
	if err != nil {
		unix.Close(fd)
		return nil, false, fmt.Errorf("setting don't-fragment on the ICMP socket: %w", err)
	}
	if !raw {
		var sa unix.Sockaddr = &unix.SockaddrInet4{}
		if v6 {
			sa = &unix.SockaddrInet6{}
		}
		if err := unix.Bind(fd, sa); err != nil {
			unix.Close(fd)
			return nil, false, fmt.Errorf("%w (a ping socket: %v)", ErrPermission, err)
		}
	}
	f := os.NewFile(uintptr(fd), "icmp")
	defer f.Close()
	c, err := net.FilePacketConn(f)
	if err != nil {
		return nil, false, fmt.Errorf("ICMP socket: %w", err)
	}
	return c, raw, nil
}

func (pg *pinger) register() (uint16, chan error) {
	pg.mu.Lock()
	defer pg.mu.Unlock()
	for {
		pg.seq++
		if _, busy := pg.waiting[pg.seq]; !busy {
			break
		}
	}
	ch := make(chan error, 1)
	pg.waiting[pg.seq] = ch
	return pg.seq, ch
}

func (pg *pinger) unregister(seq uint16) {
	pg.mu.Lock()
	delete(pg.waiting, seq)
	pg.mu.Unlock()
}

func (pg *pinger) message(seq uint16, n int) ([]byte, error) {
	data := make([]byte, n)
	copy(data, pg.nonce[:])
	var typ icmp.Type = ipv4.ICMPTypeEcho
	if pg.v6 {
		typ = ipv6.ICMPTypeEchoRequest // the kernel fills in the checksum
	}
	m := icmp.Message{Type: typ, Body: &icmp.Echo{ID: int(pg.id), Seq: int(seq), Data: data}}
	return m.Marshal(nil)
}

func (pg *pinger) receive() {
	proto := 1
	if pg.v6 {
		proto = 58
	}
	buf := make([]byte, 64<<10)
	for {
		n, from, err := pg.conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		m, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil {
			continue
		}
		switch b := m.Body.(type) {
		case *icmp.Echo:
			if (m.Type == ipv4.ICMPTypeEchoReply || m.Type == ipv6.ICMPTypeEchoReply) && pg.ours(b.ID, b.Data) {
				pg.deliver(uint16(b.Seq), nil)
			}
		case *icmp.DstUnreach:
			pg.pathError(b.Data, from, describeICMP(m))
		case *icmp.PacketTooBig:
			pg.pathError(b.Data, from, fmt.Sprintf("packet too big (MTU %d)", b.MTU))
		case *icmp.TimeExceeded:
			pg.pathError(b.Data, from, "time exceeded")
		}
	}
}

// ours reports whether an echo reply answers this pinger (ping sockets: the kernel matched the id).
func (pg *pinger) ours(id int, data []byte) bool {
	return (!pg.raw || uint16(id) == pg.id) && len(data) >= len(pg.nonce) && [8]byte(data[:8]) == pg.nonce
}

func (pg *pinger) deliver(seq uint16, err error) {
	pg.mu.Lock()
	ch := pg.waiting[seq]
	pg.mu.Unlock()
	if ch != nil {
		select {
		case ch <- err:
		default:
		}
	}
}

// pathError delivers an ICMP error to the probe whose request it quotes in data.
func (pg *pinger) pathError(data []byte, from net.Addr, msg string) {
	hl := 40
	if !pg.v6 {
		if len(data) < 1 {
			return
		}
		hl = int(data[0]&0x0f) * 4
	}
	if len(data) < hl+8 {
		return
	}
	echo := data[hl : hl+8]
	id, seq := binary.BigEndian.Uint16(echo[4:6]), binary.BigEndian.Uint16(echo[6:8])
	if pg.raw && id != pg.id {
		return
	}
	var src netip.Addr
	switch a := from.(type) {
	case *net.IPAddr:
		src, _ = netip.AddrFromSlice(a.IP)
	case *net.UDPAddr:
		src, _ = netip.AddrFromSlice(a.IP)
	}
	pg.deliver(seq, &PathError{From: src.Unmap(), Msg: msg})
}

func describeICMP(m *icmp.Message) string {
	if m.Type == ipv6.ICMPTypeDestinationUnreachable {
		switch m.Code {
		case 1:
			return "destination unreachable: administratively prohibited"
		case 3:
			return "destination unreachable: address unreachable"
		case 4:
			return "destination unreachable: port unreachable"
		}
		return fmt.Sprintf("destination unreachable (code %d)", m.Code)
	}
	switch m.Code {
	case 0:
		return "destination unreachable: network unreachable"
	case 1:
		return "destination unreachable: host unreachable"
	case 3:
		return "destination unreachable: port unreachable"
	case 4:
		return "destination unreachable: fragmentation needed and DF set"
	case 9, 10, 13:
		return "destination unreachable: administratively prohibited"
	}
	return fmt.Sprintf("destination unreachable (code %d)", m.Code)
}
