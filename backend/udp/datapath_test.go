package udp

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

// fakeTUN hands out queued read batches, then reports closed; it records writes.
type fakeTUN struct {
	reads  [][][]byte
	writes [][]byte
	batch  int
}

func (f *fakeTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(f.reads) == 0 {
		return 0, os.ErrClosed
	}
	r := f.reads[0]
	f.reads = f.reads[1:]
	for i, p := range r {
		sizes[i] = copy(bufs[i][offset:], p)
	}
	return len(r), nil
}

func (f *fakeTUN) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		f.writes = append(f.writes, append([]byte{}, b[offset:]...))
	}
	return len(bufs), nil
}

func (f *fakeTUN) BatchSize() int { return f.batch }
func (f *fakeTUN) Close() error   { return nil }

// sent is one datagram as the kernel would put it on the wire.
type sent struct {
	to      string
	payload []byte
}

// fakeConn records sends, cutting GSO messages the way the kernel does, and hands out
// queued receives (each with an optional GRO segment size and its source address,
// 192.0.2.2 when recvFrom is nil), then reports closed.
type fakeConn struct {
	t        *testing.T
	sent     []sent
	sends    int // messages
	recv     [][]byte
	recvGS   []int
	recvFrom []uint32
}

func (f *fakeConn) WriteBatch(ms []ipv4.Message, _ int) (int, error) {
	for _, m := range ms {
		f.sends++
		gso := groSizeFromSegment(m.OOB)
		var all []byte
		for _, b := range m.Buffers {
			all = append(all, b...)
		}
		if gso == 0 {
			gso = len(all)
		}
		for off := 0; off < len(all); off += gso {
			f.sent = append(f.sent, sent{m.Addr.String(), all[off:min(off+gso, len(all))]})
		}
	}
	return len(ms), nil
}

// groSizeFromSegment reads a UDP_SEGMENT control message.
func groSizeFromSegment(oob []byte) int {
	if len(oob) == 0 {
		return 0
	}
	h, data, _, err := unix.ParseOneSocketControlMessage(oob)
	if err != nil || h.Level != unix.SOL_UDP || h.Type != unix.UDP_SEGMENT {
		return -1
	}
	return int(data[0]) | int(data[1])<<8
}

func (f *fakeConn) ReadBatch(ms []ipv4.Message, from []uint32) (int, error) {
	if len(f.recv) == 0 {
		return 0, net.ErrClosed
	}
	n := 0
	for n < len(ms) && len(f.recv) > 0 {
		m := &ms[n]
		m.N = copy(m.Buffers[0], f.recv[0])
		m.NN = 0
		if gs := f.recvGS[0]; gs > 0 {
			b := m.OOB[:unix.CmsgSpace(4)]
			h := unsafePointer(&b[0])
			h.Level, h.Type = unix.SOL_UDP, unix.UDP_GRO
			h.SetLen(unix.CmsgLen(4))
			b[unix.CmsgLen(0)], b[unix.CmsgLen(0)+1] = byte(gs), byte(gs>>8)
			b[unix.CmsgLen(0)+2], b[unix.CmsgLen(0)+3] = 0, 0
			m.NN = len(b)
		}
		from[n] = addrKey("192.0.2.2")
		if f.recvFrom != nil {
			from[n], f.recvFrom = f.recvFrom[0], f.recvFrom[1:]
		}
		f.recv, f.recvGS = f.recv[1:], f.recvGS[1:]
		n++
	}
	return n, nil
}

func newTestPath(t *testing.T, tun *fakeTUN, conn *fakeConn, gso, gro bool) *dataPath {
	var tp atomic.Pointer[table]
	tbl, _ := buildTable(subnet.PeersOf(
		udpLease("10.5.2.0/24", "192.0.2.2", ""),
		udpLease("10.5.3.0/24", "192.0.2.3", ""),
	), netip.MustParsePrefix("10.5.0.0/16"), netip.MustParsePrefix("10.5.1.0/24"), 8285)
	tp.Store(tbl)
	d := &dataPath{tun: tun, conn: conn, tunIP: [4]byte{10, 5, 1, 0}, own: net4Of(netip.MustParsePrefix("10.5.1.0/24")),
		table: &tp, gro: gro, mtu: 1472, counts: &counters{}, obs: observe.Nop{}}
	d.gso.Store(gso)
	return d
}

