package subnet

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"
	"unsafe"
)

func TestPeerSize(t *testing.T) {
	if n := unsafe.Sizeof(peer{}); n > 56 {
		t.Errorf("peer is %d bytes, want at most 56", n)
	}
}

func TestPeersRoundTrip(t *testing.T) {
	mac := json.RawMessage(`{"VNI":1,"VtepMAC":"4e:7c:fc:75:67:c4"}`)
	mac6 := json.RawMessage(`{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}`)
	addr := netip.MustParseAddr
	cases := map[string]Lease{
		"zero": {},
		"v4 vxlan": {EnableIPv4: true, Subnet: mustPrefix("10.5.85.0/24"),
			Attrs: LeaseAttrs{PublicIP: addr("198.51.100.1"), BackendType: "vxlan", BackendData: mac}},
		"v4 host-gw, no data": {EnableIPv4: true, Subnet: mustPrefix("10.5.86.0/24"),
			Attrs: LeaseAttrs{PublicIP: addr("198.51.100.2"), BackendType: "host-gw"}},
		"v4 udp, empty data": {EnableIPv4: true, Subnet: mustPrefix("10.5.87.0/24"),
			Attrs: LeaseAttrs{PublicIP: addr("198.51.100.3"), BackendData: json.RawMessage{}}},
		"v4 null data": {EnableIPv4: true, Subnet: mustPrefix("10.5.87.0/24"),
			Attrs: LeaseAttrs{PublicIP: addr("198.51.100.3"), BackendData: json.RawMessage("null")}},
		"v4 unmasked subnet": {EnableIPv4: true, Subnet: netip.PrefixFrom(addr("10.5.88.7"), 24)},
		"v4 key 0.0.0.0-0": {EnableIPv4: true, Subnet: mustPrefix("0.0.0.0/0"),
			Attrs: LeaseAttrs{PublicIP: addr("0.0.0.0")}},
		"v4 /32": {Subnet: mustPrefix("10.255.255.255/32"), Attrs: LeaseAttrs{PublicIP: addr("255.255.255.255")}},
		"v6 only": {EnableIPv6: true, IPv6Subnet: mustPrefix("fd00:5:85::/64"),
			Attrs: LeaseAttrs{PublicIPv6: addr("fd00::2"), BackendType: "vxlan", BackendV6Data: mac6}},
		"dual stack": {EnableIPv4: true, EnableIPv6: true, Subnet: mustPrefix("10.5.85.0/24"),
			IPv6Subnet: mustPrefix("fd00:5:85::/64"),
			Attrs: LeaseAttrs{PublicIP: addr("198.51.100.1"), PublicIPv6: addr("fd00::1"),
				BackendType: "vxlan", BackendData: mac, BackendV6Data: mac6}},
		"IPv4-mapped IPv6 addresses": {Subnet: mustPrefix("::ffff:10.5.0.0/120"),
			IPv6Subnet: mustPrefix("::ffff:10.6.0.0/120"),
			Attrs:      LeaseAttrs{PublicIP: addr("::ffff:198.51.100.1"), PublicIPv6: addr("::ffff:198.51.100.2")}},
		"v6 in the IPv4 fields": {Subnet: mustPrefix("fd00::/64"), Attrs: LeaseAttrs{PublicIP: addr("fd00::1")}},
		"zoned IPv6 address":    {EnableIPv6: true, Attrs: LeaseAttrs{PublicIPv6: addr("fe80::1%eth0")}},
		"invalid prefix with an address": {Subnet: netip.PrefixFrom(addr("10.0.0.0"), 33),
			IPv6Subnet: netip.PrefixFrom(addr("fd00::"), 129)},
		"unknown backend type": {EnableIPv4: true, Subnet: mustPrefix("10.5.89.0/24"),
			Attrs: LeaseAttrs{BackendType: "something-else", BackendData: json.RawMessage(`"x"`)}},
		"expiration dropped": {EnableIPv4: true, Subnet: mustPrefix("10.5.90.0/24"),
			Expiration: time.Unix(1700000000, 0)},
	}
	for name, l := range cases {
		t.Run(name, func(t *testing.T) {
			p := PeersOf(l)
			if p.Len() != 1 {
				t.Fatalf("Len %d", p.Len())
			}
			got := p.At(0)
			if !SamePeer(got, l) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, l)
			}
			if !got.Expiration.IsZero() {
				t.Errorf("Expiration %v, want zero", got.Expiration)
			}
			if got.Key() != l.Key() {
				t.Errorf("key %q, want %q", got.Key(), l.Key())
			}
			if len(l.Attrs.BackendData) == 0 && got.Attrs.BackendData != nil {
				t.Errorf("empty backend data came back as %q", got.Attrs.BackendData)
			}
			if ls := p.Leases(); len(ls) != 1 || !SamePeer(ls[0], l) {
				t.Errorf("Leases: %+v", ls)
			}
		})
	}
}

