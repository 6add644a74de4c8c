package udp

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/observe"
)

// tunDevice is the part of the wireguard tun.Device the data path uses.
type tunDevice interface {
	Read(bufs [][]byte, sizes []int, offset int) (int, error)
	Write(bufs [][]byte, offset int) (int, error)
	BatchSize() int
	Close() error
}

// batchConn moves batches of datagrams; ReadBatch sets from[i] to message i's IPv4 source.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, from []uint32) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

const (
	tunHeadroom    = 16    // room for the virtio net header before packets written to the TUN
	maxPacket      = 65535 // the largest IPv4 packet
	maxBatch       = 128   // packets per system call in each direction
	gsoMaxSegments = 64    // the kernel's UDP_MAX_SEGMENTS
	gsoMaxBytes    = 65507 // payload of one GSO send: 65535 - IPv4 20 - UDP 8
	groReadMsgs    = 8     // messages (up to 64 KiB each) per recvmmsg with GRO
	socketBuffer   = 4 << 20
)

// Stats counts what the data path did.
type Stats struct {
	TxPackets, RxPackets uint64            // inner packets sent to / received from peers (and written to the TUN)
	NoRoute              uint64            // packets for an address no lease covers
	Unreachable          uint64            // ICMP net-unreachable answers written to the TUN
	Dropped              uint64            // malformed packets from the TUN, TTL expired, send/write errors
	GSOSends             uint64            // sends that carried more than one datagram
	RxDropped            map[string]uint64 // received packets not written to the TUN, by dropReason
}

type counters struct {
	tx, rx, noRoute, unreach, dropped, gsoSends atomic.Uint64
	rxDrops                                     [numDropReasons]atomic.Uint64
}

func (c *counters) snapshot() Stats {
	s := Stats{TxPackets: c.tx.Load(), RxPackets: c.rx.Load(), NoRoute: c.noRoute.Load(),
		Unreachable: c.unreach.Load(), Dropped: c.dropped.Load(), GSOSends: c.gsoSends.Load(),
		RxDropped: make(map[string]uint64, numDropReasons)}
	for r := range numDropReasons {
		s.RxDropped[r.String()] = c.rxDrops[r].Load()
	}
	return s
}

// dropReason is why a received packet was not written to the TUN.
type dropReason int

const (
	dropUnknownPeer        dropReason = iota // outer source is no peer's PublicIP
	dropForeignSource                        // inner source outside the sender's subnet
	dropForeignDestination                   // inner destination outside our subnet
	dropMalformed                            // not a whole IPv4 packet
	dropTTLExpired                           // inner TTL would reach 0
	numDropReasons
)

// String is the reason's label value in flannel_udp_dropped_packets_total{reason}.
func (r dropReason) String() string {
	switch r {
	case dropUnknownPeer:
		return "unknown_peer"
	case dropForeignSource:
		return "source_not_in_peer_subnet"
	case dropForeignDestination:
		return "destination_not_in_own_subnet"
	case dropMalformed:
		return "malformed"
	case dropTTLExpired:
		return "ttl_expired"
	}
	return "unknown"
}

// dataPath moves packets between the TUN and the UDP socket, one goroutine per direction;
// they share only the atomic peer table, the counters and the offload flags.
type dataPath struct {
	tun    tunDevice                 // the TUN at start
	newTUN atomic.Pointer[tunHolder] // its replacement after the device was recreated
	conn   batchConn
	tunIP  [4]byte // source of the ICMP errors
	own    net4    // our subnet: the only destinations received packets may have
	table  *atomic.Pointer[table]
	gso    atomic.Bool // UDP_SEGMENT usable on sends
	gro    bool        // UDP_GRO enabled on the socket
	mtu    int
	counts *counters
	obs    observe.Observer // hears the receive drops, once per batch and reason
}

type tunHolder struct{ dev tunDevice }

func (d *dataPath) device() tunDevice {
	if h := d.newTUN.Load(); h != nil {
		return h.dev
	}
	return d.tun
}

// replaceTUN makes dev the TUN received packets go to; the caller starts its tunToUDP.
func (d *dataPath) replaceTUN(dev tunDevice) { d.newTUN.Store(&tunHolder{dev}) }

// logLimiter lets one message through per interval; each goroutine owns its own.
type logLimiter struct {
	last       time.Time
	suppressed int
}

func (l *logLimiter) allow() (bool, int) {
	now := time.Now()
	if now.Sub(l.last) < 10*time.Second {
		l.suppressed++
		return false, 0
	}
	n := l.suppressed
	l.last, l.suppressed = now, 0
	return true, n
}