func sized(dst [4]byte, n int) []byte {
	return ipPacket([4]byte{10, 5, 1, 2}, dst, 17, 64, make([]byte, n-20))
}

func TestTunToUDP(t *testing.T) {
	to2, to3, nowhere := [4]byte{10, 5, 2, 9}, [4]byte{10, 5, 3, 9}, [4]byte{10, 5, 9, 9}
	batch := [][]byte{
		sized(to2, 1000), sized(to2, 1000), sized(to2, 1000), sized(to2, 600), // one GSO send
		sized(to2, 1000), // after a shorter one: a new send
		sized(to3, 1000), // another peer
		echoRequest([4]byte{10, 5, 1, 2}, nowhere, 64),  // no lease: ICMP back
		ipPacket([4]byte{10, 5, 1, 2}, to3, 17, 1, nil), // TTL expires
		{0x60, 0, 0, 0}, // garbage
	}
	for _, gso := range []bool{true, false} {
		tun := &fakeTUN{reads: [][][]byte{batch}, batch: len(batch)}
		conn := &fakeConn{t: t}
		d := newTestPath(t, tun, conn, gso, false)
		d.tunToUDP(context.Background())
		if len(conn.sent) != 6 {
			t.Fatalf("gso=%v: %d datagrams, want 6", gso, len(conn.sent))
		}
		wantSends := 6
		if gso {
			wantSends = 3 // [4 to .2], [1 to .2], [1 to .3]
		}
		if conn.sends != wantSends {
			t.Errorf("gso=%v: %d sends, want %d", gso, conn.sends, wantSends)
		}
		for i, s := range conn.sent {
			want := batch[i]
			wantTo := "192.0.2.2:8285"
			if i == 5 {
				wantTo = "192.0.2.3:8285"
			}
			if s.to != wantTo {
				t.Errorf("datagram %d to %s, want %s", i, s.to, wantTo)
			}
			_, total, ok := parseIPv4(s.payload)
			if !ok || total != len(s.payload) || len(s.payload) != len(want) || checksum(s.payload[:20]) != 0 {
				t.Errorf("datagram %d is not exactly one valid IPv4 packet", i)
				continue
			}
			if s.payload[8] != 63 || !bytes.Equal(s.payload[20:], want[20:]) {
				t.Errorf("datagram %d: TTL %d (want 63) or payload changed", i, s.payload[8])
			}
		}
		if len(tun.writes) != 1 || tun.writes[0][20] != 3 || tun.writes[0][21] != 0 {
			t.Errorf("gso=%v: TUN writes %d, want one ICMP net unreachable", gso, len(tun.writes))
		}
		st := d.counts.snapshot()
		if st.TxPackets != 6 || st.NoRoute != 1 || st.Unreachable != 1 || st.Dropped != 2 {
			t.Errorf("gso=%v: stats %+v", gso, st)
		}
	}
}

// dropObserver sums what the data path reports per reason.
type dropObserver struct {
	observe.Nop
	mu    sync.Mutex
	drops map[string]int
}

func (o *dropObserver) PacketsDropped(reason string, n int) {
	o.mu.Lock()
	o.drops[reason] += n
	o.mu.Unlock()
}

// inner builds a packet of n bytes from src to dst.
func inner(src, dst [4]byte, n int) []byte { return ipPacket(src, dst, 17, 64, make([]byte, n-20)) }

func concat(ps ...[]byte) []byte { return bytes.Join(ps, nil) }