func TestPeersCopiesInput(t *testing.T) {
	l := Lease{Subnet: mustPrefix("10.5.85.0/24"), Attrs: LeaseAttrs{BackendType: "vxlan",
		BackendData: json.RawMessage(`{"VtepMAC":"4e:7c:fc:75:67:c4"}`)}}
	p := PeersOf(l)
	l.Attrs.BackendData[2] = 'X'
	if got := string(p.At(0).Attrs.BackendData); got != `{"VtepMAC":"4e:7c:fc:75:67:c4"}` {
		t.Fatalf("changed with its input: %s", got)
	}
	// Well-known backend types are shared, not copied per lease.
	typ := string([]byte("vxlan"))
	a, b := PeersOf(Lease{Attrs: LeaseAttrs{BackendType: typ}}), PeersOf(Lease{Attrs: LeaseAttrs{BackendType: "vxlan"}})
	if unsafe.StringData(a.At(0).Attrs.BackendType) != unsafe.StringData(b.At(0).Attrs.BackendType) {
		t.Error("backend type not interned")
	}
}

// v4Lease is a distinct IPv4 vxlan lease for each n.
func v4Lease(n int) Lease {
	return Lease{EnableIPv4: true,
		Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(n >> 8), byte(n), 0}), 24),
		Attrs: LeaseAttrs{PublicIP: netip.AddrFrom4([4]byte{198, 51, byte(n >> 8), byte(n)}), BackendType: "vxlan",
			BackendData: json.RawMessage(fmt.Sprintf(`{"VNI":1,"VtepMAC":"02:00:00:00:%02x:%02x"}`, byte(n>>8), byte(n)))}}
}

func subnets(p Peers) []string {
	var out []string
	for l := range p.All() {
		out = append(out, l.Subnet.String())
	}
	return out
}

func TestPeerListEdits(t *testing.T) {
	var pl PeerList
	pl.Reset([]Lease{v4Lease(1), v4Lease(3), v4Lease(5)})
	view := pl.Peers()
	if got := subnets(view); !slices.Equal(got, []string{"10.0.1.0/24", "10.0.3.0/24", "10.0.5.0/24"}) {
		t.Fatalf("Reset: %v", got)
	}
	pl.Insert([]int{0, 1, 1, 3}, []Lease{v4Lease(0), v4Lease(2), v4Lease(2 + 256), v4Lease(6)})
	want := []string{"10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24", "10.1.2.0/24", "10.0.3.0/24", "10.0.5.0/24", "10.0.6.0/24"}
	if got := subnets(pl.Peers()); !slices.Equal(got, want) {
		t.Fatalf("Insert: %v, want %v", got, want)
	}
	pl.Set(3, v4Lease(4))
	if got := pl.At(3); !SamePeer(got, v4Lease(4)) {
		t.Fatalf("Set: %+v", got)
	}
	pl.Delete([]int{0, 3, 6})
	want = []string{"10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24", "10.0.5.0/24"}
	if got := subnets(pl.Peers()); !slices.Equal(got, want) {
		t.Fatalf("Delete: %v, want %v", got, want)
	}
	for i, n := range []int{1, 2, 3, 5} {
		if !SamePeer(pl.At(i), v4Lease(n)) {
			t.Errorf("At(%d) = %+v, want lease %d", i, pl.At(i), n)
		}
	}
	pl.Reset([]Lease{v4Lease(7)})
	if pl.Len() != 1 || !SamePeer(pl.At(0), v4Lease(7)) {
		t.Fatalf("Reset smaller: %v", subnets(pl.Peers()))
	}
	pl.Delete(nil)
	pl.Insert(nil, nil)
	pl.Reset(nil)
	if pl.Len() != 0 || pl.Peers().Len() != 0 || (Peers{}).Len() != 0 {
		t.Fatal("not empty")
	}
}

