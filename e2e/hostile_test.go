package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/flannel-go/flannel/e2e/benchkit"
	"github.com/flannel-go/flannel/e2e/lab"
)

// rejectReasons are the label values of flannel_leases_rejected_total.
var rejectReasons = []string{"non_canonical_key", "outside_network", "wrong_length", "overlaps_own", "overlaps_peer",
	"bad_public_ip", "local_public_ip", "too_large", "bad_backend_data", "bad_json", "duplicate_key"}

// rejected reads node i's flannel_leases_rejected_total by reason.
func rejected(l *lab.Lab, i int) (map[string]float64, error) {
	m, err := scrape(l, i)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, r := range rejectReasons {
		v, ok := m[fmt.Sprintf(`flannel_leases_rejected_total{reason=%q}`, r)]
		if !ok {
			return nil, fmt.Errorf("flannel_leases_rejected_total{reason=%q} not exposed", r)
		}
		out[r] = v
	}
	return out, nil
}

// waitRejected waits until node i has counted exactly want[reason] more rejections of
// each reason than base (the reasons want does not name: none more).
func waitRejected(t *testing.T, l *lab.Lab, i int, base map[string]float64, want map[string]int) {
	t.Helper()
	waitFor(t, convergeTimeout, fmt.Sprintf("node %d: rejections %v", i, want), func() (bool, string) {
		got, err := rejected(l, i)
		if err != nil {
			return false, err.Error()
		}
		var diff []string
		for _, r := range rejectReasons {
			if d := int(got[r] - base[r]); d != want[r] {
				diff = append(diff, fmt.Sprintf("%s %d (want %d)", r, d, want[r]))
			}
		}
		return len(diff) == 0, strings.Join(diff, ", ")
	})
}

// hwmKB is node i's flanneld peak resident memory (VmHWM).
func hwmKB(t *testing.T, l *lab.Lab, i int) int {
	t.Helper()
	kb, err := benchkit.StatusKB(l.FlanneldPID(i), "VmHWM")
	if err != nil {
		t.Fatal(err)
	}
	return kb
}

// watchReady polls every node's /readyz until stop is closed and returns, per node, the
// answers that were not 200 (at most a few).
func watchReady(l *lab.Lab, stop <-chan struct{}) func() map[int][]string {
	var mu sync.Mutex
	bad := map[int][]string{}
	var wg sync.WaitGroup
	for i := 1; i <= l.Nodes(); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				code, body, err := readyz(l, i, "")
				if err != nil || code != 200 {
					mu.Lock()
					if len(bad[i]) < 5 {
						bad[i] = append(bad[i], fmt.Sprintf("%d %q %v", code, body, err))
					}
					mu.Unlock()
				}
				select {
				case <-stop:
					return
				case <-time.After(250 * time.Millisecond):
				}
			}
		}()
	}
	return func() map[int][]string {
		wg.Wait()
		return bad
	}
}

// pingStreams pings from every pod to every address of the pods on the other nodes,
// every 200 ms, until the returned function stops them and reports the echoes lost per
// pair.
func pingStreams(t *testing.T, pods []lab.Pod) func() []string {
	t.Helper()
	type stream struct {
		name string
		s    *lab.PingStream
	}
	var ss []stream
	for _, from := range pods {
		for _, to := range pods {
			if from.Node == to.Node {
				continue
			}
			for _, dst := range to.Addrs() {
				s, err := lab.StartPingStream(from.NS, dst, 200*time.Millisecond)
				if err != nil {
					t.Fatal(err)
				}
				ss = append(ss, stream{fmt.Sprintf("pod n%d -> pod n%d %s", from.Node, to.Node, dst), s})
			}
		}
	}
	return func() []string {
		var lost []string
		for _, s := range ss {
			sent, n, err := s.s.Stop()
			switch {
			case err != nil:
				lost = append(lost, fmt.Sprintf("%s: %v", s.name, err))
			case n > 0 || sent == 0:
				lost = append(lost, fmt.Sprintf("%s: %d of %d echoes lost", s.name, n, sent))
			default:
				t.Logf("%s: %d echoes, none lost", s.name, sent)
			}
		}
		return lost
	}
}