// TestUDPToTUN: received packets reach the TUN only when they pass the three checks, each
// packet of a GRO message on its own; the rest is counted by reason.
func TestUDPToTUN(t *testing.T) {
	peer2, peer3, stranger := addrKey("192.0.2.2"), addrKey("192.0.2.3"), addrKey("192.0.2.200")
	in2, in3, other := [4]byte{10, 5, 2, 7}, [4]byte{10, 5, 3, 7}, [4]byte{10, 5, 9, 9}
	me, tunAddr := [4]byte{10, 5, 1, 5}, [4]byte{10, 5, 1, 0}
	good1, good2, short := inner(in2, me, 1000), inner(in2, [4]byte{10, 5, 1, 6}, 1000), inner(in2, me, 300)
	toTUN := inner(in2, tunAddr, 100)
	fromPeer3 := inner(in3, me, 200)
	spoofed := inner(in3, me, 1000)       // peer 3's subnet, sent by peer 2
	foreignSrc := inner(other, me, 1000)  // nobody's subnet
	foreignDst := inner(in2, other, 1000) // not for us
	toPeer3 := inner(in2, in3, 1000)      // for another peer: not ours to deliver
	expired := ipPacket(in2, me, 17, 1, nil)
	type rx struct {
		data []byte
		gs   int
		from uint32
	}
	tests := []struct {
		name  string
		rx    []rx
		want  [][]byte
		drops map[dropReason]int
	}{
		{"GRO train of good packets", []rx{{concat(good1, good2, short), 1000, peer2}}, [][]byte{good1, good2, short}, nil},
		{"good packet to the TUN's address", []rx{{toTUN, 0, peer2}}, [][]byte{toTUN}, nil},
		{"each peer from its own subnet", []rx{{good1, 0, peer2}, {fromPeer3, 0, peer3}}, [][]byte{good1, fromPeer3}, nil},
		{"GRO train with bad packets after a good one", []rx{{concat(good1, spoofed, foreignDst, good2), 1000, peer2}},
			[][]byte{good1, good2}, map[dropReason]int{dropForeignSource: 1, dropForeignDestination: 1}},
		{"stranger", []rx{{good1, 0, stranger}}, nil, map[dropReason]int{dropUnknownPeer: 1}},
		{"stranger's GRO train counts every datagram", []rx{{concat(good1, good2, short), 1000, stranger}}, nil,
			map[dropReason]int{dropUnknownPeer: 3}},
		{"no IPv4 source", []rx{{good1, 0, 0}}, nil, map[dropReason]int{dropUnknownPeer: 1}},
		{"empty datagram from a stranger", []rx{{nil, 0, stranger}}, nil, map[dropReason]int{dropUnknownPeer: 1}},
		{"peer's address, another peer's source", []rx{{spoofed, 0, peer2}}, nil, map[dropReason]int{dropForeignSource: 1}},
		{"peer's address, nobody's source", []rx{{foreignSrc, 0, peer2}}, nil, map[dropReason]int{dropForeignSource: 1}},
		{"destination outside our subnet", []rx{{foreignDst, 0, peer2}, {toPeer3, 0, peer2}}, nil,
			map[dropReason]int{dropForeignDestination: 2}},
		{"TTL expires", []rx{{expired, 0, peer2}}, nil, map[dropReason]int{dropTTLExpired: 1}},
		{"garbage", []rx{{[]byte{1, 2, 3}, 0, peer2}, {good1[:500], 0, peer2}}, nil, map[dropReason]int{dropMalformed: 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn := &fakeConn{t: t}
			for _, r := range tc.rx {
				conn.recv = append(conn.recv, append([]byte{}, r.data...))
				conn.recvGS = append(conn.recvGS, r.gs)
				conn.recvFrom = append(conn.recvFrom, r.from)
			}
			tun := &fakeTUN{}
			d := newTestPath(t, tun, conn, false, true)
			obs := &dropObserver{drops: map[string]int{}}
			d.obs = obs
			d.udpToTUN(context.Background())
			if len(tun.writes) != len(tc.want) {
				t.Fatalf("%d packets written to the TUN, want %d", len(tun.writes), len(tc.want))
			}
			for i, w := range tun.writes {
				want := tc.want[i]
				if len(w) != len(want) || w[8] != 63 || checksum(w[:20]) != 0 || !bytes.Equal(w[12:20], want[12:20]) || !bytes.Equal(w[20:], want[20:]) {
					t.Errorf("packet %d: len %d TTL %d; want len %d TTL 63 with a valid checksum", i, len(w), w[8], len(want))
				}
			}
			st := d.counts.snapshot()
			if st.RxPackets != uint64(len(tc.want)) {
				t.Errorf("RxPackets %d, want %d", st.RxPackets, len(tc.want))
			}
			for r := range numDropReasons {
				want := tc.drops[r]
				if got := st.RxDropped[r.String()]; got != uint64(want) {
					t.Errorf("Stats: %d dropped for %s, want %d", got, r, want)
				}
				if got := obs.drops[r.String()]; got != want {
					t.Errorf("observer: %d dropped for %s, want %d", got, r, want)
				}
			}
		})
	}
}

