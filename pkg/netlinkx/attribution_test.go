package netlinkx

import (
	"errors"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRunAttributesErrors: the kernel's refusal of single requests in a multi-chunk batch
// is reported for exactly those requests, wherever they sit in a chunk.
func TestRunAttributesErrors(t *testing.T) {
	_, c, idx := connLab(t)
	const n = 600
	local := netip.MustParseAddr("10.9.0.0") // vx0's own address
	badFDB := map[int]bool{0: true, 100: true, 255: true, 599: true}
	badNH := map[int]bool{1: true, 256: true, 300: true, 599: true}
	var b Batch
	var order []int
	for i := range n {
		_, gw, mac, pub := peerN(i)
		b.NeighSet(i, idx, gw, mac)
		if badFDB[i] {
			mac = [6]byte{0x01, 0, 0x5e, 0, 0, byte(i)}
		}
		b.FDBSet(n+i, idx, mac, pub)
		order = append(order, i, n+i)
	}
	want := func(tag int) bool { return tag >= n && badFDB[tag-n] }
	next := 0
	if err := c.Run(&b, func(tag int, err error, _ uint32) {
		if tag != order[next] {
			t.Fatalf("outcome of request %d reported in place of %d", tag, order[next])
		}
		next++
		switch {
		case want(tag) && !errors.Is(err, unix.EOPNOTSUPP):
			t.Errorf("request %d (multicast FDB MAC): %v, want EOPNOTSUPP", tag, err)
		case !want(tag) && err != nil:
			t.Errorf("request %d: %v", tag, err)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if next != 2*n {
		t.Fatalf("%d outcomes, want %d", next, 2*n)
	}

	b.Reset()
	for i := range n {
		_, gw, _, _ := peerN(i)
		if badNH[i] {
			gw = local
		}
		b.NexthopAdd(i, idx, gw, true)
	}
	ids := map[uint32]int{}
	if err := c.Run(&b, func(tag int, err error, id uint32) {
		if badNH[tag] {
			if !errors.Is(err, unix.EINVAL) || id != 0 {
				t.Errorf("nexthop %d via a local address: id %d, %v; want EINVAL", tag, id, err)
			}
			return
		}
		if err != nil || id == 0 {
			t.Errorf("nexthop %d: id %d, %v", tag, id, err)
			return
		}
		if prev, dup := ids[id]; dup {
			t.Errorf("nexthops %d and %d both got id %d", prev, tag, id)
		}
		ids[id] = tag
	}); err != nil {
		t.Fatal(err)
	}
	// Each id names the nexthop object of its own request's gateway.
	if err := c.Nexthops(idx, func(nh *Nexthop) {
		tag, ok := ids[nh.ID]
		if !ok {
			t.Errorf("nexthop id %d via %v was reported for no request", nh.ID, nh.Gw)
			return
		}
		if _, gw, _, _ := peerN(tag); nh.Gw != gw {
			t.Errorf("id %d reported for request %d (via %v) is the nexthop via %v", nh.ID, tag, gw, nh.Gw)
		}
		delete(ids, nh.ID)
	}); err != nil {
		t.Fatal(err)
	}
	if len(ids) != 0 {
		t.Errorf("%d reported ids have no nexthop object", len(ids))
	}
}

// TestRunSocketFailure: a failing socket gives every request a *SocketError that does not
// unwrap to the errno, and Run returns the failure.
func TestRunSocketFailure(t *testing.T) {
	c := &Conn{fd: -1, rbuf: make([]byte, 4096)}
	var b Batch
	for i := range 3 {
		_, gw, mac, _ := peerN(i)
		b.NeighSet(i, 1, gw, mac)
	}
	calls := 0
	err := c.Run(&b, func(tag int, err error, _ uint32) {
		calls++
		var se *SocketError
		if !errors.As(err, &se) || errors.Is(err, unix.EBADF) {
			t.Errorf("request %d: %v (%T), want a *SocketError hiding the errno", tag, err, err)
		}
	})
	if !errors.Is(err, unix.EBADF) || calls != 3 {
		t.Errorf("Run: %v after %d outcomes; want EBADF after 3", err, calls)
	}
}

// TestBatchEach: Each hands out every request with a tag, type and parsable body.
func TestBatchEach(t *testing.T) {
	var b Batch
	sn, gw, mac, pub := peerN(7)
	b.NeighSet(1, 5, gw, mac)
	b.FDBSet(2, 5, mac, pub)
	b.NexthopAdd(3, 5, gw, true)
	b.RouteReplace(4, Route{Dst: sn, Gw: gw, Oif: 5, Flags: unix.RTNH_F_ONLINK})
	b.RouteDel(5, Route{Dst: sn, NhID: 9})
	var seen []int
	b.Each(func(tag int, typ uint16, body []byte) {
		seen = append(seen, tag)
		switch typ {
		case unix.RTM_NEWNEIGH:
			var n Neigh
			if err := ParseNeigh(body, &n); err != nil || n.Ifindex != 5 || n.MAC != mac || !n.HasMAC {
				t.Errorf("request %d: %+v, %v", tag, n, err)
			}
			if (n.Family == unix.AF_BRIDGE) != (tag == 2) || (tag == 1 && n.IP != gw) || (tag == 2 && n.IP != pub) {
				t.Errorf("request %d: %+v", tag, n)
			}
		case unix.RTM_NEWNEXTHOP:
			var nh Nexthop
			if err := ParseNexthop(body, &nh); err != nil || nh.Gw != gw || nh.Oif != 5 || !nh.Onlink() || tag != 3 {
				t.Errorf("request %d: %+v, %v", tag, nh, err)
			}
		case unix.RTM_NEWROUTE, unix.RTM_DELROUTE:
			var r Route
			if err := ParseRoute(body, &r); err != nil || r.Dst != sn {
				t.Errorf("request %d: %+v, %v", tag, r, err)
			}
			if typ == unix.RTM_NEWROUTE && (r.Gw != gw || r.Oif != 5 || !r.Onlink() || tag != 4) {
				t.Errorf("request %d: %+v", tag, r)
			}
			if typ == unix.RTM_DELROUTE && (r.NhID != 9 || tag != 5) {
				t.Errorf("request %d: %+v", tag, r)
			}
		default:
			t.Errorf("request %d: type %d", tag, typ)
		}
	})
	if len(seen) != 5 {
		t.Errorf("Each saw requests %v", seen)
	}
}