// Iterating a 20,000-peer collection, as a backend does each round, allocates nothing.
func TestPeersIterationAllocs(t *testing.T) {
	ls := make([]Lease, 20000)
	for i := range ls {
		ls[i] = v4Lease(i)
	}
	p := PeersOf(ls...)
	var n, bytes int
	allocs := testing.AllocsPerRun(5, func() {
		n, bytes = 0, 0
		for l := range p.All() {
			n++
			bytes += len(l.Attrs.BackendData) + l.Subnet.Bits()
		}
		for i := range p.Len() {
			l := p.At(i)
			bytes += len(l.Attrs.BackendType)
		}
	})
	if n != len(ls) || bytes == 0 {
		t.Fatalf("iterated %d peers", n)
	}
	if allocs != 0 {
		t.Errorf("a round over %d peers allocates %v times", len(ls), allocs)
	}
}

func BenchmarkPeersAll(b *testing.B) {
	ls := make([]Lease, 20000)
	for i := range ls {
		ls[i] = v4Lease(i)
	}
	p := PeersOf(ls...)
	b.ReportAllocs()
	for b.Loop() {
		n := 0
		for l := range p.All() {
			n += len(l.Attrs.BackendData)
		}
		if n == 0 {
			b.Fatal("no data")
		}
	}
}

// FuzzPeersRoundTrip builds a lease from fuzzed fields and checks that its compact form
// gives it back (SamePeer) and keeps its subnet key.
func FuzzPeersRoundTrip(f *testing.F) {
	f.Add(uint8(0x0f), []byte{10, 5, 85, 0}, uint8(24), []byte{198, 51, 100, 1}, []byte(nil), uint8(0), []byte(nil), "", "vxlan", `{"VNI":1}`, "")
	f.Add(uint8(0x02), []byte(nil), uint8(0), []byte(nil), []byte{0xfd, 0, 0, 5, 0, 0x85, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, uint8(64),
		[]byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2}, "", "vxlan", "", `{"VNI":1}`)
	f.Add(uint8(0x01), []byte{0, 0, 0, 0}, uint8(0), []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4}, []byte(nil), uint8(0),
		[]byte{0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, "eth0", "", "", "")
	f.Fuzz(func(t *testing.T, flags uint8, sn []byte, bits uint8, pub []byte, sn6 []byte, bits6 uint8, pub6 []byte, zone, typ, data, data6 string) {
		addrOf := func(b []byte) netip.Addr {
			a, _ := netip.AddrFromSlice(b) // zero unless 4 or 16 bytes
			return a
		}
		prefixOf := func(b []byte, bits uint8) netip.Prefix {
			a := addrOf(b)
			if !a.IsValid() {
				return netip.Prefix{}
			}
			return netip.PrefixFrom(a, int(bits)) // invalid (with an address) beyond the length
		}
		p6 := addrOf(pub6)
		if p6.Is6() {
			p6 = p6.WithZone(zone)
		}
		l := Lease{
			EnableIPv4: flags&1 != 0,
			EnableIPv6: flags&2 != 0,
			Subnet:     prefixOf(sn, bits),
			IPv6Subnet: prefixOf(sn6, bits6),
			Attrs: LeaseAttrs{PublicIP: addrOf(pub), PublicIPv6: p6, BackendType: typ,
				BackendData: json.RawMessage(data), BackendV6Data: json.RawMessage(data6)},
			Expiration: time.Unix(int64(flags), 0),
		}
		p := PeersOf(l, l)
		for i := range 2 {
			got := p.At(i)
			if !SamePeer(got, l) {
				t.Fatalf("round trip:\n got %#v\nwant %#v", got, l)
			}
			if got.Key() != l.Key() {
				t.Fatalf("key %q, want %q", got.Key(), l.Key())
			}
		}
	})
}