// Before the first Reconcile there is no table: everything is dropped as unknown; a
// table swapped in is used from the next batch.
func TestUDPToTUNTableSwap(t *testing.T) {
	p := inner([4]byte{10, 5, 2, 7}, [4]byte{10, 5, 1, 5}, 200)
	conn := &fakeConn{t: t, recv: [][]byte{p}, recvGS: []int{0}}
	tun := &fakeTUN{}
	d := newTestPath(t, tun, conn, false, false)
	d.table.Store(nil)
	d.udpToTUN(context.Background())
	if len(tun.writes) != 0 || d.counts.snapshot().RxDropped["unknown_peer"] != 1 {
		t.Fatalf("without a table: %d writes, stats %+v", len(tun.writes), d.counts.snapshot())
	}
	// peer 10.5.2.0/24 moves to a new public address
	tbl, _ := buildTable(subnet.PeersOf(udpLease("10.5.2.0/24", "192.0.2.22", "")),
		netip.MustParsePrefix("10.5.0.0/16"), netip.MustParsePrefix("10.5.1.0/24"), 8285)
	d.table.Store(tbl)
	d.conn = &fakeConn{t: t, recv: [][]byte{p, p}, recvGS: []int{0, 0}, recvFrom: []uint32{addrKey("192.0.2.2"), addrKey("192.0.2.22")}}
	d.udpToTUN(context.Background())
	if st := d.counts.snapshot(); len(tun.writes) != 1 || st.RxDropped["unknown_peer"] != 2 {
		t.Errorf("after the swap: %d writes (want 1), stats %+v", len(tun.writes), st)
	}
}

func TestGroSize(t *testing.T) {
	m := ipv4.Message{}
	setGSO(&m, 1400)
	if got := groSizeFromSegment(m.OOB); got != 1400 {
		t.Fatalf("UDP_SEGMENT round trip: %d", got)
	}
	b := make([]byte, unix.CmsgSpace(4))
	h := unsafePointer(&b[0])
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_GRO
	h.SetLen(unix.CmsgLen(4))
	b[unix.CmsgLen(0)], b[unix.CmsgLen(0)+1] = 0x78, 0x05
	if got := groSize(b); got != 0x578 {
		t.Errorf("groSize %d, want %d", got, 0x578)
	}
	if groSize(nil) != 0 || groSize([]byte{1, 2, 3}) != 0 {
		t.Error("groSize of nothing must be 0")
	}
}

