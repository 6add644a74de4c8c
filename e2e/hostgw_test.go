package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flannel-go/flannel/e2e/lab"
	"github.com/flannel-go/flannel/subnet"
)

const hostgwConfig = `{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}`

// envSubnet reads node i's FLANNEL_SUBNET (masked).
func envSubnet(t *testing.T, l *lab.Lab, i int) netip.Prefix {
	t.Helper()
	env, err := l.SubnetEnv(i)
	if err != nil {
		t.Fatal(err)
	}
	p, err := netip.ParsePrefix(env["FLANNEL_SUBNET"])
	if err != nil {
		t.Fatalf("node %d: FLANNEL_SUBNET %q: %v", i, env["FLANNEL_SUBNET"], err)
	}
	return p.Masked()
}

// hasRoute reports whether node i has <dst> via <gw> dev <dev> (gw may be empty).
func hasRoute(l *lab.Lab, i int, dst netip.Prefix, gw, dev string) (bool, string) {
	routes, err := lab.Routes(context.Background(), l.NodeNS(i))
	if err != nil {
		return false, err.Error()
	}
	var seen []string
	for _, r := range routes {
		if r.Dst == dst.String() {
			seen = append(seen, fmt.Sprintf("%+v", r))
			if r.Gateway == gw && r.Dev == dev {
				return true, ""
			}
		}
	}
	return false, "routes to it: " + strings.Join(seen, "; ")
}

// subnet.env MTU = iface MTU, lease attributes as upstream, one route per peer via
// its public address on eth0, pods ping pods, and the route goes with the lease.
func TestHostGWPodsPingAcrossNodes(t *testing.T) {
	l := newLab(t, "hgping", 3)
	startAll(t, l, hostgwConfig)
	subnets := map[int]netip.Prefix{}
	for i := 1; i <= 3; i++ {
		subnets[i] = envSubnet(t, l, i)
		env, _ := l.SubnetEnv(i)
		if env["FLANNEL_MTU"] != "1500" {
			t.Errorf("node %d: FLANNEL_MTU %q, want 1500", i, env["FLANNEL_MTU"])
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := 1; i <= 3; i++ {
		key := l.EtcdPrefix() + "/subnets/" + strings.ReplaceAll(subnets[i].String(), "/", "-")
		resp, err := l.Etcd().Get(ctx, key)
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("lease %s: %v (%d keys)", key, err, len(resp.Kvs))
		}
		want := fmt.Sprintf(`{"PublicIP":"%s","PublicIPv6":null,"BackendType":"host-gw"}`, l.NodeIP(i))
		if got := string(resp.Kvs[0].Value); got != want {
			t.Errorf("node %d lease value %s, want %s", i, got, want)
		}
	}
	for i := 1; i <= 3; i++ {
		for j := 1; j <= 3; j++ {
			if i == j {
				continue
			}
			waitFor(t, convergeTimeout, fmt.Sprintf("node %d: route %s via %s dev eth0", i, subnets[j], l.NodeIP(j)), func() (bool, string) {
				return hasRoute(l, i, subnets[j], l.NodeIP(j).String(), "eth0")
			})
		}
	}
	pingMesh(t, l, addPods(t, l))

	// The lease of node 3 goes: node 3 exits, the others drop its route.
	key := l.EtcdPrefix() + "/subnets/" + strings.ReplaceAll(subnets[3].String(), "/", "-")
	if _, err := l.Etcd().Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if _, err := l.WaitExit(3, convergeTimeout); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		waitFor(t, convergeTimeout, fmt.Sprintf("node %d: route to %s gone", i, subnets[3]), func() (bool, string) {
			routes, err := lab.Routes(context.Background(), l.NodeNS(i))
			if err != nil {
				return false, err.Error()
			}
			return !slices.ContainsFunc(routes, func(r lab.Route) bool { return r.Dst == subnets[3].String() }), "still there"
		})
	}
}

// a peer on another L2 segment cannot be routed by host-gw; the error names it
// in the log, once, and the nodes on the same segment still work.
func TestHostGWPeerOnOtherSegmentLogged(t *testing.T) {
	l := newLab(t, "hgseg", 3, func(o *lab.Options) { o.SecondSegment = []int{3} })
	startAll(t, l, hostgwConfig)
	far := subnet.MakeSubnetKey(envSubnet(t, l, 3), netip.Prefix{})
	for i := 1; i <= 2; i++ {
		waitFor(t, convergeTimeout, fmt.Sprintf("node %d logs the unreachable peer %s", i, far), func() (bool, string) {
			b, err := os.ReadFile(l.LogPath(i))
			if err != nil {
				return false, err.Error()
			}
			for _, line := range strings.Split(string(b), "\n") {
				if strings.Contains(line, "Kernel refused peer") && strings.Contains(line, `peer="`+far+`"`) &&
					strings.Contains(line, l.NodeIP(3).String()) && strings.Contains(line, "not on-link") {
					return true, ""
				}
			}
			return false, "no such line yet"
		})
	}
	pods := addPods(t, l)
	pingMesh(t, l, pods[:2])
	// More reconcile rounds happen (lease events, pods); the error stays logged once.
	time.Sleep(2 * time.Second)
	for i := 1; i <= 2; i++ {
		b, _ := os.ReadFile(l.LogPath(i))
		if n := strings.Count(string(b), `"Kernel refused peer; skipping it, the other peers are programmed" peer="`+far+`"`); n != 1 {
			t.Errorf("node %d: the unreachable peer was logged %d times, want once", i, n)
		}
	}
}
