package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/flannel-go/flannel/e2e/cnikit"
	"github.com/flannel-go/flannel/e2e/lab"
)

// The CNI plugin's tests drive cmd/flannel through libcni, as a container runtime does,
// with the reference plugins (bridge, host-local, portmap, loopback) as delegates. Every
// plugin runs inside a node namespace (cnikit.NetnsExec); CNI_PATH, the network configs,
// flannel's dataDir, host-local's dataDir and libcni's cache are in the test's
// temporary directory, never the host's /opt/cni, /etc/cni or /var/lib/cni.

// cniNetwork is the network name of the conflist, as in the DaemonSet's ConfigMap.
const cniNetwork = "cbr0"

// cniNode is the CNI side of one lab node.
type cniNode struct {
	t       *testing.T
	l       *lab.Lab
	i       int
	dir     string
	dataDir string // flannel's
	ipamDir string // host-local's: reservations in <ipamDir>/cbr0/<ip>
	binDir  string
	exec    *cnikit.NetnsExec
	cni     *libcni.CNIConfig
	net, lo *libcni.NetworkConfigList
}

func newCNINode(t *testing.T, l *lab.Lab, i int) *cniNode {
	t.Helper()
	if cniPlugin.err != nil {
		t.Fatalf("flannel CNI plugin binary: %v", cniPlugin.err)
	}
	plugins := cnikit.Need(t)
	dir := filepath.Join(t.TempDir(), fmt.Sprintf("cni-n%d", i))
	n := &cniNode{t: t, l: l, i: i, dir: dir, dataDir: filepath.Join(dir, "flannel"), ipamDir: filepath.Join(dir, "networks"),
		binDir: filepath.Join(dir, "bin")}
	if err := cnikit.BinDir(n.binDir, plugins, []string{"bridge", "host-local", "portmap", "loopback"}, cniPlugin.bin); err != nil {
		t.Fatal(err)
	}
	n.exec = &cnikit.NetnsExec{NS: l.NodeNS(i)}
	n.cni = libcni.NewCNIConfigWithCacheDir([]string{n.binDir}, filepath.Join(dir, "cache"), n.exec)
	n.net = n.confList(fmt.Sprintf(`{"cniVersion":"1.1.0","name":%q,"plugins":[`+
		`{"type":"flannel","subnetFile":%q,"dataDir":%q,"delegate":{"hairpinMode":true,"isDefaultGateway":true},"ipam":{"dataDir":%q}},`+
		`{"type":"portmap","capabilities":{"portMappings":true}}]}`, cniNetwork, l.SubnetEnvPath(i), n.dataDir, n.ipamDir))
	n.lo = n.confList(`{"cniVersion":"1.1.0","name":"lo","plugins":[{"type":"loopback"}]}`)
	return n
}

func (n *cniNode) confList(s string) *libcni.NetworkConfigList {
	n.t.Helper()
	list, err := libcni.NetworkConfFromBytes([]byte(s))
	if err != nil {
		n.t.Fatalf("conflist %s: %v", s, err)
	}
	return list
}

// withCache is the node's CNI runtime with another libcni cache directory (a runtime
// that lost its cache, as after a reboot).
func (n *cniNode) withCache(name string) *libcni.CNIConfig {
	return libcni.NewCNIConfigWithCacheDir([]string{n.binDir}, filepath.Join(n.dir, name), n.exec)
}

func (n *cniNode) podID(j int) string { return fmt.Sprintf("pod-n%d-%d", n.i, j) }

func (n *cniNode) rt(j int) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: n.podID(j), NetNS: "/run/netns/" + n.l.PodNS(n.i, j), IfName: "eth0"}
}

// cniPod is what ADD gave a pod: an address (and its gateway) of each family the node
// has a subnet of.
type cniPod struct {
	ns            string
	ip, gateway   netip.Addr // IPv4
	ip6, gateway6 netip.Addr // IPv6
	hostVeth      string
}

// addrs are the pod's addresses, IPv4 first.
func (p cniPod) addrs() []netip.Addr {
	var out []netip.Addr
	for _, a := range []netip.Addr{p.ip, p.ip6} {
		if a.IsValid() {
			out = append(out, a)
		}
	}
	return out
}

