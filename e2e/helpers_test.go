package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flannel-go/flannel/e2e/lab"
)

const (
	vxlanConfig = `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`
	// Generous: these bound waits for convergence on a busy 2-core machine, never speed.
	startTimeout    = 60 * time.Second
	convergeTimeout = 60 * time.Second
)

var labNetwork = netip.MustParsePrefix("10.5.0.0/16")

func needRoot(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("e2e: skipped in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("e2e: needs root for network namespaces (run: sudo make e2e)")
	}
	for _, tool := range []string{"ip", "bridge", "ping"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("e2e: %s not installed (apt-get install iproute2 iputils-ping)", tool)
		}
	}
}

// newLab creates a lab with its own name for this test, removed when the test ends;
// on failure the flanneld logs, etcd's log tail and each node's kernel state are printed.
func newLab(t *testing.T, tag string, nodes int, opts ...func(*lab.Options)) *lab.Lab {
	t.Helper()
	needRoot(t)
	if flanneld.err != nil {
		t.Fatalf("flanneld binary: %v", flanneld.err)
	}
	o := lab.Options{
		Name:        lab.UniqueName(labFamily, tag),
		Nodes:       nodes,
		WorkDir:     t.TempDir(),
		FlanneldBin: flanneld.bin,
		Logf:        t.Logf,
	}
	for _, f := range opts {
		f(&o)
	}
	l, err := lab.New(context.Background(), o)
	if err != nil {
		t.Fatalf("lab.New: %v", err)
	}
	t.Cleanup(func() {
		// A race-enabled flanneld (FLANNEL_TEST_RACE=1) reports races in its log.
		for i := 1; i <= l.Nodes(); i++ {
			if b, err := os.ReadFile(l.LogPath(i)); err == nil && strings.Contains(string(b), "WARNING: DATA RACE") {
				t.Errorf("node %d: flanneld reported a data race (see its log below)", i)
			}
		}
		if t.Failed() {
			dumpLab(t, l)
		}
		if err := l.Close(); err != nil {
			t.Errorf("lab.Close: %v", err)
		}
	})
	return l
}

func dumpLab(t *testing.T, l *lab.Lab) {
	ctx := context.Background()
	for i := 1; i <= l.Nodes(); i++ {
		t.Logf("---- node %d flanneld log (%s), last 60 lines:\n%s", i, l.LogPath(i), l.LogTail(i, 60))
		t.Logf("---- node %d kernel state:\n%s", i, lab.Describe(ctx, l.NodeNS(i)))
	}
	t.Logf("---- etcd log (%s), last 15 lines:\n%s", l.EtcdLog(), lab.TailFile(l.EtcdLog(), 15))
}

// nodeInfo is what a node's flanneld established, read from the node itself.
type nodeInfo struct {
	index   int
	envText string
	env     map[string]string
	subnet  netip.Prefix // masked lease subnet
	mac     string       // VTEP MAC of the vxlan device
	ifindex int
}