func closedErr(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) || errors.Is(err, syscall.EBADFD)
}

// tunToUDP sends the current TUN's packets to their peers until that TUN is gone or ctx ends.
func (d *dataPath) tunToUDP(ctx context.Context) {
	dev := d.device()
	n := min(max(dev.BatchSize(), 1), maxBatch)
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, maxPacket)
	}
	sizes := make([]int, n)
	msgs := make([]ipv4.Message, 0, n)
	dests := make([]*peer, 0, n) // the peer of each message
	iovs := make([][][]byte, n)  // backing store of the messages' Buffers
	for i := range iovs {
		iovs[i] = make([][]byte, 0, gsoMaxSegments)
	}
	oobs := make([][]byte, n)
	for i := range oobs {
		oobs[i] = make([]byte, 0, unix.CmsgSpace(2))
	}
	var icmp [][]byte
	icmpBufs := make([][]byte, n)
	for i := range icmpBufs {
		icmpBufs[i] = make([]byte, tunHeadroom+ipv4MinHeader+8+60+icmpQuote)
	}
	var lim logLimiter
	for {
		cnt, err := dev.Read(bufs, sizes, 0)
		if err != nil {
			if closedErr(err) || ctx.Err() != nil {
				return
			}
			d.counts.dropped.Add(1)
			if ok, sup := lim.allow(); ok {
				klog.ErrorS(err, "udp: reading from the TUN device failed", "suppressedSince", sup)
			}
			if cnt == 0 {
				continue
			}
		}
		tbl := d.table.Load()
		msgs, dests = msgs[:0], dests[:0]
		icmp = icmp[:0]
		var lastPeer *peer
		for i := range cnt {
			pkt := bufs[i][:sizes[i]]
			ihl, total, ok := parseIPv4(pkt)
			if !ok {
				d.counts.dropped.Add(1)
				continue
			}
			pkt = pkt[:total]
			p := tbl.lookup(dstKey(pkt))
			if p == nil {
				d.counts.noRoute.Add(1)
				if wantsUnreachable(pkt, ihl) {
					b := icmpBufs[len(icmp)]
					m := netUnreachable(b[tunHeadroom:], pkt, ihl, total, d.tunIP)
					icmp = append(icmp, b[:tunHeadroom+m])
				}
				continue
			}
			if !decTTL(pkt) {
				d.counts.dropped.Add(1)
				continue
			}
			// consecutive equal-size packets to one peer go in one GSO send
			if k := len(msgs) - 1; k >= 0 && d.gso.Load() && p == lastPeer && canAppend(&msgs[k], len(pkt)) {
				msgs[k].Buffers = append(msgs[k].Buffers, pkt)
				continue
			}
			k := len(msgs)
			msgs = append(msgs, ipv4.Message{Buffers: append(iovs[k][:0], pkt), Addr: p.addr, OOB: oobs[k][:0]})
			dests = append(dests, p)
			lastPeer = p
		}
		if len(msgs) > 0 {
			d.send(msgs, dests, &lim)
		}
		if len(icmp) > 0 {
			if _, err := dev.Write(icmp, tunHeadroom); err != nil && !closedErr(err) {
				if ok, sup := lim.allow(); ok {
					klog.ErrorS(err, "udp: writing ICMP unreachable to the TUN device failed", "suppressedSince", sup)
				}
			} else {
				d.counts.unreach.Add(uint64(len(icmp)))
			}
		}
	}
}

// canAppend reports whether a packet of size n may join GSO send m (only the last may be shorter).
func canAppend(m *ipv4.Message, n int) bool {
	segs := len(m.Buffers)
	first := len(m.Buffers[0])
	if segs >= gsoMaxSegments || n > first || len(m.Buffers[segs-1]) != first {
		return false
	}
	return (segs+1)*first <= gsoMaxBytes
}

