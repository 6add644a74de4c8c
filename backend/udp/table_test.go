package udp

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/flannel-go/flannel/subnet"
)

func udpLease(sn, pub, typ string) subnet.Lease {
	l := subnet.Lease{EnableIPv4: true, Subnet: netip.MustParsePrefix(sn), Attrs: subnet.LeaseAttrs{BackendType: typ}}
	if pub != "" {
		l.Attrs.PublicIP = netip.MustParseAddr(pub)
	}
	return l
}

func addrKey(s string) uint32 { return addr4(netip.MustParseAddr(s)) }

func TestBuildTableAndLookup(t *testing.T) {
	network, own := netip.MustParsePrefix("10.5.0.0/16"), netip.MustParsePrefix("10.5.1.0/24")
	leases := []subnet.Lease{
		udpLease("10.5.1.0/24", "192.0.2.1", ""), // own
		udpLease("10.5.2.0/24", "192.0.2.2", ""),
		udpLease("10.5.3.0/24", "192.0.2.3", ""),
		udpLease("10.5.4.0/24", "192.0.2.4", "vxlan"),
		udpLease("10.6.0.0/24", "192.0.2.5", ""),
		udpLease("10.5.5.0/24", "", ""),
		udpLease("10.5.2.0/24", "192.0.2.9", ""),   // leased twice
		udpLease("10.5.3.128/25", "192.0.2.7", ""), // a longer prefix inside another peer's subnet
	}
	tbl, probs := buildTable(subnet.PeersOf(leases...), network, own, 8285)
	if tbl.len() != 3 {
		t.Errorf("%d peers, want 3", tbl.len())
	}
	wantProbs := []string{`"vxlan" is not udp`, "outside the network", "no IPv4 public address", "leased twice"}
	if len(probs) != len(wantProbs) {
		t.Fatalf("problems %+v, want %q", probs, wantProbs)
	}
	for i, p := range probs {
		if !strings.Contains(p.Reason, wantProbs[i]) {
			t.Errorf("problem %d %+v, want %q", i, p, wantProbs[i])
		}
	}
	for _, tc := range []struct{ dst, via string }{
		{"10.5.2.0", "192.0.2.2:8285"},
		{"10.5.2.255", "192.0.2.2:8285"},
		{"10.5.3.1", "192.0.2.3:8285"},
		{"10.5.3.200", "192.0.2.7:8285"},
		{"10.5.1.7", ""}, // own subnet: not a peer
		{"10.5.4.1", ""},
		{"10.5.9.1", ""},
		{"192.0.2.2", ""},
	} {
		p := tbl.lookup(addrKey(tc.dst))
		got := ""
		if p != nil {
			got = p.Dst.String()
			if p.addr.String() != got {
				t.Errorf("%s: prebuilt address %v differs from %v", tc.dst, p.addr, got)
			}
		}
		if got != tc.via {
			t.Errorf("lookup %s: %q, want %q", tc.dst, got, tc.via)
		}
	}
	var nilTable *table
	if nilTable.lookup(addrKey("10.5.2.1")) != nil || nilTable.len() != 0 {
		t.Error("nil table must be empty")
	}
	if _, ok := nilTable.senders(addrKey("192.0.2.2")); ok {
		t.Error("nil table must admit no sender")
	}
}

// The receive side admits exactly the peers the send side uses: a datagram from a
// peer's PublicIP may carry sources from that peer's subnets (several when leases share
// the address), nothing else.
func TestSenders(t *testing.T) {
	network, own := netip.MustParsePrefix("10.5.0.0/16"), netip.MustParsePrefix("10.5.1.0/24")
	tbl, _ := buildTable(subnet.PeersOf(
		udpLease("10.5.1.0/24", "192.0.2.1", ""), // own
		udpLease("10.5.2.0/24", "192.0.2.2", ""),
		udpLease("10.5.3.0/24", "192.0.2.3", ""),
		udpLease("10.5.6.0/24", "192.0.2.3", ""), // a second lease of the same node
		udpLease("10.5.4.0/24", "192.0.2.4", "vxlan"),
		udpLease("10.5.2.0/24", "192.0.2.9", ""), // leased twice: the first lease wins
		udpLease("10.6.0.0/24", "192.0.2.5", ""), // outside the network
	), network, own, 8285)
	for _, tc := range []struct {
		from, src string
		want      bool
	}{
		{"192.0.2.2", "10.5.2.7", true},
		{"192.0.2.2", "10.5.2.0", true},
		{"192.0.2.2", "10.5.3.7", false},
		{"192.0.2.2", "10.5.1.7", false},
		{"192.0.2.3", "10.5.3.7", true},
		{"192.0.2.3", "10.5.6.255", true},
		{"192.0.2.3", "10.5.2.7", false},
		{"192.0.2.1", "10.5.1.7", false}, // our own address is no peer
		{"192.0.2.4", "10.5.4.7", false},
		{"192.0.2.9", "10.5.2.7", false},
		{"192.0.2.5", "10.6.0.7", false},
		{"192.0.2.200", "10.5.2.7", false},
	} {
		nets, known := tbl.senders(addrKey(tc.from))
		got := false
		for _, n := range nets {
			got = got || n.contains(addrKey(tc.src))
		}
		if got != tc.want {
			t.Errorf("from %s (known %v), source %s: admitted %v, want %v", tc.from, known, tc.src, got, tc.want)
		}
	}
}

// BenchmarkLookup shows the lookup does not depend on the number of peers.
func BenchmarkLookup(b *testing.B) {
	for _, n := range []int{10, 10000} {
		var leases []subnet.Lease
		for i := range n {
			a := netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0})
			leases = append(leases, subnet.Lease{Subnet: netip.PrefixFrom(a, 24), Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.1")}})
		}
		tbl, _ := buildTable(subnet.PeersOf(leases...), netip.MustParsePrefix("10.0.0.0/8"), netip.Prefix{}, 8285)
		b.Run("peers="+strconv.Itoa(n), func(b *testing.B) {
			k := addrKey("10.0.5.9")
			for b.Loop() {
				if tbl.lookup(k) == nil {
					b.Fatal("miss")
				}
			}
		})
	}
}
