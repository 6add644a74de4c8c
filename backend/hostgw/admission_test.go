package hostgw

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/flannel-go/flannel/subnet"
)

// Random, partly hostile lease sets through the daemon's admission rule and the desired
// routes: no route overlaps the own subnet or another, each goes via its lease's address.
func TestAdmittedDesiredRoutesProperties(t *testing.T) {
	cfg := &subnet.Config{EnableIPv4: true, Network: netip.MustParsePrefix("10.244.0.0/16")}
	own := subnet.Lease{EnableIPv4: true, Subnet: netip.MustParsePrefix("10.244.1.0/24")}
	rule := subnet.RuleOptions{Kube: true, BackendData: map[string]func(json.RawMessage) error{BackendType: CheckBackendData},
		LocalAddrs: func() ([]netip.Addr, error) { return []netip.Addr{netip.MustParseAddr("192.0.2.1")}, nil }}
	pubs := []string{"192.0.2.2", "192.0.2.3", "192.0.2.1", "127.0.0.1", "198.51.100.7"}
	programmed := 0
	for seed := range 300 {
		rnd := rand.New(rand.NewPCG(uint64(seed), 15))
		var cs []subnet.Candidate
		for i := range 5 + rnd.IntN(60) {
			l := subnet.Lease{EnableIPv4: true,
				Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(rnd.IntN(6)), byte(rnd.IntN(256))}), 22+rnd.IntN(5)).Masked(),
				Attrs:  subnet.LeaseAttrs{PublicIP: netip.MustParseAddr(pubs[rnd.IntN(len(pubs))]), BackendType: BackendType}}
			if rnd.IntN(10) == 0 {
				l.Attrs.BackendData = json.RawMessage(`{"x":1}`)
			}
			cs = append(cs, subnet.Candidate{Lease: l, Origin: subnet.Origin{Name: fmt.Sprintf("node-%d", i), Seniority: int64(rnd.IntN(50))}})
		}
		a := subnet.NewAdmitter(subnet.NewRule(cfg, rule), &own, nil)
		a.Apply(subnet.WatchResult{Snapshot: cs})
		byDst := map[netip.Prefix]subnet.Lease{}
		for l := range a.Peers().All() {
			byDst[l.Subnet.Masked()] = l
		}
		out := map[netip.Prefix]route{}
		desired(params{Ext: 2, Network: cfg.Network, Own: own.Subnet}, a.Peers(), out, nil)
		var dsts []netip.Prefix
		for dst, r := range out {
			if dst.Overlaps(own.Subnet) {
				t.Fatalf("seed %d: route %s overlaps the own subnet", seed, dst)
			}
			l, ok := byDst[dst]
			if !ok || r.Gw != l.Attrs.PublicIP || r.Dst != dst {
				t.Fatalf("seed %d: route %+v is not its lease's (%+v)", seed, r, l)
			}
			for _, o := range dsts {
				if o.Overlaps(dst) {
					t.Fatalf("seed %d: routes %s and %s overlap", seed, o, dst)
				}
			}
			dsts = append(dsts, dst)
		}
		programmed += len(out)
	}
	if programmed == 0 {
		t.Fatal("no lease was ever programmed: the generator tests nothing")
	}
}
