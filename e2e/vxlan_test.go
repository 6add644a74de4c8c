package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-go/flannel/e2e/lab"
)

var subnetEnvRE = regexp.MustCompile(`\AFLANNEL_NETWORK=10\.5\.0\.0/16\nFLANNEL_SUBNET=(10\.5\.\d{1,3}\.1/24)\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n\z`)

// Distinct subnets inside Network; subnet.env exactly as upstream,
// mode 0644. Also the vxlan device as describes it.
func TestSubnetEnvAndDistinctSubnets(t *testing.T) {
	l := newLab(t, "env", 3)
	startAll(t, l, vxlanConfig)

	seen := map[netip.Prefix]int{}
	for i := 1; i <= 3; i++ {
		st, err := os.Stat(l.SubnetEnvPath(i))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o644 || !st.Mode().IsRegular() {
			t.Errorf("node %d: subnet.env mode %v, want -rw-r--r--", i, st.Mode())
		}
		n := info(t, l, i, "flannel.1")
		if !subnetEnvRE.MatchString(n.envText) {
			t.Errorf("node %d: subnet.env is\n%q\nwant the 4 lines FLANNEL_NETWORK=10.5.0.0/16, FLANNEL_SUBNET=10.5.X.1/24, FLANNEL_MTU=1450, FLANNEL_IPMASQ=false", i, n.envText)
		}
		if n.subnet.Bits() != 24 || !labNetwork.Contains(n.subnet.Addr()) {
			t.Errorf("node %d: subnet %s not a /24 inside %s", i, n.subnet, labNetwork)
		}
		if n.subnet.Addr() == labNetwork.Addr() {
			t.Errorf("node %d: got the network's first subnet %s, which upstream never hands out", i, n.subnet)
		}
		if j, dup := seen[n.subnet]; dup {
			t.Errorf("nodes %d and %d share subnet %s", j, i, n.subnet)
		}
		seen[n.subnet] = i

		// device attributes: VNI 1, local = node IP, port 8472, nolearning, MTU 1450,
		// the lease network address /32 as its only IPv4 address, up.
		link := waitLink(t, l, i, "flannel.1")
		vx := link.VXLAN
		if vx == nil {
			t.Fatalf("node %d: flannel.1 is a %q, not vxlan", i, link.Kind)
		}
		if vx.ID != 1 || vx.Local != l.NodeIP(i).String() || vx.Port != 8472 || vx.Learning || vx.Link != "eth0" {
			t.Errorf("node %d: flannel.1 vxlan attributes %+v, want id 1 local %s dev eth0 dstport 8472 nolearning", i, *vx, l.NodeIP(i))
		}
		if link.MTU != 1450 {
			t.Errorf("node %d: flannel.1 MTU %d, want 1450", i, link.MTU)
		}
		waitFor(t, convergeTimeout, fmt.Sprintf("node %d: flannel.1 up with %s/32", i, n.subnet.Addr()), func() (bool, string) {
			k, err := lab.GetLink(context.Background(), l.NodeNS(i), "flannel.1")
			if err != nil {
				return false, err.Error()
			}
			want := n.subnet.Addr().String() + "/32"
			addrs := k.IPv4Addrs()
			return k.IsUp() && len(addrs) == 1 && addrs[0] == want, fmt.Sprintf("up=%v addrs=%v", k.IsUp(), addrs)
		})
	}
	for i := 1; i <= 3; i++ {
		if !l.FlanneldRunning(i) {
			t.Errorf("node %d: flanneld is not running", i)
		}
	}
}

