package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-go/flannel/e2e/lab"
)

var (
	dualStackConfig = lab.NetConfig(lab.DualStack, `{"Type":"vxlan"}`)
	ipv6OnlyConfig  = lab.NetConfig(lab.IPv6Only, `{"Type":"vxlan"}`)

	dualSubnetEnvRE = regexp.MustCompile(`\AFLANNEL_NETWORK=10\.5\.0\.0/16\nFLANNEL_SUBNET=10\.5\.\d{1,3}\.1/24\n` +
		`FLANNEL_IPV6_NETWORK=2001:db8:1000::/56\nFLANNEL_IPV6_SUBNET=2001:db8:1000:[0-9a-f]{1,2}::1/64\n` +
		`FLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n\z`)
	v6OnlySubnetEnvRE = regexp.MustCompile(`\AFLANNEL_IPV6_NETWORK=2001:db8:1000::/56\nFLANNEL_IPV6_SUBNET=2001:db8:1000:[0-9a-f]{1,2}::1/64\n` +
		`FLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n\z`)
)

func withIPv6(o *lab.Options) { o.IPv6 = true }

// Dual stack in etcd mode: every node leases an IPv4 and an IPv6 subnet under one key,
// runs flannel.1 over the IPv4 underlay and flannel-v6.1 over the IPv6 one, and every
// pod reaches every other node's pods over both families.
func TestVXLANDualStackPodsPing(t *testing.T) {
	l := newLab(t, "dual", 3, withIPv6)
	startAll(t, l, dualStackConfig)
	v4, v6 := infos(t, l, "flannel.1"), infos(t, l, "flannel-v6.1")
	for i := range v4 {
		if !dualSubnetEnvRE.MatchString(v4[i].envText) {
			t.Errorf("node %d: subnet.env is\n%s\nwant the IPv4 lines, the IPv6 lines inside %s, FLANNEL_MTU=1430, FLANNEL_IPMASQ=false",
				i+1, v4[i].envText, lab.PodNetworkIPv6)
		}
		checkVXLANDevice(t, l, v6[i], l.NodeIPv6(i+1))
	}
	distinctSubnets(t, v4)
	distinctSubnets(t, v6)
	checkLeases(t, l, func(n int) (string, string) {
		key := fmt.Sprintf("%s-24&%s-64", v4[n-1].subnet.Addr(), v6[n-1].subnet.Addr())
		val := fmt.Sprintf(`{"PublicIP":"%s","PublicIPv6":"%s","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"%s"},"BackendV6Data":{"VNI":1,"VtepMAC":"%s"}}`,
			l.NodeIP(n), l.NodeIPv6(n), v4[n-1].mac, v6[n-1].mac)
		return key, val
	})
	waitFullMesh(t, l, "flannel.1", v4)
	waitFullMesh(t, l, "flannel-v6.1", v6)
	pods := addPods(t, l)
	for _, p := range pods {
		if !p.IP.IsValid() || !p.IPv6.IsValid() {
			t.Fatalf("pod on node %d is not dual-stack: %+v", p.Node, p)
		}
	}
	pingMesh(t, l, pods)
	pingFullSize(t, l, pods[0], pods[1])
}

// IPv6-only in etcd mode, which upstream gets wrong: every key's IPv4 part is 0.0.0.0-0
// and every node advertises PublicIP 0.0.0.0, so a node must find its own lease by
// PublicIPv6, not take over another node's. Three nodes get three subnets, pods ping
// over IPv6, and a restarted node keeps its subnet.
func TestVXLANIPv6OnlyPodsPing(t *testing.T) {
	l := newLab(t, "six", 3, withIPv6)
	startAll(t, l, ipv6OnlyConfig)
	nodes := infos(t, l, "flannel-v6.1")
	for _, n := range nodes {
		if !v6OnlySubnetEnvRE.MatchString(n.envText) {
			t.Errorf("node %d: subnet.env is\n%s\nwant only the IPv6 lines inside %s, FLANNEL_MTU=1430, FLANNEL_IPMASQ=false",
				n.index, n.envText, lab.PodNetworkIPv6)
		}
		checkVXLANDevice(t, l, n, l.NodeIPv6(n.index))
		if _, err := lab.GetLink(context.Background(), l.NodeNS(n.index), "flannel.1"); !errors.Is(err, lab.ErrNoLink) {
			t.Errorf("node %d: flannel.1 exists in IPv6-only mode (%v)", n.index, err)
		}
	}
	distinctSubnets(t, nodes)
	// Upstream's key and value shapes: no IPv4 subnet, PublicIP 0.0.0.0, no BackendData.
	lease := func(n int) (string, string) {
		key := fmt.Sprintf("0.0.0.0-0&%s-64", nodes[n-1].subnet.Addr())
		val := fmt.Sprintf(`{"PublicIP":"0.0.0.0","PublicIPv6":"%s","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"%s"}}`,
			l.NodeIPv6(n), nodes[n-1].mac)
		return key, val
	}
	checkLeases(t, l, lease)
	waitFullMesh(t, l, "flannel-v6.1", nodes)
	pods := addPods(t, l)
	for _, p := range pods {
		if p.IP.IsValid() || !p.IPv6.IsValid() {
			t.Fatalf("pod on node %d is not IPv6-only: %+v", p.Node, p)
		}
	}
	pingMesh(t, l, pods)
	pingFullSize(t, l, pods[0], pods[1])

	// A restart finds the node's own lease by its IPv6 address: same subnet, same key.
	before := nodes[1]
	if err := l.StopFlanneld(2); err != nil {
		t.Fatal(err)
	}
	if err := l.StartFlanneld(2); err != nil {
		t.Fatal(err)
	}
	if _, err := l.WaitSubnetEnv(2, startTimeout); err != nil {
		t.Fatal(err)
	}
	if after := info(t, l, 2, "flannel-v6.1"); after.envText != before.envText || after.mac != before.mac {
		t.Errorf("node 2 changed across a restart: subnet.env\n%s->\n%s, MAC %s -> %s", before.envText, after.envText, before.mac, after.mac)
	}
	if want := fmt.Sprintf("for current IP (%s), reusing", l.NodeIPv6(2)); !strings.Contains(l.LogTail(2, 200), want) {
		t.Errorf("node 2 did not log %q after the restart:\n%s", want, l.LogTail(2, 40))
	}
	checkLeases(t, l, lease)
	pingMesh(t, l, pods)
}

