package udp

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/flannel-go/flannel/pkg/netlinkx/nstest"
)

func TestPrepareHeaders(t *testing.T) {
	a, b, c := []byte("aaaa"), []byte("bb"), []byte("c")
	oob := make([]byte, unix.CmsgSpace(2))
	ms := []ipv4.Message{
		{Buffers: [][]byte{a, b}, OOB: oob, Addr: &net.UDPAddr{IP: net.IPv4(192, 0, 2, 12), Port: 8285}},
		{Buffers: [][]byte{c}, Addr: &net.UDPAddr{IP: net.IPv4(198, 51, 100, 7).To4(), Port: 0x1234}},
	}
	var mb mmsgBuffers
	if err := mb.prepare(ms, true); err != nil {
		t.Fatal(err)
	}
	if len(mb.hdrs) != 2 || len(mb.iovs) != 3 {
		t.Fatalf("got %d headers, %d iovecs; want 2, 3", len(mb.hdrs), len(mb.iovs))
	}
	h0, h1 := mb.hdrs[0].Hdr, mb.hdrs[1].Hdr
	if h0.Iov != &mb.iovs[0] || uint64(h0.Iovlen) != 2 || h1.Iov != &mb.iovs[2] || uint64(h1.Iovlen) != 1 {
		t.Errorf("iovec ranges wrong: %+v %+v", h0, h1)
	}
	for i, want := range [][]byte{a, b, c} {
		if mb.iovs[i].Base != &want[0] || uint64(mb.iovs[i].Len) != uint64(len(want)) {
			t.Errorf("iovec %d = %+v, want base of %q, len %d", i, mb.iovs[i], want, len(want))
		}
	}
	if h0.Control != &oob[0] || uint64(h0.Controllen) != uint64(len(oob)) || h1.Control != nil || uint64(h1.Controllen) != 0 {
		t.Errorf("control data wrong: %+v %+v", h0, h1)
	}
	for i, want := range []struct {
		port [2]byte
		addr [4]byte
	}{{[2]byte{0x20, 0x5d}, [4]byte{192, 0, 2, 12}}, {[2]byte{0x12, 0x34}, [4]byte{198, 51, 100, 7}}} {
		sa := mb.names[i]
		port := *(*[2]byte)(unsafe.Pointer(&sa.Port))
		if sa.Family != unix.AF_INET || port != want.port || sa.Addr != want.addr {
			t.Errorf("name %d = family %d port % x addr %v, want port % x addr %v", i, sa.Family, port, sa.Addr, want.port, want.addr)
		}
		if h := mb.hdrs[i].Hdr; h.Name != (*byte)(unsafe.Pointer(&mb.names[i])) || h.Namelen != unix.SizeofSockaddrInet4 {
			t.Errorf("header %d does not point at its name", i)
		}
	}
	// Reuse with fewer messages and no destination (receive).
	if err := mb.prepare(ms[1:], false); err != nil {
		t.Fatal(err)
	}
	if h := mb.hdrs[0].Hdr; len(mb.hdrs) != 1 || h.Name != (*byte)(unsafe.Pointer(&mb.names[0])) || h.Namelen != unix.SizeofSockaddrInet4 ||
		mb.names[0] != (unix.RawSockaddrInet4{}) || h.Iov != &mb.iovs[0] {
		t.Errorf("reuse for receive: %+v, want room for the source address", mb.hdrs[0])
	}
	if err := mb.prepare([]ipv4.Message{{Buffers: [][]byte{a}, Addr: &net.UDPAddr{IP: net.ParseIP("2001:db8::1"), Port: 1}}}, true); err == nil {
		t.Error("IPv6 destination accepted")
	}
}

// TestRawBatchConnInNamespace sends through rawBatchConn over the loopback of a
// throw-away namespace: a GSO message of equal-size segments, a short last segment and a
// plain datagram, received with recvmmsg (and GRO when the kernel has it).
func TestRawBatchConnInNamespace(t *testing.T) {
	ns := nstest.New(t, "fgudpsock")
	lo, err := ns.Handle.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.Handle.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var tx, rx *net.UDPConn
	var gso, gro bool
	if err := ns.Do(func() error {
		var err error
		if tx, gso, _, err = listen(ctx, netip.MustParseAddrPort("127.0.0.1:0")); err != nil {
			return err
		}
		rx, _, gro, err = listen(ctx, netip.MustParseAddrPort("127.0.0.1:0"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	defer rx.Close()
	t.Logf("UDP GSO %v, GRO %v", gso, gro)
	stx, err := newRawBatchConn(tx)
	if err != nil {
		t.Fatal(err)
	}
	srx, err := newRawBatchConn(rx)
	if err != nil {
		t.Fatal(err)
	}
	to := rx.LocalAddr().(*net.UDPAddr)
	seg := func(fill byte, n int) []byte { return bytes.Repeat([]byte{fill}, n) }
	var want [][]byte
	var ms []ipv4.Message
	if gso {
		m := ipv4.Message{Buffers: [][]byte{seg('a', 1000), seg('b', 1000), seg('c', 400)}, Addr: to}
		setGSO(&m, 1000)
		ms = append(ms, m)
		want = append(want, seg('a', 1000), seg('b', 1000), seg('c', 400))
	}
	ms = append(ms, ipv4.Message{Buffers: [][]byte{seg('d', 10), seg('e', 20)}, Addr: to})
	want = append(want, append(seg('d', 10), seg('e', 20)...))
	n, err := stx.WriteBatch(ms, 0)
	if err != nil || n != len(ms) {
		t.Fatalf("WriteBatch = %d, %v; want %d", n, err, len(ms))
	}

	rms := make([]ipv4.Message, 4)
	for i := range rms {
		rms[i].Buffers = [][]byte{make([]byte, maxPacket)}
		rms[i].OOB = make([]byte, unix.CmsgSpace(4))
	}
	var got [][]byte
	from := make([]uint32, len(rms))
	_ = rx.SetReadDeadline(time.Now().Add(10 * time.Second))
	for len(got) < len(want) {
		for i := range rms {
			rms[i].OOB = rms[i].OOB[:cap(rms[i].OOB)]
		}
		n, err := srx.ReadBatch(rms, from)
		if err != nil {
			t.Fatalf("ReadBatch after %d datagrams: %v", len(got), err)
		}
		for i, m := range rms[:n] {
			if from[i] != 0x7f000001 {
				t.Errorf("message %d from %#x, want 127.0.0.1", i, from[i])
			}
			data := m.Buffers[0][:m.N]
			size := len(data)
			if s := groSize(m.OOB[:m.NN]); s > 0 {
				size = s
			}
			for off := 0; off < len(data); off += size {
				got = append(got, data[off:min(off+size, len(data))])
			}
		}
	}
	if len(got) != len(want) {
		t.Fatalf("got %d datagrams, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("datagram %d: got %d bytes starting %q, want %d bytes starting %q", i, len(got[i]), got[i][:1], len(want[i]), want[i][:1])
		}
	}
	// A closed socket ends the reader with net.ErrClosed, as the data path expects.
	rx.Close()
	if _, err := srx.ReadBatch(rms, from); !closedErr(err) {
		t.Errorf("ReadBatch on a closed socket: %v, want a closed error", err)
	}
}