// Every pod reaches every pod on the other nodes; the triplets behind it
// are exactly upstream's.
func TestPodsPingAcrossNodes(t *testing.T) {
	l := newLab(t, "ping", 3)
	startAll(t, l, vxlanConfig)
	nodes := infos(t, l, "flannel.1")
	waitFullMesh(t, l, "flannel.1", nodes)
	pods := addPods(t, l)
	// A second pod on node 1 proves the bridge path on a node as well.
	p2, err := l.AddPod(1, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Ping(p2.NS, pods[0].IP); err != nil {
		t.Errorf("pods on the same node: %v", err)
	}
	pingMesh(t, l, append(pods, p2))
}

// A node whose lease is deleted exits with status 1, and the other nodes
// remove its ARP/FDB/route entries.
func TestLeaseDeletedNodeExitsAndPeersForgetIt(t *testing.T) {
	l := newLab(t, "revoke", 3)
	startAll(t, l, vxlanConfig)
	nodes := infos(t, l, "flannel.1")
	waitFullMesh(t, l, "flannel.1", nodes)

	victim := nodes[2]
	key := l.EtcdPrefix() + "/subnets/" + strings.ReplaceAll(victim.subnet.String(), "/", "-")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := l.Etcd().Delete(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Deleted != 1 {
		t.Fatalf("lease key %s not found in etcd (deleted %d)", key, resp.Deleted)
	}
	code, err := l.WaitExit(3, convergeTimeout)
	if err != nil {
		t.Fatalf("node 3 kept running after its lease was deleted: %v", err)
	}
	if code != 1 {
		t.Errorf("node 3 exited with status %d after its lease was deleted, want 1", code)
	}
	for _, i := range []int{1, 2} {
		waitNoPeer(t, l, i, "flannel.1", peerOf(l, victim))
		if !l.FlanneldRunning(i) {
			t.Errorf("node %d stopped although its own lease is intact", i)
		}
	}
	// The survivors still reach each other.
	waitPeers(t, l, 1, "flannel.1", peerOf(l, nodes[1]))
	waitPeers(t, l, 2, "flannel.1", peerOf(l, nodes[0]))
}

// SIGTERM exits 0 and leaves the data plane; a restarted node keeps its
// subnet, and its device keeps ifindex and MAC.
func TestRestartKeepsSubnetAndDevice(t *testing.T) {
	l := newLab(t, "restart", 3)
	startAll(t, l, vxlanConfig)
	nodes := infos(t, l, "flannel.1")
	waitFullMesh(t, l, "flannel.1", nodes)
	pods := addPods(t, l)
	pingMesh(t, l, pods)
	before := nodes[1]
	leaseBefore := leaseValue(t, l, before.subnet)

	if err := l.StopFlanneld(2); err != nil {
		t.Fatal(err) // includes "did not exit 0"
	}
	// The data plane stays while the daemon is down (zero-downtime restarts).
	after := info(t, l, 2, "flannel.1")
	if after.ifindex != before.ifindex || after.mac != before.mac {
		t.Errorf("flannel.1 changed by SIGTERM: ifindex %d->%d mac %s->%s", before.ifindex, after.ifindex, before.mac, after.mac)
	}
	waitPeers(t, l, 2, "flannel.1", peerOf(l, nodes[0]), peerOf(l, nodes[2]))
	if err := l.Ping(pods[0].NS, pods[1].IP); err != nil {
		t.Errorf("node 2's pod unreachable while its daemon is stopped: %v", err)
	}

	if err := l.StartFlanneld(2); err != nil {
		t.Fatal(err)
	}
	if _, err := l.WaitSubnetEnv(2, startTimeout); err != nil {
		t.Fatal(err)
	}
	restarted := info(t, l, 2, "flannel.1")
	if restarted.envText != before.envText {
		t.Errorf("subnet.env changed across restart:\n%q\n->\n%q", before.envText, restarted.envText)
	}
	if restarted.subnet != before.subnet {
		t.Errorf("subnet changed across restart: %s -> %s", before.subnet, restarted.subnet)
	}
	if restarted.ifindex != before.ifindex || restarted.mac != before.mac {
		t.Errorf("flannel.1 not kept across restart: ifindex %d->%d mac %s->%s",
			before.ifindex, restarted.ifindex, before.mac, restarted.mac)
	}
	if got := leaseValue(t, l, before.subnet); got != leaseBefore {
		t.Errorf("lease value changed across restart:\n%s\n->\n%s", leaseBefore, got)
	}
	waitFullMesh(t, l, "flannel.1", []nodeInfo{nodes[0], restarted, nodes[2]})
	pingMesh(t, l, pods)
}

// A new VNI applies after restarting all daemons, without manual cleanup.
func TestVNIChangeReplacesDevice(t *testing.T) {
	l := newLab(t, "vni", 3)
	startAll(t, l, vxlanConfig)
	waitFullMesh(t, l, "flannel.1", infos(t, l, "flannel.1"))

	for i := 1; i <= 3; i++ {
		if err := l.StopFlanneld(i); err != nil {
			t.Fatal(err)
		}
	}
	startAll(t, l, `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":2}}`)
	nodes := infos(t, l, "flannel.2")
	for _, n := range nodes {
		link := waitLink(t, l, n.index, "flannel.2")
		if link.VXLAN == nil || link.VXLAN.ID != 2 {
			t.Errorf("node %d: flannel.2 is not a VNI 2 vxlan device: %+v", n.index, link.VXLAN)
		}
		waitFor(t, convergeTimeout, fmt.Sprintf("node %d: flannel.1 removed", n.index), func() (bool, string) {
			_, err := lab.GetLink(context.Background(), l.NodeNS(n.index), "flannel.1")
			if err == nil {
				return false, "flannel.1 still exists"
			}
			return errors.Is(err, lab.ErrNoLink), err.Error()
		})
		if v := leaseValue(t, l, n.subnet); !strings.Contains(v, `"VNI":2`) {
			t.Errorf("node %d: lease not updated to VNI 2: %s", n.index, v)
		}
	}
	waitFullMesh(t, l, "flannel.2", nodes)
	pingMesh(t, l, addPods(t, l))
}

var leaseKeyRE = regexp.MustCompile(`^/fg-e2e/network/subnets/(10\.5\.\d{1,3}\.0)-24$`)

// Lease keys and values are upstream's, with a 24 h etcd lease.
// A non-default --etcd-prefix is used, which also proves the flag.
func TestLeaseFormatInEtcd(t *testing.T) {
	l := newLab(t, "lease", 3, func(o *lab.Options) { o.EtcdPrefix = "/fg-e2e/network" })
	startAll(t, l, vxlanConfig)
	nodes := infos(t, l, "flannel.1")
	bySubnet := map[netip.Prefix]nodeInfo{}
	for _, n := range nodes {
		bySubnet[n.subnet] = n
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cli := l.Etcd()
	if r, err := cli.Get(ctx, lab.DefaultEtcdPrefix, clientv3.WithPrefix()); err != nil || len(r.Kvs) != 0 {
		t.Errorf("keys written outside --etcd-prefix: %v %v", r, err)
	}
	resp, err := cli.Get(ctx, "/fg-e2e/network/subnets/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 3 {
		t.Fatalf("%d lease keys, want 3: %v", len(resp.Kvs), resp.Kvs)
	}
	for _, kv := range resp.Kvs {
		m := leaseKeyRE.FindStringSubmatch(string(kv.Key))
		if m == nil {
			t.Errorf("lease key %q does not look like <prefix>/subnets/10.5.X.0-24", kv.Key)
			continue
		}
		sn := netip.PrefixFrom(netip.MustParseAddr(m[1]), 24)
		n, ok := bySubnet[sn]
		if !ok {
			t.Errorf("lease %s belongs to no node", sn)
			continue
		}
		want := fmt.Sprintf(`{"PublicIP":"%s","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"%s"}}`,
			l.NodeIP(n.index), n.mac)
		if string(kv.Value) != want {
			t.Errorf("lease %s value\n%s\nwant\n%s", kv.Key, kv.Value, want)
		}
		if kv.Lease == 0 {
			t.Errorf("lease %s has no etcd lease (no TTL)", kv.Key)
			continue
		}
		ttl, err := cli.TimeToLive(ctx, clientv3.LeaseID(kv.Lease))
		if err != nil {
			t.Fatal(err)
		}
		if ttl.GrantedTTL != 86400 || ttl.TTL <= 86400-600 || ttl.TTL > 86400 {
			t.Errorf("lease %s: granted TTL %d, remaining %d; want 86400 and about that", kv.Key, ttl.GrantedTTL, ttl.TTL)
		}
	}
}

// State left in the kernel before start-up converges: a stray peer
// triplet goes, a missing one appears.
func TestPreseededStateConverges(t *testing.T) {
	l := newLab(t, "preseed", 3)
	if err := l.PutConfig(context.Background(), vxlanConfig); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{2, 3} {
		if err := l.StartFlanneld(i); err != nil {
			t.Fatal(err)
		}
	}
	for _, i := range []int{2, 3} {
		if _, err := l.WaitSubnetEnv(i, startTimeout); err != nil {
			t.Fatal(err)
		}
	}
	n2, n3 := info(t, l, 2, "flannel.1"), info(t, l, 3, "flannel.1")
	waitPeers(t, l, 2, "flannel.1", peerOf(l, n3))

	// Node 1: flannel.1 as flanneld would make it, with node 2's triplet, a stray one for
	// a subnet no lease has, and nothing for node 3.
	stray := peer{subnet: netip.MustParsePrefix("10.5.250.0/24"), mac: "02:5e:00:00:fa:01", public: netip.MustParseAddr("192.0.2.99")}
	ns := l.NodeNS(1)
	must := func(args ...string) {
		t.Helper()
		if _, err := l.Exec(ns, args...); err != nil {
			t.Fatal(err)
		}
	}
	must("ip", "link", "add", "flannel.1", "type", "vxlan", "id", "1", "local", l.NodeIP(1).String(), "dev", "eth0",
		"dstport", "8472", "nolearning")
	must("ip", "link", "set", "flannel.1", "mtu", "1450", "up")
	for _, p := range []peer{peerOf(l, n2), stray} {
		gw := p.subnet.Addr().String()
		must("ip", "neigh", "replace", gw, "lladdr", p.mac, "dev", "flannel.1", "nud", "permanent")
		must("bridge", "fdb", "replace", p.mac, "dev", "flannel.1", "dst", p.public.String(), "self", "permanent")
		must("ip", "route", "replace", p.subnet.String(), "via", gw, "dev", "flannel.1", "onlink")
	}
	pre, err := lab.GetLink(context.Background(), ns, "flannel.1")
	if err != nil {
		t.Fatal(err)
	}

	if err := l.StartFlanneld(1); err != nil {
		t.Fatal(err)
	}
	if _, err := l.WaitSubnetEnv(1, startTimeout); err != nil {
		t.Fatal(err)
	}
	n1 := info(t, l, 1, "flannel.1")
	t.Logf("node 1: pre-made flannel.1 ifindex %d mac %s; after start ifindex %d mac %s", pre.Ifindex, pre.Address, n1.ifindex, n1.mac)
	if n1.subnet == stray.subnet {
		t.Skipf("node 1 was given %s, the subnet chosen as stray; cannot judge", stray.subnet)
	}
	waitPeers(t, l, 1, "flannel.1", peerOf(l, n2), peerOf(l, n3))
	waitNoPeer(t, l, 1, "flannel.1", stray)
	// And the others learn node 1.
	waitPeers(t, l, 2, "flannel.1", peerOf(l, n1))
	waitPeers(t, l, 3, "flannel.1", peerOf(l, n1))
	pods := addPods(t, l)
	pingMesh(t, l, pods)
}

// leaseValue reads the lease value for subnet under the lab's prefix.
func leaseValue(t *testing.T, l *lab.Lab, sn netip.Prefix) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	key := l.EtcdPrefix() + "/subnets/" + strings.ReplaceAll(sn.String(), "/", "-")
	resp, err := l.Etcd().Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 {
		t.Fatalf("no lease key %s in etcd", key)
	}
	return string(resp.Kvs[0].Value)
}
