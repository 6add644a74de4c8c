package vxlan

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"runtime"
	"testing"

	"github.com/flannel-go/flannel/subnet"
)

// manyPeers makes n peer leases, /24s in 10.0.0.0/8, public addresses reused.
func manyPeers(n int) subnet.Peers {
	out := make([]subnet.Lease, n)
	for i := range n {
		k := i + 2
		sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(k >> 8), byte(k), 0}), 24)
		pub := netip.AddrFrom4([4]byte{198, 51, 100, byte(1 + i%250)})
		if i%2 == 1 {
			pub = netip.AddrFrom4([4]byte{192, 0, 2, byte(2 + i%250)})
		}
		m := fmt.Sprintf("0e:%02x:%02x:%02x:00:01", byte(k>>16), byte(k>>8), byte(k))
		out[i] = subnet.Lease{EnableIPv4: true, Subnet: sn, Attrs: subnet.LeaseAttrs{
			PublicIP: pub, BackendType: "vxlan", BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"` + m + `"}`)}}
	}
	return subnet.PeersOf(out...)
}

// BenchmarkDesiredDiff20k: the pure part of a no-change round at 20,000 peers.
func BenchmarkDesiredDiff20k(b *testing.B) {
	peers := manyPeers(20000)
	p := famParams{VNI: 1, Dev: 10, Ext: 2, Network: netip.MustParsePrefix("10.0.0.0/8"), Own: netip.MustParsePrefix("10.0.1.0/24")}
	want, act := newV4State(), newV4State()
	desiredFamily(p, peers, act, nil)
	var o ops
	b.ReportAllocs()
	for b.Loop() {
		desiredFamily(p, peers, want, nil)
		diff(want, act, &o)
		if !o.empty() {
			b.Fatal("unexpected ops")
		}
	}
}

// BenchmarkReconcileNamespace: a no-change Reconcile, dumps included, at 5,000 peers.
func BenchmarkReconcileNamespace(b *testing.B) {
	l := newLab(b)
	ctx := context.Background()
	cfg := testConfigTB(b, `{"Type":"vxlan"}`, "10.0.0.0/8")
	be, ch := l.backend(cfg)
	if _, err := be.Prepare(ctx, nil); err != nil {
		b.Fatal(err)
	}
	own := &subnet.Lease{EnableIPv4: true, Subnet: netip.MustParsePrefix("10.0.1.0/24")}
	if _, err := be.Start(ctx, own); err != nil {
		b.Fatal(err)
	}
	peers := manyPeers(20000)
	if err := be.Reconcile(ctx, peers); err != nil {
		b.Fatal(err)
	}
	if c := be.LastCounts(); c.RoutesAdded != 20000 || c.NeighAdded != 20000 || c.FDBAdded != 20000 {
		b.Fatalf("first round counts %+v", c)
	}
	before := ch.writes.Load()
	b.ReportAllocs()
	for b.Loop() {
		if err := be.Reconcile(ctx, peers); err != nil {
			b.Fatal(err)
		}
	}
	if n := ch.writes.Load() - before; n != 0 {
		b.Fatalf("%d writes in unchanged rounds", n)
	}
}

// BenchmarkStateHeap20k reports as "live-B" the live heap of one IPv4 family's state at
// 20,000 peers in sync.
func BenchmarkStateHeap20k(b *testing.B) {
	peers := manyPeers(20000)
	p := famParams{VNI: 1, Dev: 10, Ext: 2, Network: netip.MustParsePrefix("10.0.0.0/8"), Own: netip.MustParsePrefix("10.0.1.0/24"), Nexthops: true}
	for b.Loop() {
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		want, act := newFamState(false), newFamState(false)
		desiredFamily(p, peers, act, nil)
		act.sizeNexthops(peers.Len()) // as a round reading the kernel
		id := uint32(1)
		for r := range act.allRoutes() {
			act.addNexthop(r.Gw, id, true)
			id++
		}
		desiredFamily(p, peers, want, nil)
		var o ops
		diff(want, act, &o)
		if !o.empty() {
			b.Fatal("unexpected ops")
		}
		runtime.GC()
		runtime.ReadMemStats(&m1)
		b.ReportMetric(float64(m1.HeapAlloc)-float64(m0.HeapAlloc), "live-B")
		runtime.KeepAlive(want)
		runtime.KeepAlive(act)
		runtime.KeepAlive(&o)
	}
}