// send writes msgs (dests[i] is msgs[i]'s peer); a refused message is dropped, the rest still
// go. EIO on a GSO send (no checksum offload on the route's device) turns GSO off for good.
func (d *dataPath) send(msgs []ipv4.Message, dests []*peer, lim *logLimiter) {
	pkts := 0
	for i := range msgs {
		m := &msgs[i]
		pkts += len(m.Buffers)
		if len(m.Buffers) > 1 {
			setGSO(m, len(m.Buffers[0]))
			d.counts.gsoSends.Add(1)
		}
	}
	for len(msgs) > 0 {
		n, err := d.conn.WriteBatch(msgs, 0)
		for i := range n {
			d.counts.tx.Add(uint64(len(msgs[i].Buffers)))
		}
		msgs, dests = msgs[n:], dests[n:]
		if err == nil {
			continue
		}
		if closedErr(err) {
			return
		}
		if errors.Is(err, unix.EIO) && len(msgs[0].Buffers) > 1 && d.gso.Swap(false) {
			klog.InfoS("udp: the kernel refused a UDP GSO send; sending one datagram per packet from now on", "err", err)
		}
		if len(msgs[0].Buffers) > 1 && !d.gso.Load() {
			d.sendSplit(&msgs[0], dests[0], lim)
		} else {
			d.counts.dropped.Add(uint64(len(msgs[0].Buffers)))
			sendFailed(dests[0], msgs[0].Addr, err, lim)
		}
		msgs, dests = msgs[1:], dests[1:]
	}
}

// sendFailed marks a send the kernel refused on its peer p, or logs another failure.
func sendFailed(p *peer, to net.Addr, err error, lim *logLimiter) {
	var errno syscall.Errno
	if errors.As(err, &errno) && backend.RefusalReason(errno) != "" {
		p.refused.Store(int32(errno))
		return
	}
	if ok, sup := lim.allow(); ok {
		klog.ErrorS(err, "udp: sending to peer failed", "peer", to, "suppressedSince", sup)
	}
}

// sendSplit sends a GSO message to the peer p as single datagrams.
func (d *dataPath) sendSplit(m *ipv4.Message, p *peer, lim *logLimiter) {
	one := make([]ipv4.Message, len(m.Buffers))
	for i, b := range m.Buffers {
		one[i] = ipv4.Message{Buffers: [][]byte{b}, Addr: m.Addr}
	}
	for len(one) > 0 {
		n, err := d.conn.WriteBatch(one, 0)
		d.counts.tx.Add(uint64(n))
		one = one[n:]
		if err != nil {
			if closedErr(err) {
				return
			}
			d.counts.dropped.Add(1)
			sendFailed(p, m.Addr, err, lim)
			one = one[1:]
		}
	}
}

func setGSO(m *ipv4.Message, size int) {
	space := unix.CmsgSpace(2)
	if cap(m.OOB) < space {
		m.OOB = make([]byte, 0, space)
	}
	b := m.OOB[:space]
	clear(b)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = unix.SOL_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(b[unix.CmsgLen(0):], uint16(size))
	m.OOB = b
}

// groSize returns the segment size from a UDP_GRO control message, or 0.
func groSize(oob []byte) int {
	for len(oob) >= unix.SizeofCmsghdr {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return 0
		}
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && len(data) >= 2 {
			if len(data) >= 4 {
				return int(binary.NativeEndian.Uint32(data))
			}
			return int(binary.NativeEndian.Uint16(data))
		}
		oob = rest
	}
	return 0
}

// udpToTUN writes received inner packets to the TUN until the socket is closed or ctx ends.
func (d *dataPath) udpToTUN(ctx context.Context) {
	r := d.newReceiver()
	for {
		r.reset()
		n, err := d.conn.ReadBatch(r.msgs, r.from)
		if err != nil {
			if closedErr(err) || ctx.Err() != nil {
				return
			}
			if ok, sup := r.lim.allow(); ok {
				klog.ErrorS(err, "udp: receiving from the socket failed", "suppressedSince", sup)
			}
			continue
		}
		r.deliver(n)
	}
}

// receiver is the receive side's batch state, owned by the goroutine running udpToTUN.
type receiver struct {
	d            *dataPath
	msgs         []ipv4.Message
	from         []uint32 // outer source address of each message
	out          [][]byte // packets to write to the TUN
	wbufs        [][]byte
	lim, dropLim logLimiter
	drops        [numDropReasons]int
}

func (d *dataPath) newReceiver() *receiver {
	nmsgs := maxBatch
	if d.gro {
		nmsgs = groReadMsgs
	}
	r := &receiver{d: d, msgs: make([]ipv4.Message, nmsgs), from: make([]uint32, nmsgs),
		out: make([][]byte, 0, maxBatch), wbufs: make([][]byte, maxBatch)}
	for i := range r.msgs {
		r.msgs[i].Buffers = [][]byte{make([]byte, maxPacket)}
		r.msgs[i].OOB = make([]byte, unix.CmsgSpace(4))
	}
	for i := range r.wbufs {
		// full capacity: the TUN coalesces later packets into the first one's buffer
		r.wbufs[i] = make([]byte, tunHeadroom+maxPacket)
	}
	return r
}

func (r *receiver) reset() {
	for i := range r.msgs {
		r.msgs[i].OOB = r.msgs[i].OOB[:cap(r.msgs[i].OOB)]
	}
}

