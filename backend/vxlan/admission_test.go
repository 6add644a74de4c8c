package vxlan

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/flannel-go/flannel/subnet"
)

// randomLeases makes n leases as broken or hostile writers might leave them: overlapping
// subnets of random lengths, repeated MACs and addresses, some unusable data.
func randomLeases(rnd *rand.Rand, n int) []subnet.Candidate {
	macs := []string{"0e:00:00:00:00:01", "0e:00:00:00:00:02", "0e:00:00:00:00:03", "01:00:5e:00:00:01"}
	pubs := []string{"192.0.2.2", "192.0.2.3", "192.0.2.1", "127.0.0.1", "198.51.100.7"}
	var out []subnet.Candidate
	for i := range n {
		sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(rnd.IntN(6)), byte(rnd.IntN(256))}), 22+rnd.IntN(5)).Masked()
		mac := fmt.Sprintf("0e:00:00:01:%02x:%02x", byte(i>>8), byte(i))
		if rnd.IntN(3) == 0 {
			mac = macs[rnd.IntN(len(macs))]
		}
		data := json.RawMessage(`{"VNI":1,"VtepMAC":"` + mac + `"}`)
		if rnd.IntN(10) == 0 {
			data = json.RawMessage(`{"VNI":1}`)
		}
		l := subnet.Lease{EnableIPv4: true, Subnet: sn, Attrs: subnet.LeaseAttrs{
			PublicIP: netip.MustParseAddr(pubs[rnd.IntN(len(pubs))]), BackendType: "vxlan", BackendData: data}}
		out = append(out, subnet.Candidate{Lease: l, Origin: subnet.Origin{Name: fmt.Sprintf("node-%d", i), Seniority: int64(rnd.IntN(n))}})
	}
	return out
}

// Random, partly hostile lease sets through the daemon's admission rule and the desired
// state: nothing of the own subnet is routed away, no route overlaps another, and every
// route, neighbour and FDB entry carries the values of the one lease it is for.
func TestAdmittedDesiredStateProperties(t *testing.T) {
	cfg := &subnet.Config{EnableIPv4: true, Network: netip.MustParsePrefix("10.244.0.0/16")}
	own := subnet.Lease{EnableIPv4: true, Subnet: netip.MustParsePrefix("10.244.1.0/24")}
	rule := subnet.RuleOptions{Kube: true, BackendData: map[string]func(json.RawMessage) error{"vxlan": CheckBackendData},
		LocalAddrs: func() ([]netip.Addr, error) { return []netip.Addr{netip.MustParseAddr("192.0.2.1")}, nil }}
	programmed := 0
	for seed := range 300 {
		rnd := rand.New(rand.NewPCG(uint64(seed), 14))
		a := subnet.NewAdmitter(subnet.NewRule(cfg, rule), &own, nil)
		a.Apply(subnet.WatchResult{Snapshot: randomLeases(rnd, 5+rnd.IntN(60))})
		peers := a.Peers()
		want := newFamState(false)
		desiredFamily(famParams{VNI: 1, Dev: 10, Ext: 2, Network: cfg.Network, Own: own.Subnet}, peers, want, nil)

		byRoute := map[netip.Prefix]subnet.Lease{}
		for l := range peers.All() {
			byRoute[l.Subnet.Masked()] = l
		}
		var routes []route
		for r := range want.allRoutes() {
			routes = append(routes, r)
			if r.Dst.Overlaps(own.Subnet) {
				t.Fatalf("seed %d: route %s overlaps the own subnet %s", seed, r.Dst, own.Subnet)
			}
			l, ok := byRoute[r.Dst]
			if !ok {
				t.Fatalf("seed %d: route %s belongs to no admitted lease", seed, r.Dst)
			}
			bd, err := parseBackendData(l.Attrs.BackendData)
			if err != nil {
				t.Fatalf("seed %d: route %s for a lease whose data does not parse: %v", seed, r.Dst, err)
			}
			if r.Gw != r.Dst.Addr() {
				t.Fatalf("seed %d: route %s via %s, not its lease's gateway", seed, r.Dst, r.Gw)
			}
			if mac, ok := want.getNeigh(r.Gw); !ok || mac != bd.MAC {
				t.Fatalf("seed %d: neighbour %s is %s, want its lease's %s", seed, r.Gw, mac, bd.MAC)
			}
			if dst, ok := want.getFDB(bd.MAC); !ok || dst != l.Attrs.PublicIP {
				t.Fatalf("seed %d: FDB %s -> %s, want its lease's %s", seed, bd.MAC, dst, l.Attrs.PublicIP)
			}
		}
		for i := range routes {
			for j := range i {
				if routes[i].Dst.Overlaps(routes[j].Dst) {
					t.Fatalf("seed %d: routes %s and %s overlap", seed, routes[i].Dst, routes[j].Dst)
				}
			}
		}
		for ip := range want.neighs() {
			if own.Subnet.Contains(ip) {
				t.Fatalf("seed %d: neighbour %s inside the own subnet", seed, ip)
			}
		}
		programmed += len(routes)
	}
	if programmed == 0 {
		t.Fatal("no lease was ever programmed: the generator tests nothing")
	}
}
