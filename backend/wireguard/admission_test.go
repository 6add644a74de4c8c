package wireguard

import (
	"encoding/json"
	"net/netip"
	"testing"

	"github.com/flannel-go/flannel/subnet"
)

// Through the admission rule as main wires it: a malformed public key is rejected as
// bad_backend_data; of two leases with one key the older node's is the peer (seniority),
// the other's subnet routed to no one until the older is gone.
func TestAdmittedPeers(t *testing.T) {
	cfg := &subnet.Config{EnableIPv4: true, Network: netip.MustParsePrefix("10.5.0.0/16"), BackendType: BackendType}
	rule := subnet.RuleOptions{Kube: true,
		BackendData: map[string]func(json.RawMessage) error{BackendType: CheckBackendData},
		BackendKey:  map[string]func(*subnet.Lease) (string, bool){BackendType: PublicKey}}
	n := testNode(Separate, true, false)
	counted := map[subnet.Reason]int{}
	a := subnet.NewAdmitter(subnet.NewRule(cfg, rule), n.own, func(r subnet.Reason) { counted[r]++ })

	lease := func(sn, pub, data string) subnet.Lease {
		return subnet.Lease{EnableIPv4: true, Subnet: netip.MustParsePrefix(sn), Attrs: subnet.LeaseAttrs{
			PublicIP: netip.MustParseAddr(pub), BackendType: BackendType, BackendData: json.RawMessage(data)}}
	}
	good := string(dataOf(peerPub, 51820))
	first := subnet.Candidate{Lease: lease("10.5.2.0/24", "198.51.100.2", good), Origin: subnet.Origin{Name: "node-b", Seniority: 200, Version: 1}}
	older := subnet.Candidate{Lease: lease("10.5.3.0/24", "198.51.100.3", good), Origin: subnet.Origin{Name: "node-c", Seniority: 100, Version: 1}}
	bad := subnet.Candidate{Lease: lease("10.5.4.0/24", "198.51.100.4", `{"PublicKey":"AAAA","Port":51820}`), Origin: subnet.Origin{Name: "node-d", Seniority: 1, Version: 1}}
	a.Apply(subnet.WatchResult{Snapshot: []subnet.Candidate{first, older, bad}})

	if counted[subnet.BadBackendData] != 1 || counted[subnet.DuplicateKey] != 1 {
		t.Errorf("counted %v, want one bad_backend_data and one duplicate_key", counted)
	}
	devs, probs := n.desired(a.Peers())
	if len(probs) != 0 || len(devs) != 1 || len(devs[0].peers) != 1 {
		t.Fatalf("devices %+v, problems %v: want one peer", devs, probs)
	}
	if p := devs[0].peers[0]; p.key != peerPub || p.lease != "10.5.3.0-24" || p.endpoint != netip.MustParseAddrPort("198.51.100.3:51820") {
		t.Errorf("peer %+v: want the older node's lease 10.5.3.0-24", p)
	}

	a.Apply(subnet.WatchResult{Events: []subnet.Event{{Type: subnet.EventRemoved, Lease: older.Lease, Origin: older.Origin}}})
	devs, _ = n.desired(a.Peers())
	if len(devs[0].peers) != 1 || devs[0].peers[0].lease != "10.5.2.0-24" {
		t.Errorf("after the older lease went: peers %+v, want 10.5.2.0-24", devs[0].peers)
	}
}
