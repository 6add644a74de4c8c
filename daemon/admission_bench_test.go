package daemon

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"runtime"
	"testing"

	"github.com/flannel-go/flannel/backend/hostgw"
	"github.com/flannel-go/flannel/backend/vxlan"
	"github.com/flannel-go/flannel/subnet"
)

// benchCandidates makes n IPv4 vxlan leases of 10.0.0.0/8 as the etcd manager delivers
// them and, with overlaps, one lease in a hundred more overlapping one of them (a /25).
func benchCandidates(n int, overlaps bool) []subnet.Candidate {
	out := make([]subnet.Candidate, 0, n+n/100)
	for i := range n {
		k := i + 2
		out = append(out, subnet.Candidate{Lease: subnet.Lease{EnableIPv4: true,
			Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(k >> 8), byte(k), 0}), 24),
			Attrs: subnet.LeaseAttrs{PublicIP: netip.AddrFrom4([4]byte{198, 51, 100, byte(1 + i%250)}), BackendType: "vxlan",
				BackendData: json.RawMessage(fmt.Sprintf(`{"VNI":1,"VtepMAC":"0e:%02x:%02x:%02x:00:01"}`, byte(k>>16), byte(k>>8), byte(k)))}},
			Origin: subnet.Origin{Seniority: int64(k), Version: int64(k)}})
		if overlaps && i%100 == 50 {
			c := out[len(out)-1]
			c.Lease.Subnet = netip.PrefixFrom(c.Lease.Subnet.Addr(), 25)
			c.Origin = subnet.Origin{Name: fmt.Sprintf("evil-%d", i), Seniority: int64(n + k), Version: int64(n + k)}
			out = append(out, c)
		}
	}
	return out
}

// benchAdmitter is the daemon's admission stage as main wires it.
func benchAdmitter(kube bool) *subnet.Admitter {
	cfg := &subnet.Config{EnableIPv4: true, Network: netip.MustParsePrefix("10.0.0.0/8"), SubnetLen: 24}
	own := subnet.Lease{EnableIPv4: true, Subnet: netip.MustParsePrefix("10.0.1.0/24")}
	rule := subnet.NewRule(cfg, subnet.RuleOptions{Kube: kube, BackendData: map[string]func(json.RawMessage) error{
		"vxlan": vxlan.CheckBackendData, hostgw.BackendType: hostgw.CheckBackendData},
		LocalAddrs: func() ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("10.0.1.0"), netip.MustParseAddr("127.0.0.1")}, nil
		}})
	return subnet.NewAdmitter(rule, &own, nil)
}

// BenchmarkAdmissionSnapshot20k applies a snapshot of 20,000 leases (plus 200 overlapping
// ones with overlaps) to a new Admitter.
func BenchmarkAdmissionSnapshot20k(b *testing.B) {
	for _, tc := range []struct {
		name     string
		kube     bool
		overlaps bool
	}{{"etcd", false, false}, {"etcd/overlaps", false, true}, {"kube", true, false}, {"kube/overlaps", true, true}} {
		b.Run(tc.name, func(b *testing.B) {
			src := benchCandidates(20000, tc.overlaps)
			snap := make([]subnet.Candidate, len(src))
			for b.Loop() {
				b.StopTimer()
				copy(snap, src)
				a := benchAdmitter(tc.kube)
				b.StartTimer()
				a.Apply(subnet.WatchResult{Snapshot: snap})
				if n := a.Peers().Len(); n != 20000 {
					b.Fatalf("%d admitted", n)
				}
			}
		})
	}
}

// BenchmarkAdmissionChurn20k folds the churn of the control-plane benchmark into an
// Admitter of 20,000 peers: 4,000 leases gone in one batch, 4,000 new ones in the next.
func BenchmarkAdmissionChurn20k(b *testing.B) {
	for _, tc := range []struct {
		name     string
		kube     bool
		overlaps bool
	}{{"etcd", false, false}, {"kube/overlaps", true, true}} {
		b.Run(tc.name, func(b *testing.B) {
			all := benchCandidates(24000, tc.overlaps)
			var gone, fresh subnet.WatchResult
			var base []subnet.Candidate
			for i, c := range all {
				switch {
				case i < 20000+20000/100 && i%5 == 0 && c.Origin.Name == "":
					gone.Events = append(gone.Events, subnet.Event{Type: subnet.EventRemoved, Lease: subnet.Lease{Subnet: c.Lease.Subnet}})
					base = append(base, c)
				case i < 20000+20000/100:
					base = append(base, c)
				default:
					fresh.Events = append(fresh.Events, subnet.Event{Type: subnet.EventAdded, Lease: c.Lease, Origin: c.Origin})
				}
			}
			snap := make([]subnet.Candidate, len(base))
			for b.Loop() {
				b.StopTimer()
				copy(snap, base)
				a := benchAdmitter(tc.kube)
				a.Apply(subnet.WatchResult{Snapshot: snap})
				b.StartTimer()
				a.Apply(gone)
				a.Apply(fresh)
			}
		})
	}
}

// BenchmarkAdmissionHeap20k reports the live heap of an Admitter of 20,000 peers without
// its snapshot ("live-B") and the allocations of one iteration over it ("iter-allocs").
func BenchmarkAdmissionHeap20k(b *testing.B) {
	for b.Loop() {
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		a := benchAdmitter(false)
		a.Apply(subnet.WatchResult{Snapshot: benchCandidates(20000, false)})
		runtime.GC()
		runtime.ReadMemStats(&m1)
		b.ReportMetric(float64(m1.HeapAlloc)-float64(m0.HeapAlloc), "live-B")
		n := 0
		allocs := testing.AllocsPerRun(1, func() {
			for l := range a.Peers().All() {
				n += len(l.Attrs.BackendData)
			}
		})
		b.ReportMetric(allocs, "iter-allocs")
		runtime.KeepAlive(a)
	}
}