// PeerList's in-place edits agree with slices.Delete/slices.Insert on a plain slice, for
// random positions (both the grow path and the in-place path).
func TestPeerListEditsAgainstSlice(t *testing.T) {
	rnd := rand.New(rand.NewPCG(5, 6))
	for it := range 3000 {
		var pl PeerList
		var ref []Lease
		for i := range rnd.IntN(20) {
			ref = append(ref, v4Lease(i*10))
		}
		pl.Reset(ref)
		for step := range 10 {
			if rnd.IntN(2) == 0 && len(ref) > 0 {
				var at []int
				for i := range ref {
					if rnd.IntN(3) == 0 {
						at = append(at, i)
					}
				}
				pl.Delete(at)
				for j := len(at) - 1; j >= 0; j-- {
					ref = slices.Delete(ref, at[j], at[j]+1)
				}
			} else {
				k := rnd.IntN(6)
				at, ls := make([]int, k), make([]Lease, k)
				for j := range k {
					at[j] = rnd.IntN(len(ref) + 1)
					ls[j] = v4Lease(1000 + it*10 + j + step*100)
				}
				slices.Sort(at)
				pl.Insert(at, ls)
				for j := k - 1; j >= 0; j-- {
					ref = slices.Insert(ref, at[j], ls[j])
				}
			}
			if pl.Len() != len(ref) {
				t.Fatalf("iteration %d step %d: %d leases, want %d", it, step, pl.Len(), len(ref))
			}
			for i := range ref {
				if !SamePeer(pl.At(i), ref[i]) {
					t.Fatalf("iteration %d step %d: lease %d differs", it, step, i)
				}
			}
		}
	}
}

// Reset keeps its storage for a list of about the same size and lets go of it when the
// list shrinks to under half of a large storage.
func TestPeerListResetStorage(t *testing.T) {
	big := make([]Lease, 3000)
	for i := range big {
		big[i] = v4Lease(i)
	}
	var pl PeerList
	pl.Reset(big)
	pl.Reset(big[:2000])
	if cap(pl.list) != 3000 {
		t.Errorf("storage for 2,000 of 3,000 leases not reused: cap %d", cap(pl.list))
	}
	pl.Reset(big[:10])
	if cap(pl.list) != 10 || pl.Len() != 10 || !SamePeer(pl.At(9), big[9]) {
		t.Errorf("after shrinking to 10: cap %d, len %d", cap(pl.list), pl.Len())
	}
}

// compareKeyAt agrees with the keys of the materialised leases.
func TestPeerListCompareKeyAt(t *testing.T) {
	ls := []Lease{v4Lease(1), v4Lease(300), {Subnet: mustPrefix("0.0.0.0/0"), IPv6Subnet: mustPrefix("fd00::/64")},
		{IPv6Subnet: mustPrefix("fd00:1::/64")}, {Subnet: mustPrefix("10.0.1.0/24"), IPv6Subnet: mustPrefix("fd00:2::/64")},
		{Subnet: mustPrefix("10.0.1.0/25")}, {Subnet: mustPrefix("fd00::/64")}}
	var pl PeerList
	pl.Reset(ls)
	for i := range ls {
		for j := range ls {
			want := keyOf(&ls[i]).compare(keyOf(&ls[j]))
			if got := pl.compareKeyAt(i, keyOf(&ls[j])); got != want {
				t.Errorf("%s vs %s: %d, want %d", ls[i].Key(), ls[j].Key(), got, want)
			}
			want4 := keyOf(&ls[i]).sn.compare(keyOf(&ls[j]).sn)
			if got := pl.compareV4At(i, keyOf(&ls[j]).sn); got != want4 {
				t.Errorf("IPv4 part of %s vs %s: %d, want %d", ls[i].Key(), ls[j].Key(), got, want4)
			}
		}
	}
}