// After the TUN was recreated, received packets go to the new device and a reader for
// the new device sends what it reads; the old device gets nothing more.
func TestReplaceTUN(t *testing.T) {
	p := inner([4]byte{10, 5, 2, 7}, [4]byte{10, 5, 1, 5}, 200)
	old := &fakeTUN{}
	d := newTestPath(t, old, &fakeConn{t: t, recv: [][]byte{p}, recvGS: []int{0}}, false, false)
	d.udpToTUN(context.Background())
	if len(old.writes) != 1 {
		t.Fatalf("before: %d writes to the first TUN, want 1", len(old.writes))
	}
	out := sized([4]byte{10, 5, 2, 9}, 200)
	repl := &fakeTUN{reads: [][][]byte{{out}}, batch: 1}
	d.replaceTUN(repl)
	if d.device() != repl {
		t.Fatal("device() is not the replacement")
	}
	conn := &fakeConn{t: t, recv: [][]byte{p}, recvGS: []int{0}}
	d.conn = conn
	d.udpToTUN(context.Background())
	d.tunToUDP(context.Background())
	if len(old.writes) != 1 || len(repl.writes) != 1 {
		t.Errorf("after: writes old %d new %d, want 1 and 1", len(old.writes), len(repl.writes))
	}
	if len(conn.sent) != 1 || conn.sent[0].to != "192.0.2.2:8285" {
		t.Errorf("sent %+v, want one datagram to 192.0.2.2:8285 read from the new TUN", conn.sent)
	}
}

// FuzzReceive feeds one arbitrary datagram, GRO segment size and outer source through the
// receive path: nothing panics, exactly the segments that pass the checks and are whole
// IPv4 packets with TTL > 1 are written, in order, and every other is counted once.
func FuzzReceive(f *testing.F) {
	in2, in3, me := [4]byte{10, 5, 2, 7}, [4]byte{10, 5, 3, 7}, [4]byte{10, 5, 1, 5}
	good := inner(in2, me, 100)
	f.Add(good, uint16(0), byte(0))
	f.Add(concat(good, good, inner(in2, me, 60)), uint16(100), byte(0))
	f.Add(concat(good, inner(in3, me, 100), inner(in2, in3, 100), good), uint16(100), byte(0))
	f.Add(concat(good, good), uint16(100), byte(2))
	f.Add(inner(in3, me, 100), uint16(0), byte(1))
	f.Add([]byte{0x45, 0, 0, 0xff}, uint16(3), byte(0))
	f.Add([]byte{}, uint16(0), byte(0))
	sources := []string{"192.0.2.2", "192.0.2.3", "192.0.2.200", "0.0.0.0"}
	subnets := map[string]netip.Prefix{"192.0.2.2": netip.MustParsePrefix("10.5.2.0/24"), "192.0.2.3": netip.MustParsePrefix("10.5.3.0/24")}
	own := netip.MustParsePrefix("10.5.1.0/24")
	// One receiver for all runs, as the data path keeps one (its buffers are large).
	tun := &fakeTUN{}
	conn := &fakeConn{}
	d := newTestPath(nil, tun, conn, false, true)
	r := d.newReceiver()
	f.Fuzz(func(t *testing.T, data []byte, gs uint16, sel byte) {
		if len(data) > maxPacket {
			data = data[:maxPacket]
		}
		src := sources[int(sel)%len(sources)]
		tun.writes, d.counts = nil, &counters{}
		conn.recv, conn.recvGS, conn.recvFrom = [][]byte{data}, []int{int(gs)}, []uint32{addrKey(src)}
		r.reset()
		n, err := conn.ReadBatch(r.msgs, r.from)
		if err != nil || n != 1 {
			t.Fatalf("fake receive: %d, %v", n, err)
		}
		r.deliver(n)

		// The reference: the segments, judged with netip. An empty datagram holds no
		// packet but counts as one datagram from a stranger.
		seg := len(data)
		if gs > 0 {
			seg = int(gs)
		}
		sn, peer := subnets[src]
		var want [][]byte
		n = 0
		if len(data) == 0 && !peer {
			n = 1
		}
		for off := 0; off < len(data); off += seg {
			n++
			p := data[off:min(off+seg, len(data))]
			if !peer || len(p) < 20 || p[0]>>4 != 4 || int(p[0]&0xf)*4 < 20 {
				continue
			}
			total := int(binary.BigEndian.Uint16(p[2:4]))
			if total < int(p[0]&0xf)*4 || total > len(p) || p[8] <= 1 {
				continue
			}
			if !sn.Contains(netip.AddrFrom4([4]byte(p[12:16]))) || !own.Contains(netip.AddrFrom4([4]byte(p[16:20]))) {
				continue
			}
			w := append([]byte{}, p[:total]...)
			w[8]--
			want = append(want, w)
		}
		if len(tun.writes) != len(want) {
			t.Fatalf("%d packets written, want %d", len(tun.writes), len(want))
		}
		for i, w := range tun.writes {
			if !bytes.Equal(w[:10], want[i][:10]) || !bytes.Equal(w[12:], want[i][12:]) {
				t.Fatalf("packet %d written as % x, want % x (checksum aside)", i, w, want[i])
			}
		}
		st := d.counts.snapshot()
		var dropped uint64
		for _, v := range st.RxDropped {
			dropped += v
		}
		if st.RxPackets+dropped != uint64(n) {
			t.Fatalf("%d written + %d dropped, want %d segments in all (stats %+v)", st.RxPackets, dropped, n, st)
		}
	})
}

