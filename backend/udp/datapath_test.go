package udp

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

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
// queued receives (each with an optional GRO segment size), then reports closed.
type fakeConn struct {
	t      *testing.T
	sent   []sent
	sends  int // messages
	recv   [][]byte
	recvGS []int
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

func (f *fakeConn) ReadBatch(ms []ipv4.Message, _ int) (int, error) {
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
		m.Addr = &net.UDPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 8285}
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
	d := &dataPath{tun: tun, conn: conn, tunIP: [4]byte{10, 5, 1, 0}, table: &tp, gro: gro, mtu: 1472, counts: &counters{}}
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

func TestUDPToTUN(t *testing.T) {
	p1, p2, p3 := sized([4]byte{10, 5, 1, 5}, 1000), sized([4]byte{10, 5, 1, 6}, 1000), sized([4]byte{10, 5, 1, 7}, 300)
	gro := append(append(append([]byte{}, p1...), p2...), p3...)
	expired := ipPacket([4]byte{10, 5, 2, 2}, [4]byte{10, 5, 1, 5}, 17, 1, nil)
	conn := &fakeConn{t: t, recv: [][]byte{gro, p3, expired, {1, 2, 3}}, recvGS: []int{1000, 0, 0, 0}}
	tun := &fakeTUN{}
	d := newTestPath(t, tun, conn, false, true)
	d.udpToTUN(context.Background())
	want := [][]byte{p1, p2, p3, p3}
	if len(tun.writes) != len(want) {
		t.Fatalf("%d packets written to the TUN, want %d", len(tun.writes), len(want))
	}
	for i, w := range tun.writes {
		if len(w) != len(want[i]) || w[8] != 63 || checksum(w[:20]) != 0 || !bytes.Equal(w[20:], want[i][20:]) {
			t.Errorf("packet %d: len %d TTL %d; want len %d TTL 63 with a valid checksum", i, len(w), w[8], len(want[i]))
		}
	}
	if st := d.counts.snapshot(); st.RxPackets != 4 || st.Dropped != 2 {
		t.Errorf("stats %+v", st)
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
	p := sized([4]byte{10, 5, 1, 5}, 200)
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