// pingFullSize sends, from pod from to every address of pod to, one echo request that
// fills the pod MTU (FLANNEL_MTU) and may not be fragmented: it must arrive, so the
// subnet file promises pods no more than the vxlan device of each family carries.
func pingFullSize(t *testing.T, l *lab.Lab, from, to lab.Pod) {
	t.Helper()
	for _, dst := range to.Addrs() {
		ipHeader := 20
		if dst.Is6() {
			ipHeader = 40
		}
		size := strconv.Itoa(from.MTU - ipHeader - 8) // minus the IP and ICMP headers
		var err error
		for attempt := 0; attempt < 3; attempt++ {
			if _, err = l.Exec(from.NS, "ping", "-n", "-c", "1", "-W", "2", "-M", "do", "-s", size, dst.String()); err == nil {
				break
			}
		}
		if err != nil {
			t.Errorf("pod n%d -> %s: a %d-byte packet (FLANNEL_MTU) does not get through: %v", from.Node, dst, from.MTU, err)
		}
	}
}

// checkVXLANDevice checks n's IPv6 vxlan device: VNI 1 over eth0 from the node's IPv6
// underlay address, port 8472, no learning, up with the subnet's network address /128.
func checkVXLANDevice(t *testing.T, l *lab.Lab, n nodeInfo, local netip.Addr) {
	t.Helper()
	link := waitLink(t, l, n.index, "flannel-v6.1")
	vx := link.VXLAN
	if vx == nil {
		t.Fatalf("node %d: flannel-v6.1 is a %q, not vxlan", n.index, link.Kind)
	}
	if vx.ID != 1 || vx.Local != local.String() || vx.Port != 8472 || vx.Learning || vx.Link != "eth0" {
		t.Errorf("node %d: flannel-v6.1 vxlan attributes %+v, want id 1 local %s dev eth0 dstport 8472 nolearning", n.index, *vx, local)
	}
	waitFor(t, convergeTimeout, fmt.Sprintf("node %d: flannel-v6.1 up with %s/128", n.index, n.subnet.Addr()), func() (bool, string) {
		k, err := lab.GetLink(context.Background(), l.NodeNS(n.index), "flannel-v6.1")
		if err != nil {
			return false, err.Error()
		}
		addrs := k.IPv6Addrs()
		return k.IsUp() && len(addrs) == 1 && addrs[0] == n.subnet.Addr().String()+"/128", fmt.Sprintf("up=%v addrs=%v", k.IsUp(), addrs)
	})
}

// distinctSubnets fails unless every node has its own subnet inside the lab's pod
// network of that family.
func distinctSubnets(t *testing.T, nodes []nodeInfo) {
	t.Helper()
	seen := map[netip.Prefix]int{}
	for _, n := range nodes {
		network, bits := lab.PodNetwork, 24
		if n.subnet.Addr().Is6() {
			network, bits = lab.PodNetworkIPv6, 64
		}
		if n.subnet.Bits() != bits || !network.Contains(n.subnet.Addr()) || n.subnet.Addr() == network.Addr() {
			t.Errorf("node %d: subnet %s is not a /%d inside %s after its first subnet", n.index, n.subnet, bits, network)
		}
		if j, dup := seen[n.subnet]; dup {
			t.Errorf("nodes %d and %d share subnet %s", j, n.index, n.subnet)
		}
		seen[n.subnet] = n.index
	}
}

// checkLeases fails unless etcd holds exactly one lease key per node, each with the key
// and value want returns for that node and a 24 h etcd lease.
func checkLeases(t *testing.T, l *lab.Lab, want func(node int) (key, value string)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prefix := l.EtcdPrefix() + "/subnets/"
	resp, err := l.Etcd().Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, kv := range resp.Kvs {
		got[strings.TrimPrefix(string(kv.Key), prefix)] = string(kv.Value)
		if kv.Lease == 0 {
			t.Errorf("lease %s has no etcd lease (no TTL)", kv.Key)
		}
	}
	if len(got) != l.Nodes() {
		t.Errorf("%d lease keys, want %d: %v", len(got), l.Nodes(), got)
	}
	for i := 1; i <= l.Nodes(); i++ {
		key, value := want(i)
		v, ok := got[key]
		if !ok {
			t.Errorf("node %d: no lease key %s%s (have %v)", i, prefix, key, got)
			continue
		}
		if !json.Valid([]byte(v)) || v != value {
			t.Errorf("node %d: lease %s is\n%s\nwant\n%s", i, key, v, value)
		}
	}
}