// deliver writes the admitted packets of the first n messages to the TUN and counts the rest;
// GRO merges by outer addresses only, so every packet of a merged message is checked.
func (r *receiver) deliver(n int) {
	d := r.d
	tbl := d.table.Load()
	var first drop // the batch's first drop, for the log
	for i := range n {
		m := &r.msgs[i]
		data := m.Buffers[0][:m.N]
		seg := len(data)
		if d.gro {
			if s := groSize(m.OOB[:m.NN]); s > 0 {
				seg = s
			}
		}
		nets, known := tbl.senders(r.from[i])
		if !known {
			r.drops[dropUnknownPeer] += segments(len(data), seg)
			first.note(dropUnknownPeer, r.from[i], nil)
			continue
		}
		for off := 0; off < len(data); off += seg {
			pkt := data[off:min(off+seg, len(data))]
			total, why := checkInner(pkt, nets, d.own)
			if why != admitted {
				r.drops[why]++
				first.note(why, r.from[i], pkt)
				continue
			}
			w := r.wbufs[len(r.out)]
			copy(w[tunHeadroom:], pkt[:total])
			r.out = append(r.out, w[:tunHeadroom+total])
			d.counts.rx.Add(1)
			if len(r.out) == cap(r.out) {
				r.flush()
			}
		}
	}
	r.flush()
	if first.set {
		d.countDrops(&r.drops)
		if ok, sup := r.dropLim.allow(); ok {
			first.log(sup)
		}
	}
}

func (r *receiver) flush() {
	if len(r.out) == 0 {
		return
	}
	if _, err := r.d.device().Write(r.out, tunHeadroom); err != nil && !closedErr(err) {
		r.d.counts.dropped.Add(1)
		if ok, sup := r.lim.allow(); ok {
			klog.ErrorS(err, "udp: writing to the TUN device failed", "suppressedSince", sup)
		}
	}
	r.out = r.out[:0]
}

// admitted is checkInner's verdict for a packet to write to the TUN.
const admitted = numDropReasons

// checkInner returns p's total length and admitted, with the TTL decremented, or the reason
// to drop it, with p unchanged; nets are the sender's subnets, own ours.
func checkInner(p []byte, nets []net4, own net4) (int, dropReason) {
	_, total, ok := parseIPv4(p)
	if !ok {
		return 0, dropMalformed
	}
	src := srcKey(p)
	inPeer := false
	for _, n := range nets {
		if n.contains(src) {
			inPeer = true
			break
		}
	}
	if !inPeer {
		return 0, dropForeignSource
	}
	if !own.contains(dstKey(p)) {
		return 0, dropForeignDestination
	}
	if !decTTL(p) {
		return 0, dropTTLExpired
	}
	return total, admitted
}

// segments is how many datagrams n bytes cut every seg bytes (0: one) stand for.
func segments(n, seg int) int {
	if n == 0 || seg <= 0 {
		return 1
	}
	return (n + seg - 1) / seg
}

// countDrops adds the batch's drops to the counters and reports them, then zeroes them.
func (d *dataPath) countDrops(drops *[numDropReasons]int) {
	for r, n := range drops {
		if n == 0 {
			continue
		}
		d.counts.rxDrops[r].Add(uint64(n))
		d.obs.PacketsDropped(dropReason(r).String(), n)
		drops[r] = 0
	}
}

// drop is an example of a dropped packet, kept for the rate-limited log.
type drop struct {
	set      bool
	reason   dropReason
	from     uint32 // outer source
	src, dst uint32 // inner addresses (0: not known)
}

// note keeps the first drop it is told of; p is the inner packet, if any.
func (x *drop) note(r dropReason, from uint32, p []byte) {
	if x.set {
		return
	}
	*x = drop{set: true, reason: r, from: from}
	if len(p) >= ipv4MinHeader {
		x.src, x.dst = srcKey(p), dstKey(p)
	}
}

func (x *drop) log(suppressed int) {
	a := func(v uint32) netip.Addr {
		return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	if x.reason == dropUnknownPeer {
		klog.InfoS("udp: dropping datagrams from an address that is no peer's public IP (a host that is no node, or a node whose public IP is not the address it sends from)",
			"from", a(x.from), "reason", x.reason.String(), "suppressedSince", suppressed)
		return
	}
	klog.InfoS("udp: dropping received packets", "reason", x.reason.String(), "from", a(x.from),
		"innerSource", a(x.src), "innerDestination", a(x.dst), "suppressedSince", suppressed)
}