// add creates pod j's namespace and attaches it: loopback on lo, then the flannel
// network on eth0.
func (n *cniNode) add(j int) (cniPod, error) {
	ctx := context.Background()
	if _, err := n.l.NewPodNS(n.i, j); err != nil {
		return cniPod{}, err
	}
	lo := *n.rt(j)
	lo.IfName = "lo"
	if _, err := n.cni.AddNetworkList(ctx, n.lo, &lo); err != nil {
		return cniPod{}, fmt.Errorf("loopback: %w", err)
	}
	res, err := n.cni.AddNetworkList(ctx, n.net, n.rt(j))
	if err != nil {
		return cniPod{}, err
	}
	return podOf(n.l.PodNS(n.i, j), res)
}

func (n *cniNode) mustAdd(j int) cniPod {
	n.t.Helper()
	p, err := n.add(j)
	if err != nil {
		n.t.Fatalf("node %d: ADD pod %d: %v", n.i, j, err)
	}
	var gws []netip.Addr
	for _, g := range []netip.Addr{p.gateway, p.gateway6} {
		if g.IsValid() {
			gws = append(gws, g)
		}
	}
	n.t.Logf("node %d: pod %d attached: %v via %v, host veth %s", n.i, j, p.addrs(), gws, p.hostVeth)
	return p
}

func podOf(ns string, r types.Result) (cniPod, error) {
	res, err := types100.NewResultFromResult(r)
	if err != nil {
		return cniPod{}, err
	}
	p := cniPod{ns: ns}
	for _, ipc := range res.IPs {
		a, _ := netip.AddrFromSlice(ipc.Address.IP)
		gw, _ := netip.AddrFromSlice(ipc.Gateway)
		if a.Unmap().Is4() {
			p.ip, p.gateway = a.Unmap(), gw.Unmap()
		} else if a.Is6() {
			p.ip6, p.gateway6 = a, gw
		}
	}
	for _, i := range res.Interfaces {
		if i.Sandbox == "" && i.Name != "cni0" {
			p.hostVeth = i.Name
		}
	}
	if len(p.addrs()) == 0 || p.hostVeth == "" {
		return p, fmt.Errorf("result without an address or a host veth: %s", res)
	}
	return p, nil
}

func (n *cniNode) check(j int) error {
	return n.cni.CheckNetworkList(context.Background(), n.net, n.rt(j))
}

func (n *cniNode) del(j int) error {
	return n.cni.DelNetworkList(context.Background(), n.net, n.rt(j))
}

func (n *cniNode) status() error {
	return n.cni.GetStatusNetworkList(context.Background(), n.net)
}

// reservations maps host-local's reserved addresses to their container IDs.
func (n *cniNode) reservations() map[netip.Addr]string {
	n.t.Helper()
	out := map[netip.Addr]string{}
	dir := filepath.Join(n.ipamDir, cniNetwork)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return out
	}
	if err != nil {
		n.t.Fatal(err)
	}
	for _, e := range ents {
		a, err := netip.ParseAddr(e.Name())
		if err != nil {
			continue // lock, last_reserved_ip.0
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			n.t.Fatal(err)
		}
		id, _, _ := strings.Cut(string(b), "\n")
		out[a] = strings.TrimSpace(id)
	}
	return out
}