// discardTUN accepts writes and keeps nothing.
type discardTUN struct{ fakeTUN }

func (*discardTUN) Write(bufs [][]byte, _ int) (int, error) { return len(bufs), nil }

// refreshTTL sets the TTL of every packet of r's first message (count packets of size
// bytes) back to 255, so that repeated deliveries never expire them.
func refreshTTL(r *receiver, size, count int) {
	b := r.msgs[0].Buffers[0]
	for i := range count {
		b[i*size+8] = 255
	}
}

// loadGRO puts a GRO message of count packets of size bytes each, from peer 192.0.2.2
// to us, into r's first message.
func loadGRO(r *receiver, size, count int) {
	p := inner([4]byte{10, 5, 2, 7}, [4]byte{10, 5, 1, 5}, size)
	p[8] = 255
	p[10], p[11] = 0, 0
	binary.BigEndian.PutUint16(p[10:12], checksum(p[:20]))
	conn := &fakeConn{recv: [][]byte{bytes.Repeat(p, count)}, recvGS: []int{size}, recvFrom: []uint32{addrKey("192.0.2.2")}}
	r.reset()
	_, _ = conn.ReadBatch(r.msgs, r.from)
}

// The receive path allocates nothing per batch for admitted packets.
func TestDeliverAllocatesNothing(t *testing.T) {
	d := newTestPath(t, nil, &fakeConn{}, false, true)
	d.tun = &discardTUN{}
	r := d.newReceiver()
	loadGRO(r, 1472, 44)
	if a := testing.AllocsPerRun(100, func() {
		refreshTTL(r, 1472, 44)
		r.deliver(1)
	}); a != 0 {
		t.Errorf("%.1f allocations per batch, want 0", a)
	}
	if st := d.counts.snapshot(); st.RxPackets != 101*44 {
		t.Errorf("%d packets delivered, want %d (stats %+v)", st.RxPackets, 101*44, st)
	}
}

// BenchmarkDeliver: one GRO message of 44 MTU-sized packets from a peer, checked and
// handed to the TUN (which discards them).
func BenchmarkDeliver(b *testing.B) {
	d := newTestPath(nil, nil, &fakeConn{}, false, true)
	d.tun = &discardTUN{}
	r := d.newReceiver()
	loadGRO(r, 1472, 44)
	b.SetBytes(44 * 1472)
	for b.Loop() {
		refreshTTL(r, 1472, 44)
		r.deliver(1)
	}
}

// BenchmarkCheckInner: the per-packet checks alone (parse, both subnets, TTL).
func BenchmarkCheckInner(b *testing.B) {
	p := inner([4]byte{10, 5, 2, 7}, [4]byte{10, 5, 1, 5}, 1472)
	nets := []net4{net4Of(netip.MustParsePrefix("10.5.2.0/24"))}
	own := net4Of(netip.MustParsePrefix("10.5.1.0/24"))
	for b.Loop() {
		p[8] = 64
		if _, r := checkInner(p, nets, own); r != admitted {
			b.Fatal(r)
		}
	}
}
