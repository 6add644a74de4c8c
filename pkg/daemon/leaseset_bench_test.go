package daemon

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"runtime"
	"testing"

	"github.com/flannel-go/flannel/subnet"
)

// benchSnapshot makes n vxlan leases as the etcd manager delivers them (each with its
// own backend data).
func benchSnapshot(n int) []subnet.Lease {
	out := make([]subnet.Lease, n)
	for i := range n {
		k := i + 2
		out[i] = subnet.Lease{EnableIPv4: true,
			Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(k >> 8), byte(k), 0}), 24),
			Attrs: subnet.LeaseAttrs{PublicIP: netip.AddrFrom4([4]byte{198, 51, 100, byte(1 + i%250)}), BackendType: "vxlan",
				BackendData: json.RawMessage(fmt.Sprintf(`{"VNI":1,"VtepMAC":"0e:%02x:%02x:%02x:00:01"}`, byte(k>>16), byte(k>>8), byte(k)))}}
	}
	return out
}

// BenchmarkLeaseSetHeap20k reports the live heap the lease set of 20,000 IPv4 vxlan
// peers keeps once the snapshot it was built from is gone ("live-B"), and the
// allocations of one iteration over it as a backend does per round ("iter-allocs").
func BenchmarkLeaseSetHeap20k(b *testing.B) {
	for b.Loop() {
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		s := newLeaseSet("10.0.1.0-24")
		s.apply(subnet.WatchResult{Snapshot: benchSnapshot(20000)})
		runtime.GC()
		runtime.ReadMemStats(&m1)
		b.ReportMetric(float64(m1.HeapAlloc)-float64(m0.HeapAlloc), "live-B")
		n := 0
		allocs := testing.AllocsPerRun(1, func() {
			for l := range s.peers().All() {
				n += len(l.Attrs.BackendData)
			}
		})
		b.ReportMetric(allocs, "iter-allocs")
		runtime.KeepAlive(s)
	}
}