// saved lists the container IDs flannel keeps a delegate config for.
func (n *cniNode) saved() []string {
	n.t.Helper()
	ents, err := os.ReadDir(n.dataDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		n.t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

func (n *cniNode) hasLink(name string) bool {
	n.t.Helper()
	_, err := lab.GetLink(context.Background(), n.l.NodeNS(n.i), name)
	if errors.Is(err, lab.ErrNoLink) {
		return false
	}
	if err != nil {
		n.t.Fatal(err)
	}
	return true
}

// expectGone checks that DEL (or GC) released pod p: no reservation, no host veth, no
// saved config.
func (n *cniNode) expectGone(j int, p cniPod, vethToo bool) {
	n.t.Helper()
	for _, a := range p.addrs() {
		if id, ok := n.reservations()[a]; ok {
			n.t.Errorf("node %d: host-local still reserves %s (for %s)", n.i, a, id)
		}
	}
	if vethToo && n.hasLink(p.hostVeth) {
		n.t.Errorf("node %d: host veth %s still exists", n.i, p.hostVeth)
	}
	if slices.Contains(n.saved(), n.podID(j)) {
		n.t.Errorf("node %d: saved config of %s still in %s", n.i, n.podID(j), n.dataDir)
	}
}

func cniErrorText(err error) string {
	var e *types.Error
	if errors.As(err, &e) {
		return fmt.Sprintf("code %d: %s", e.Code, e.Msg)
	}
	return err.Error()
}

// Pods on two nodes attached by our plugin reach each other over flanneld's vxlan
// network; CHECK passes until the pod loses its address; DEL releases the address
// reservation, the veth and the saved config, and a second DEL is a no-op.
func TestCNIPodsAcrossNodes(t *testing.T) {
	l := newLab(t, "cni", 2)
	startAll(t, l, vxlanConfig)
	waitFullMesh(t, l, "flannel.1", infos(t, l, "flannel.1"))
	n1, n2 := newCNINode(t, l, 1), newCNINode(t, l, 2)
	p1, p2 := n1.mustAdd(0), n2.mustAdd(0)
	for _, p := range []cniPod{p1, p2} {
		if !labNetwork.Contains(p.ip) {
			t.Fatalf("pod address %s outside the cluster network %s", p.ip, labNetwork)
		}
	}
	if err := l.Ping(p1.ns, p2.ip); err != nil {
		t.Errorf("pod on node 1 -> pod on node 2: %v", err)
	}
	if err := l.Ping(p2.ns, p1.ip); err != nil {
		t.Errorf("pod on node 2 -> pod on node 1: %v", err)
	}
	if _, err := l.Exec(p1.ns, "ping", "-n", "-c", "1", "-W", "5", "127.0.0.1"); err != nil {
		t.Errorf("loopback in the pod: %v", err)
	}
	if t.Failed() {
		return
	}

	for _, n := range []*cniNode{n1, n2} {
		if err := n.check(0); err != nil {
			t.Fatalf("node %d: CHECK of a healthy pod: %s", n.i, cniErrorText(err))
		}
	}
	prefix := fmt.Sprintf("%s/24", p1.ip)
	if _, err := l.Exec(p1.ns, "ip", "addr", "del", prefix, "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	err := n1.check(0)
	if err == nil {
		t.Fatalf("CHECK passed although the pod lost %s", prefix)
	}
	t.Logf("CHECK after the address was removed: %s", cniErrorText(err))

	if got := n1.reservations()[p1.ip]; got != n1.podID(0) {
		t.Fatalf("before DEL: %s reserved for %q, want %s", p1.ip, got, n1.podID(0))
	}
	if err := n1.del(0); err != nil {
		t.Fatalf("DEL: %s", cniErrorText(err))
	}
	n1.expectGone(0, p1, true)
	if err := n1.del(0); err != nil {
		t.Errorf("second DEL: %s", cniErrorText(err))
	}
	// The other node's pod is untouched.
	if err := n2.check(0); err != nil {
		t.Errorf("node 2: CHECK: %s", cniErrorText(err))
	}
}

// Our plugin deletes a pod whose delegate config upstream's plugin saved, and a config
// ours saved is one upstream's DEL (the delegate's DEL with the saved bytes) releases.
func TestCNISavedConfigCompatibility(t *testing.T) {
	l := newLab(t, "cnisave", 1)
	startAll(t, l, vxlanConfig)
	n := newCNINode(t, l, 1)
	env := info(t, l, 1, "flannel.1").env
	sn, err := netip.ParsePrefix(env["FLANNEL_SUBNET"])
	if err != nil {
		t.Fatal(err)
	}
	// Upstream's rendering of this conflist on this node: encoding/json of its map.
	upstream := fmt.Sprintf(`{"cniVersion":"1.1.0","hairpinMode":true,"ipMasq":true,"ipam":{"dataDir":%q,"ranges":[[{"subnet":%q}]],`+
		`"routes":[{"dst":%q}],"type":"host-local"},"isDefaultGateway":true,"isGateway":true,"mtu":%s,"name":"cbr0","type":"bridge"}`,
		n.ipamDir, sn.Masked(), labNetwork, env["FLANNEL_MTU"])

	// Pod 0 as upstream's plugin adds it: the config saved first, then the delegate's ADD.
	if _, err := l.NewPodNS(1, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(n.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(n.dataDir, n.podID(0)), []byte(upstream), 0o600); err != nil {
		t.Fatal(err)
	}
	pc, err := libcni.NetworkPluginConfFromBytes([]byte(upstream))
	if err != nil {
		t.Fatal(err)
	}
	res, err := n.cni.AddNetwork(context.Background(), pc, n.rt(0))
	if err != nil {
		t.Fatalf("bridge ADD with upstream's config: %s", cniErrorText(err))
	}
	p0, err := podOf(l.PodNS(1, 0), res)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Ping(p0.ns, p0.gateway); err != nil {
		t.Fatalf("upstream-added pod: %v", err)
	}
	if err := n.del(0); err != nil {
		t.Fatalf("our DEL of an upstream-added pod: %s", cniErrorText(err))
	}
	n.expectGone(0, p0, true)

	// Pod 1 added by ours: the saved bytes are exactly upstream's rendering, and the
	// delegate's DEL with them (all upstream's DEL does) releases the pod.
	p1 := n.mustAdd(1)
	saved, err := os.ReadFile(filepath.Join(n.dataDir, n.podID(1)))
	if err != nil {
		t.Fatal(err)
	}
	if string(saved) != upstream {
		t.Fatalf("saved config\n%s\nis not upstream's rendering\n%s", saved, upstream)
	}
	pc, err = libcni.NetworkPluginConfFromBytes(saved)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.cni.DelNetwork(context.Background(), pc, n.rt(1)); err != nil {
		t.Fatalf("the delegate's DEL with our saved config: %s", cniErrorText(err))
	}
	if err := os.Remove(filepath.Join(n.dataDir, n.podID(1))); err != nil {
		t.Fatal(err)
	}
	n.expectGone(1, p1, true)
}

// Without a subnet file (flanneld not started yet, or the node rebooted and flanneld is
// not back) ADD fails saying so and STATUS reports not ready; once flanneld has written
// the file both succeed.
func TestCNIWaitsForFlanneld(t *testing.T) {
	l := newLab(t, "cniwait", 1)
	if err := l.PutConfig(context.Background(), vxlanConfig); err != nil {
		t.Fatal(err)
	}
	n := newCNINode(t, l, 1)
	expectNotReady := func(when string) {
		t.Helper()
		err := n.status()
		var e *types.Error
		if !errors.As(err, &e) || e.Code != types.ErrPluginNotAvailable || !strings.Contains(e.Msg, "flanneld is not running or not ready on this node") {
			t.Errorf("%s: STATUS: %v, want code %d saying flanneld is not running or not ready", when, err, types.ErrPluginNotAvailable)
		}
		_, err = n.add(0)
		if !errors.As(err, &e) || e.Code != types.ErrTryAgainLater ||
			!strings.Contains(e.Msg, "failed to load flannel 'subnet.env' file: ") ||
			!strings.Contains(e.Msg, "flanneld is not running or not ready on this node") {
			t.Errorf("%s: ADD: %v, want code %d with upstream's text and the fix", when, err, types.ErrTryAgainLater)
		} else {
			t.Logf("%s: ADD refused: %s", when, cniErrorText(err))
		}
		if len(n.reservations()) != 0 || len(n.saved()) != 0 {
			t.Errorf("%s: a refused ADD left reservations %v or saved configs %v", when, n.reservations(), n.saved())
		}
		// The runtime cleans up after a failed ADD.
		if err := n.del(0); err != nil {
			t.Errorf("%s: DEL after the failed ADD: %s", when, cniErrorText(err))
		}
	}
	expectReady := func(when string) {
		t.Helper()
		if err := n.status(); err != nil {
			t.Fatalf("%s: STATUS: %s", when, cniErrorText(err))
		}
		p := n.mustAdd(0)
		if err := l.Ping(p.ns, p.gateway); err != nil {
			t.Fatalf("%s: pod -> cni0: %v", when, err)
		}
		if err := n.del(0); err != nil {
			t.Fatalf("%s: DEL: %s", when, cniErrorText(err))
		}
	}

	expectNotReady("before flanneld started")
	if err := l.StartFlanneld(1); err != nil {
		t.Fatal(err)
	}
	if _, err := l.WaitSubnetEnv(1, startTimeout); err != nil {
		t.Fatal(err)
	}
	expectReady("flanneld started")

	// A reboot: flanneld stopped, /run emptied.
	if err := l.StopFlanneld(1); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(l.SubnetEnvPath(1)); err != nil {
		t.Fatal(err)
	}
	expectNotReady("after a reboot, flanneld not back")
	if err := l.StartFlanneld(1); err != nil {
		t.Fatal(err)
	}
	if _, err := l.WaitSubnetEnv(1, startTimeout); err != nil {
		t.Fatal(err)
	}
	expectReady("flanneld back")
}

// GC with the runtime's valid attachments (and no libcni cache left to go by) drops the
// saved configs of every other attachment and their host-local reservations; the valid
// pod keeps working.
func TestCNIGarbageCollection(t *testing.T) {
	l := newLab(t, "cnigc", 1)
	startAll(t, l, vxlanConfig)
	n := newCNINode(t, l, 1)
	pods := []cniPod{n.mustAdd(0), n.mustAdd(1), n.mustAdd(2)}
	if got := n.saved(); len(got) != 3 {
		t.Fatalf("saved configs %v, want 3", got)
	}
	// Pods 1 and 2 vanish without a DEL (their namespaces, and with them their veths).
	for _, j := range []int{1, 2} {
		if err := l.DeletePodNS(1, j); err != nil {
			t.Fatal(err)
		}
	}
	valid := []types.GCAttachment{{ContainerID: n.podID(0), IfName: "eth0"}}
	if err := n.withCache("cache-after-reboot").GCNetworkList(context.Background(), n.net, &libcni.GCArgs{ValidAttachments: valid}); err != nil {
		t.Fatalf("GC: %s", cniErrorText(err))
	}
	for _, j := range []int{1, 2} {
		n.expectGone(j, pods[j], false) // the veths went with the namespaces
	}
	if got := n.saved(); !slices.Equal(got, []string{n.podID(0)}) {
		t.Errorf("saved configs after GC %v, want only %s", got, n.podID(0))
	}
	if id := n.reservations()[pods[0].ip]; id != n.podID(0) {
		t.Errorf("GC released the valid pod's address %s (reserved for %q)", pods[0].ip, id)
	}
	if err := n.check(0); err != nil {
		t.Errorf("CHECK of the valid pod after GC: %s", cniErrorText(err))
	}
	if err := l.Ping(pods[0].ns, pods[0].gateway); err != nil {
		t.Errorf("valid pod after GC: %v", err)
	}
}

// Dual-stack and IPv6-only subnet files flow through the plugin: pods on two nodes get an
// address of each family the nodes have a subnet of, reach each other over each, pass
// CHECK (the cluster routes of both families included) and DEL releases every address.
func TestCNIDualStackAndIPv6Only(t *testing.T) {
	for _, c := range []struct {
		tag    string
		config string
		v4     bool
	}{
		{"cnidual", dualStackConfig, true},
		{"cnisix", ipv6OnlyConfig, false},
	} {
		t.Run(c.tag, func(t *testing.T) {
			l := newLab(t, c.tag, 2, withIPv6)
			startAll(t, l, c.config)
			if c.v4 {
				waitFullMesh(t, l, "flannel.1", infos(t, l, "flannel.1"))
			}
			waitFullMesh(t, l, "flannel-v6.1", infos(t, l, "flannel-v6.1"))
			n1, n2 := newCNINode(t, l, 1), newCNINode(t, l, 2)
			p1, p2 := n1.mustAdd(0), n2.mustAdd(0)
			for _, p := range []cniPod{p1, p2} {
				if p.ip.IsValid() != c.v4 || !lab.PodNetworkIPv6.Contains(p.ip6) || (c.v4 && !lab.PodNetwork.Contains(p.ip)) {
					t.Fatalf("pod addresses %v, want an IPv6 one in %s and (only for dual stack) an IPv4 one in %s", p.addrs(), lab.PodNetworkIPv6, lab.PodNetwork)
				}
			}
			for _, pair := range [][2]cniPod{{p1, p2}, {p2, p1}} {
				for _, a := range pair[1].addrs() {
					if err := l.Ping(pair[0].ns, a); err != nil {
						t.Errorf("%s -> %s: %v", pair[0].ns, a, err)
					}
				}
			}
			for _, n := range []*cniNode{n1, n2} {
				if err := n.check(0); err != nil {
					t.Errorf("node %d: CHECK: %s", n.i, cniErrorText(err))
				}
			}
			if err := n1.del(0); err != nil {
				t.Fatalf("DEL: %s", cniErrorText(err))
			}
			n1.expectGone(0, p1, true)
		})
	}
}
