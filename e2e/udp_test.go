package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flannel-go/flannel/e2e/lab"
)

const (
	udpConfig = `{"Network":"10.5.0.0/16","Backend":{"Type":"udp"}}`
	// noBackendConfig selects udp implicitly, as upstream.
	noBackendConfig = `{"Network":"10.5.0.0/16"}`
)

// flannel0 (lease address /32, MTU 1500 - 28, route for the network), leases
// without BackendType, pods ping pods across 3 nodes; a config without Backend is udp.
func TestUDPPodsPingAcrossNodes(t *testing.T) {
	l := newLab(t, "udpping", 3)
	startAll(t, l, noBackendConfig)
	subnets := map[int]netip.Prefix{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 1; i <= 3; i++ {
		subnets[i] = envSubnet(t, l, i)
		env, _ := l.SubnetEnv(i)
		if env["FLANNEL_MTU"] != "1472" {
			t.Errorf("node %d: FLANNEL_MTU %q, want 1472", i, env["FLANNEL_MTU"])
		}
		key := l.EtcdPrefix() + "/subnets/" + strings.ReplaceAll(subnets[i].String(), "/", "-")
		resp, err := l.Etcd().Get(ctx, key)
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("lease %s: %v", key, err)
		}
		want := fmt.Sprintf(`{"PublicIP":"%s","PublicIPv6":null}`, l.NodeIP(i))
		if got := string(resp.Kvs[0].Value); got != want {
			t.Errorf("node %d lease value %s, want %s (udp leases carry no BackendType)", i, got, want)
		}
		waitFor(t, convergeTimeout, fmt.Sprintf("node %d: flannel0 up with %s/32, MTU 1472, route 10.5.0.0/16", i, subnets[i].Addr()), func() (bool, string) {
			k, err := lab.GetLink(context.Background(), l.NodeNS(i), "flannel0")
			if err != nil {
				return false, err.Error()
			}
			addrs := k.IPv4Addrs()
			okRoute, why := hasRoute(l, i, labNetwork, "", "flannel0")
			return k.IsUp() && k.MTU == 1472 && slices.Equal(addrs, []string{subnets[i].Addr().String() + "/32"}) && okRoute,
				fmt.Sprintf("up=%v mtu=%d addrs=%v route=%v %s", k.IsUp(), k.MTU, addrs, okRoute, why)
		})
	}
	if !strings.Contains(lab.TailFile(l.LogPath(1), 200), "no Backend: using the udp backend") {
		t.Error("node 1 did not log that the missing Backend selects udp")
	}
	pods := addPods(t, l)
	pingMesh(t, l, pods)

	// An address inside the network that no lease covers: ICMP net unreachable from
	// the sending node's flannel0 address.
	var free netip.Addr
	for b := 250; b > 0; b-- {
		sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 5, byte(b), 0}), 24)
		if !slices.Contains([]netip.Prefix{subnets[1], subnets[2], subnets[3]}, sn) {
			free = netip.AddrFrom4([4]byte{10, 5, byte(b), 7})
			break
		}
	}
	out, err := l.Exec(pods[0].NS, "ping", "-n", "-c", "1", "-W", "2", free.String())
	if err == nil {
		t.Fatalf("ping %s (no lease) succeeded:\n%s", free, out)
	}
	want := fmt.Sprintf("From %s icmp_seq=1 Destination Net Unreachable", subnets[1].Addr())
	if !strings.Contains(out, want) {
		t.Errorf("ping %s (no lease) printed\n%s\n(%v)\nwant a line %q", free, out, err, want)
	}

	// flannel0 vanishes with flanneld.
	if err := l.StopFlanneld(3); err != nil {
		t.Fatal(err)
	}
	if _, err := lab.GetLink(context.Background(), l.NodeNS(3), "flannel0"); err == nil {
		t.Error("node 3: flannel0 still exists after flanneld stopped")
	}
}