// startAll writes the config (if not empty), starts flanneld on every node and waits for
// every subnet file.
func startAll(t *testing.T, l *lab.Lab, config string, extraArgs ...string) {
	t.Helper()
	if config != "" {
		if err := l.PutConfig(context.Background(), config); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= l.Nodes(); i++ {
		if err := l.StartFlanneld(i, extraArgs...); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= l.Nodes(); i++ {
		if _, err := l.WaitSubnetEnv(i, startTimeout); err != nil {
			t.Fatal(err)
		}
	}
}

// info reads node i's subnet file and its vxlan device dev. The subnet is
// FLANNEL_SUBNET's, or FLANNEL_IPV6_SUBNET's for an IPv6 device (flannel-v6.<VNI>).
func info(t *testing.T, l *lab.Lab, i int, dev string) nodeInfo {
	t.Helper()
	raw, err := os.ReadFile(l.SubnetEnvPath(i))
	if err != nil {
		t.Fatal(err)
	}
	n := nodeInfo{index: i, envText: string(raw), env: lab.ParseEnv(string(raw))}
	key := "FLANNEL_SUBNET"
	if strings.HasPrefix(dev, "flannel-v6.") {
		key = "FLANNEL_IPV6_SUBNET"
	}
	p, err := netip.ParsePrefix(n.env[key])
	if err != nil {
		t.Fatalf("node %d: %s %q: %v", i, key, n.env[key], err)
	}
	n.subnet = p.Masked()
	link := waitLink(t, l, i, dev)
	n.mac, n.ifindex = link.Address, link.Ifindex
	return n
}

func infos(t *testing.T, l *lab.Lab, dev string) []nodeInfo {
	t.Helper()
	var out []nodeInfo
	for i := 1; i <= l.Nodes(); i++ {
		out = append(out, info(t, l, i, dev))
	}
	return out
}

// waitLink waits until device dev exists in node i (flanneld may still be creating it).
func waitLink(t *testing.T, l *lab.Lab, i int, dev string) *lab.Link {
	t.Helper()
	var link *lab.Link
	waitFor(t, convergeTimeout, fmt.Sprintf("%s on node %d", dev, i), func() (bool, string) {
		var err error
		link, err = lab.GetLink(context.Background(), l.NodeNS(i), dev)
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	return link
}

// waitFor polls cond every 250 ms until it holds or timeout passes, then fails the test
// with cond's last explanation.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %s", timeout, what, why)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// peer is what one node must have programmed for another node's lease.
type peer struct {
	subnet netip.Prefix
	mac    string
	public netip.Addr
}

// peerOf is n's peer entry of its subnet's family (underlay address of that family).
func peerOf(l *lab.Lab, n nodeInfo) peer {
	if n.subnet.Addr().Is6() {
		return peer{subnet: n.subnet, mac: n.mac, public: l.NodeIPv6(n.index)}
	}
	return peer{subnet: n.subnet, mac: n.mac, public: l.NodeIP(n.index)}
}

// neighsAndRoutes are the neighbour and route listings of p's family.
func (p peer) neighsAndRoutes() (func(context.Context, string) ([]lab.Neigh, error), func(context.Context, string) ([]lab.Route, error)) {
	if p.subnet.Addr().Is6() {
		return lab.Neighs6, lab.Routes6
	}
	return lab.Neighs, lab.Routes
}

// peerState reports which parts of p's ARP/FDB/route triplet (neighbour/FDB/route for
// an IPv6 peer) exist on dev in ns.
func peerState(ns, dev string, p peer) (arp, fdb, route bool, err error) {
	ctx := context.Background()
	gw := p.subnet.Addr().String()
	listNeighs, listRoutes := p.neighsAndRoutes()
	neighs, err := listNeighs(ctx, ns)
	if err != nil {
		return
	}
	arp = slices.ContainsFunc(neighs, func(n lab.Neigh) bool {
		return n.Dev == dev && n.Dst == gw && strings.EqualFold(n.LLAddr, p.mac) && slices.Contains(n.State, "PERMANENT")
	})
	fdbs, err := lab.FDBs(ctx, ns)
	if err != nil {
		return
	}
	fdb = slices.ContainsFunc(fdbs, func(f lab.FDB) bool {
		return f.Dev == dev && strings.EqualFold(f.MAC, p.mac) && f.Dst == p.public.String() && f.State == "permanent"
	})
	routes, err := listRoutes(ctx, ns)
	if err != nil {
		return
	}
	route = slices.ContainsFunc(routes, func(r lab.Route) bool {
		return r.Dst == p.subnet.String() && r.Gateway == gw && r.Dev == dev && r.HasFlag("onlink")
	})
	return
}

// anyTrace reports whether anything of p (ARP for its gateway, FDB for its MAC or
// a route to its subnet) is still on dev in ns.
func anyTrace(ns, dev string, p peer) (bool, string, error) {
	ctx := context.Background()
	gw := p.subnet.Addr().String()
	listNeighs, listRoutes := p.neighsAndRoutes()
	var found []string
	neighs, err := listNeighs(ctx, ns)
	if err != nil {
		return false, "", err
	}
	for _, n := range neighs {
		if n.Dev == dev && n.Dst == gw {
			found = append(found, fmt.Sprintf("neigh %+v", n))
		}
	}
	fdbs, err := lab.FDBs(ctx, ns)
	if err != nil {
		return false, "", err
	}
	for _, f := range fdbs {
		if f.Dev == dev && strings.EqualFold(f.MAC, p.mac) {
			found = append(found, fmt.Sprintf("fdb %+v", f))
		}
	}
	routes, err := listRoutes(ctx, ns)
	if err != nil {
		return false, "", err
	}
	for _, r := range routes {
		if r.Dst == p.subnet.String() {
			found = append(found, fmt.Sprintf("route %+v", r))
		}
	}
	return len(found) > 0, strings.Join(found, "; "), nil
}

// waitPeers waits until node i has the full triplet for every peer in ps.
func waitPeers(t *testing.T, l *lab.Lab, i int, dev string, ps ...peer) {
	t.Helper()
	for _, p := range ps {
		waitFor(t, convergeTimeout, fmt.Sprintf("node %d: ARP/FDB/route for %s on %s", i, p.subnet, dev), func() (bool, string) {
			arp, fdb, route, err := peerState(l.NodeNS(i), dev, p)
			if err != nil {
				return false, err.Error()
			}
			return arp && fdb && route, fmt.Sprintf("arp=%v fdb=%v route=%v (want %s lladdr %s dst %s)", arp, fdb, route, p.subnet, p.mac, p.public)
		})
	}
}

// waitNoPeer waits until nothing of p is left on node i.
func waitNoPeer(t *testing.T, l *lab.Lab, i int, dev string, p peer) {
	t.Helper()
	waitFor(t, convergeTimeout, fmt.Sprintf("node %d: entries for %s gone from %s", i, p.subnet, dev), func() (bool, string) {
		left, what, err := anyTrace(l.NodeNS(i), dev, p)
		if err != nil {
			return false, err.Error()
		}
		return !left, "still there: " + what
	})
}

// waitFullMesh waits until every node has every other node's triplet.
func waitFullMesh(t *testing.T, l *lab.Lab, dev string, ns []nodeInfo) {
	t.Helper()
	for _, a := range ns {
		var ps []peer
		for _, b := range ns {
			if b.index != a.index {
				ps = append(ps, peerOf(l, b))
			}
		}
		waitPeers(t, l, a.index, dev, ps...)
	}
}

// addPods adds pod 0 on every node.
func addPods(t *testing.T, l *lab.Lab) []lab.Pod {
	t.Helper()
	var pods []lab.Pod
	for i := 1; i <= l.Nodes(); i++ {
		p, err := l.AddPod(i, 0)
		if err != nil {
			t.Fatal(err)
		}
		pods = append(pods, p)
	}
	return pods
}

// pingMesh makes every pod ping every address of every pod on the other nodes.
func pingMesh(t *testing.T, l *lab.Lab, pods []lab.Pod) {
	t.Helper()
	for _, from := range pods {
		for _, to := range pods {
			if from.Node == to.Node {
				continue
			}
			for _, dst := range to.Addrs() {
				start := time.Now()
				rtt, err := l.PingRTT(from.NS, dst, lab.DefaultPingTimeout)
				if err != nil {
					t.Errorf("pod on node %d (%v) -> pod on node %d (%s): %v", from.Node, from.Addrs(), to.Node, dst, err)
					continue
				}
				t.Logf("ping pod n%d -> pod n%d %s: ok, rtt %v (took %v)", from.Node, to.Node, dst, rtt, time.Since(start).Round(time.Millisecond))
			}
		}
	}
}

// healthzPort is the --healthz-port of the tests that ask flanneld for /readyz or
// /metrics (inside node namespaces).
const healthzPort = 8472

// readyz asks node i's flanneld for /readyz<query>.
func readyz(l *lab.Lab, i int, query string) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return lab.HTTPGet(ctx, l.NodeNS(i), fmt.Sprintf("http://127.0.0.1:%d/readyz%s", healthzPort, query))
}

// waitReadyz waits until node i's /readyz (with the query) answers code with a body
// containing every want.
func waitReadyz(t *testing.T, l *lab.Lab, i int, query string, code int, want ...string) string {
	t.Helper()
	var body string
	waitFor(t, convergeTimeout, fmt.Sprintf("node %d: /readyz%s %d %q", i, query, code, want), func() (bool, string) {
		c, b, err := readyz(l, i, query)
		if err != nil {
			return false, err.Error()
		}
		body = b
		if c != code {
			return false, fmt.Sprintf("%d %q", c, b)
		}
		for _, w := range want {
			if !strings.Contains(b, w) {
				return false, fmt.Sprintf("%d %q", c, b)
			}
		}
		return true, ""
	})
	return body
}