// freeThirdOctets returns n third octets of 10.5.x.0/24 subnets, from 120 up, that no
// node of ns holds.
func freeThirdOctets(ns []nodeInfo, n int) []int {
	var out []int
	for x := 120; len(out) < n && x < 256; x++ {
		if !slices.ContainsFunc(ns, func(ni nodeInfo) bool { return int(ni.subnet.Addr().As4()[2]) == x }) {
			out = append(out, x)
		}
	}
	return out
}

func vxlanValue(pub, mac string) string {
	return fmt.Sprintf(`{"PublicIP":%q,"PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":%q}}`, pub, mac)
}

// A hostile datastore, etcd mode: while the pods of three nodes ping each other, a
// process that is not a node writes bad leases of every class into etcd. Every pod pair
// keeps pinging, every node stays ready, each node counts each bad lease with its reason
// (the classes that depend on the node — its own subnet, its own address — as that node
// sees them), and no daemon's peak RSS grows by 5 MB, though 30 of the values are 1 MB.
// Then the older of two overlapping leases goes and the younger is admitted in its
// place; and a daemon restarted among the bad leases lists them within the same bound.
func TestHostileDatastoreEtcd(t *testing.T) {
	l := newLab(t, "hostile", 3)
	startAll(t, l, vxlanConfig, fmt.Sprintf("--healthz-port=%d", healthzPort))
	ns := infos(t, l, "flannel.1")
	waitFullMesh(t, l, "flannel.1", ns)
	pods := addPods(t, l)
	pingMesh(t, l, pods)
	base := map[int]map[string]float64{}
	hwm := map[int]int{}
	for i := 1; i <= 3; i++ {
		waitReadyz(t, l, i, "", 200, "flanneld is ready")
		r, err := rejected(l, i)
		if err != nil {
			t.Fatal(err)
		}
		base[i], hwm[i] = r, hwmKB(t, l, i)
	}
	t.Logf("VmHWM before the series: %v kB", hwm)

	stopReady := make(chan struct{})
	readyResult := watchReady(l, stopReady)
	stopPings := pingStreams(t, pods)

	third := func(i int) int { return int(ns[i-1].subnet.Addr().As4()[2]) }
	free := freeThirdOctets(ns, 40)
	key := func(name string) string { return l.EtcdPrefix() + "/subnets/" + name }
	sn := func(x int) string { return fmt.Sprintf("10.5.%d.0-24", x) }
	older, younger := sn(free[0])+"&fd00:a::-64", sn(free[0])+"&fd00:b::-64"
	macB := "0e:00:00:00:0b:0b"
	pad := strings.Repeat("x", 1<<20)
	type write struct{ key, value string }
	series := []write{
		// overlaps node 1 (a key with node 1's IPv4 subnet and an IPv6 part: canonical)
		{key(sn(third(1)) + "&fd00:bad::-64"), vxlanValue("192.0.2.201", "0e:00:00:00:0a:01")},
		// a more specific part of node 2's subnet
		{key(fmt.Sprintf("10.5.%d.128-25", third(2))), vxlanValue("192.0.2.202", "0e:00:00:00:0a:02")},
		// two peers overlapping each other: the older one is admitted
		{key(older), vxlanValue("192.0.2.203", "0e:00:00:00:0a:0a")},
		{key(younger), vxlanValue("192.0.2.204", macB)},
		// aliases of node 3's key
		{key(fmt.Sprintf("10.5.%d.7-24", third(3))), vxlanValue("192.0.2.205", "0e:00:00:00:0a:05")},
		{key("x" + sn(third(3))), vxlanValue("192.0.2.205", "0e:00:00:00:0a:05")},
		// public addresses no peer can have, and node 2's own
		{key(sn(free[1])), vxlanValue("127.0.0.1", "0e:00:00:00:0a:06")},
		{key(sn(free[2])), vxlanValue("255.255.255.255", "0e:00:00:00:0a:07")},
		{key(sn(free[3])), vxlanValue(l.NodeIP(2).String(), "0e:00:00:00:0a:08")},
		// garbage, wrong backend data, outside the network
		{key(sn(free[4])), `{"PublicIP":"192.0.2.209","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":`},
		{key(sn(free[5])), vxlanValue("192.0.2.210", "01:00:5e:00:00:01")},
		{key(sn(free[6])), `{"PublicIP":"192.0.2.211","PublicIPv6":null,"BackendType":"host-gw","BackendData":{"VNI":1}}`},
		{key("10.6.1.0-24"), vxlanValue("192.0.2.212", "0e:00:00:00:0a:0c")},
		{key("garbage"), "not a lease at all"},
	}
	for i := range 30 { // 30 values of 1 MB
		series = append(series, write{key(sn(free[10+i])), fmt.Sprintf(`{"PublicIP":"192.0.2.220","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:00:00:00:0c:%02x","pad":%q}}`, i, pad)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, w := range series {
		if _, err := l.Etcd().Put(ctx, w.key, w.value); err != nil {
			t.Fatalf("put %s: %v", w.key, err)
		}
		time.Sleep(50 * time.Millisecond) // a series, not one burst: the older lease of the pair is older
	}
	common := map[string]int{"wrong_length": 1, "non_canonical_key": 2, "bad_public_ip": 2, "too_large": 30,
		"bad_json": 1, "bad_backend_data": 2, "outside_network": 1}
	for i := 1; i <= 3; i++ {
		waitRejected(t, l, i, base[i], rejectionsAt(common, i))
	}
	pingMesh(t, l, pods)
	time.Sleep(2 * time.Second) // pings and probes for a while with every bad lease in place
	for _, lost := range stopPings() {
		t.Errorf("during the series: %s", lost)
	}
	close(stopReady)
	for i, bad := range readyResult() {
		t.Errorf("node %d was not ready during the series: %v", i, bad)
	}
	for i := 1; i <= 3; i++ {
		after := hwmKB(t, l, i)
		t.Logf("node %d: VmHWM %d kB before the series, %d kB after (%+d kB)", i, hwm[i], after, after-hwm[i])
		if after-hwm[i] >= 5<<10 {
			t.Errorf("node %d: peak RSS grew by %d kB during the series, want less than 5 MB", i, after-hwm[i])
		}
	}

	// The older of the overlapping pair goes: the younger is admitted on every node.
	if _, err := l.Etcd().Delete(ctx, key(older)); err != nil {
		t.Fatal(err)
	}
	loser := peer{subnet: netip.MustParsePrefix(fmt.Sprintf("10.5.%d.0/24", free[0])), mac: macB, public: netip.MustParseAddr("192.0.2.204")}
	for i := 1; i <= 3; i++ {
		waitPeers(t, l, i, "flannel.1", loser)
	}

	// Node 3 restarted among the bad leases: its listing (in pages bounded by the
	// receive limit) keeps its peak RSS within 5 MB of the first start's, and it counts
	// the same rejections again.
	first := hwm[3]
	if err := l.StopFlanneld(3); err != nil {
		t.Fatal(err)
	}
	if err := l.StartFlanneld(3, fmt.Sprintf("--healthz-port=%d", healthzPort)); err != nil {
		t.Fatal(err)
	}
	waitReadyz(t, l, 3, "", 200, "flanneld is ready")
	zero := map[string]float64{}
	want := map[string]int{"overlaps_peer": 1} // the younger of the pair is admitted now
	for r, n := range common {
		want[r] = n
	}
	waitRejected(t, l, 3, zero, want)
	after := hwmKB(t, l, 3)
	t.Logf("node 3: VmHWM %d kB at its first start, %d kB after a start among the bad leases", first, after)
	if after-first >= 5<<10 {
		t.Errorf("node 3: peak RSS %d kB after a start among the bad leases, %d kB more than its first start's", after, after-first)
	}
	pingMesh(t, l, pods)
}

// A hostile datastore, Kubernetes mode, against the real kube-apiserver: while the pods
// of three nodes ping each other, an administrator's client (no node) creates Node
// objects with bad pod CIDRs or flannel annotations of every class. Every pod pair keeps
// pinging, every node stays ready, each node counts each bad Node with its reason, and no
// daemon's peak RSS grows by 5 MB, though 30 of the Nodes carry 200 kB of backend data.
// Then the older of two overlapping Nodes goes and the younger is admitted.
func TestHostileDatastoreKube(t *testing.T) {
	k := newKubeLab(t, "hostilekube", 3)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for i := 1; i <= 3; i++ {
		k.registerNode(t, i, fmt.Sprintf("10.244.%d.0/24", i))
	}
	for i := 1; i <= 3; i++ {
		k.start(t, i, fmt.Sprintf("--healthz-port=%d", healthzPort))
	}
	for i := 1; i <= 3; i++ {
		if _, err := k.WaitSubnetEnv(i, startTimeout); err != nil {
			t.Fatal(err)
		}
	}
	ns := infos(t, k.Lab, "flannel.1")
	waitFullMesh(t, k.Lab, "flannel.1", ns)
	pods := addPods(t, k.Lab)
	pingMesh(t, k.Lab, pods)
	base := map[int]map[string]float64{}
	hwm := map[int]int{}
	for i := 1; i <= 3; i++ {
		waitReadyz(t, k.Lab, i, "", 200, "flanneld is ready")
		r, err := rejected(k.Lab, i)
		if err != nil {
			t.Fatal(err)
		}
		base[i], hwm[i] = r, hwmKB(t, k.Lab, i)
	}
	t.Logf("VmHWM before the series: %v kB", hwm)
	// Creation times have a resolution of one second: the lab's nodes are older than
	// anything created from here on.
	time.Sleep(1100 * time.Millisecond)

	stopReady := make(chan struct{})
	readyResult := watchReady(k.Lab, stopReady)
	stopPings := pingStreams(t, pods)

	const p = "flannel.alpha.coreos.com/"
	ann := func(pub, data string) map[string]string {
		return map[string]string{p + "kube-subnet-manager": "true", p + "backend-type": "vxlan", p + "public-ip": pub, p + "backend-data": data}
	}
	vx := func(mac string) string { return fmt.Sprintf(`{"VNI":1,"VtepMAC":%q}`, mac) }
	type hostile struct {
		name, cidr string
		ann        map[string]string
	}
	series := []hostile{
		{"hostile-own", "10.244.1.128/25", ann("192.0.2.201", vx("0e:00:00:00:0a:01"))},         // inside node 1's
		{"hostile-a", "10.244.50.0/24", ann("192.0.2.202", vx("0e:00:00:00:0a:02"))},            // older of a pair
		{"hostile-b", "10.244.50.0/25", ann("192.0.2.203", vx("0e:00:00:00:0b:0b"))},            // inside hostile-a's
		{"hostile-outside", "10.99.0.0/24", ann("192.0.2.204", vx("0e:00:00:00:0a:04"))},        // outside the network
		{"hostile-nocidr", "", ann("192.0.2.205", vx("0e:00:00:00:0a:05"))},                     // no pod CIDR
		{"hostile-loopback", "10.244.51.0/24", ann("127.0.0.1", vx("0e:00:00:00:0a:06"))},       // unusable address
		{"hostile-noip", "10.244.52.0/24", ann("not-an-address", vx("0e:00:00:00:0a:07"))},      // no address
		{"hostile-local", "10.244.53.0/24", ann(k.NodeIP(2).String(), vx("0e:00:00:00:0a:08"))}, // node 2's address
		{"hostile-garbage", "10.244.54.0/24", ann("192.0.2.209", `{"VNI":1,"VtepMAC":`)},        // not JSON
		{"hostile-multicast", "10.244.55.0/24", ann("192.0.2.210", vx("01:00:5e:00:00:01"))},    // wrong backend data
		{"plain-node", "10.244.56.0/24", map[string]string{"example.com/unrelated": "x"}},       // no flannel node: ignored
	}
	pad := strings.Repeat("x", 200<<10)
	for i := range 30 {
		series = append(series, hostile{fmt.Sprintf("hostile-large-%02d", i), fmt.Sprintf("10.244.%d.0/24", 100+i),
			ann("192.0.2.220", fmt.Sprintf(`{"VNI":1,"VtepMAC":"0e:00:00:00:0c:%02x","pad":%q}`, i, pad))})
	}
	for _, h := range series {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: h.name, Annotations: h.ann}}
		if h.cidr != "" {
			n.Spec.PodCIDR, n.Spec.PodCIDRs = h.cidr, []string{h.cidr}
		}
		if _, err := k.cs.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create node %s: %v", h.name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	common := map[string]int{"outside_network": 2, "bad_public_ip": 2, "bad_json": 1, "bad_backend_data": 1, "too_large": 30}
	for i := 1; i <= 3; i++ {
		waitRejected(t, k.Lab, i, base[i], rejectionsAt(common, i))
	}
	pingMesh(t, k.Lab, pods)
	time.Sleep(2 * time.Second)
	for _, lost := range stopPings() {
		t.Errorf("during the series: %s", lost)
	}
	close(stopReady)
	for i, bad := range readyResult() {
		t.Errorf("node %d was not ready during the series: %v", i, bad)
	}
	for i := 1; i <= 3; i++ {
		after := hwmKB(t, k.Lab, i)
		t.Logf("node %d: VmHWM %d kB before the series, %d kB after (%+d kB)", i, hwm[i], after, after-hwm[i])
		if after-hwm[i] >= 5<<10 {
			t.Errorf("node %d: peak RSS grew by %d kB during the series, want less than 5 MB", i, after-hwm[i])
		}
	}

	// The older of the overlapping pair goes: the younger is admitted on every node.
	if err := k.cs.CoreV1().Nodes().Delete(ctx, "hostile-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	loser := peer{subnet: netip.MustParsePrefix("10.244.50.0/25"), mac: "0e:00:00:00:0b:0b", public: netip.MustParseAddr("192.0.2.203")}
	for i := 1; i <= 3; i++ {
		waitPeers(t, k.Lab, i, "flannel.1", loser)
	}

	// Node 3 restarted among the bad Nodes, with a public-ip-overwrite annotation no peer
	// could use: it advertises its own address instead, lists the bad Nodes within the
	// same memory bound as its first start, and counts them again.
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"127.0.0.1"}}}`, p+"public-ip-overwrite")
	if _, err := k.cs.CoreV1().Nodes().Patch(ctx, kubeNodeName(3), types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := k.StopFlanneld(3); err != nil {
		t.Fatal(err)
	}
	k.start(t, 3, fmt.Sprintf("--healthz-port=%d", healthzPort))
	waitReadyz(t, k.Lab, 3, "", 200, "flanneld is ready")
	waitLog(t, k.Lab, 3, "Ignoring the node's public IP overwrite annotation")
	if got := k.node(t, 3).Annotations[p+"public-ip"]; got != k.NodeIP(3).String() {
		t.Errorf("node 3 advertises public-ip %q, want its own %s", got, k.NodeIP(3))
	}
	want := map[string]int{"overlaps_peer": 1} // hostile-own; hostile-b is admitted now
	for r, n := range common {
		want[r] = n
	}
	waitRejected(t, k.Lab, 3, map[string]float64{}, want)
	after := hwmKB(t, k.Lab, 3)
	t.Logf("node 3: VmHWM %d kB at its first start, %d kB after a start among the bad Nodes", hwm[3], after)
	if after-hwm[3] >= 5<<10 {
		t.Errorf("node 3: peak RSS %d kB after a start among the bad Nodes, %d kB more than its first start's", after, after-hwm[3])
	}
	waitFullMesh(t, k.Lab, "flannel.1", ns)
	pingMesh(t, k.Lab, pods)
}

// rejectionsAt is what node i rejects of a hostile series: the common leases, two leases
// that overlap a peer (on node 1 one of them overlaps its own subnet instead) and, on
// node 2, the lease that advertises node 2's address.
func rejectionsAt(common map[string]int, i int) map[string]int {
	want := map[string]int{"overlaps_peer": 2}
	for r, n := range common {
		want[r] = n
	}
	switch i {
	case 1:
		want["overlaps_own"], want["overlaps_peer"] = 1, 1
	case 2:
		want["local_public_ip"] = 1
	}
	return want
}
