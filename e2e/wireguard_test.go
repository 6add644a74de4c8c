package e2e

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-go/flannel/e2e/lab"
)

// wgPSK is the pre-shared key of the wireguard tests' config: it must never show in a log.
const wgPSK = "hsmO0pr9Jq8sq9Y7kdVj0vE5X8ub3MkNfXWjUXAhRHk="

var wgDualConfig = lab.NetConfig(lab.DualStack, `{"Type":"wireguard","PSK":"`+wgPSK+`","PersistentKeepaliveInterval":25}`)

func withWireguard(o *lab.Options) { o.IPv6, o.OwnWireguardDir = true, true }

func needWG(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"wg", "tcpdump"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("e2e: %s not installed (apt-get install wireguard-tools tcpdump)", tool)
		}
	}
}

// wgNode is what a node's wireguard backend established.
type wgNode struct {
	index       int
	noKeepalive bool   // the config sets no PSK and no keepalive
	pub         string // base64 public key, from the node's key file
	priv        string // base64 private key
	subnet      netip.Prefix
	subnet6     netip.Prefix
	envText     string
}

// wgKeys reads node i's key file (mode 0400, beside its subnet file) and derives the
// public key with wg(8).
func wgKeys(t *testing.T, l *lab.Lab, i int) (priv, pub string) {
	t.Helper()
	path := filepath.Join(l.NodeDir(i), "wgkey")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("node %d: key file: %v", i, err)
	}
	if fi.Mode().Perm() != 0o400 {
		t.Errorf("node %d: key file mode %04o, want 0400", i, fi.Mode().Perm())
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	priv = strings.TrimSpace(string(raw))
	cmd := exec.Command("wg", "pubkey")
	cmd.Stdin = strings.NewReader(priv + "\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("wg pubkey: %v", err)
	}
	return priv, strings.TrimSpace(string(out))
}

func wgNodes(t *testing.T, l *lab.Lab) []wgNode {
	t.Helper()
	var out []wgNode
	for i := 1; i <= l.Nodes(); i++ {
		env, err := l.SubnetEnv(i)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := os.ReadFile(l.SubnetEnvPath(i))
		n := wgNode{index: i, envText: string(raw)}
		n.priv, n.pub = wgKeys(t, l, i)
		if p, err := netip.ParsePrefix(env["FLANNEL_SUBNET"]); err == nil {
			n.subnet = p.Masked()
		}
		if p, err := netip.ParsePrefix(env["FLANNEL_IPV6_SUBNET"]); err == nil {
			n.subnet6 = p.Masked()
		}
		out = append(out, n)
	}
	return out
}

// wgDump is one peer line of "wg show <dev> dump".
type wgDump struct {
	pub, psk, endpoint, allowed string
	keepalive                   string
}

func wgPeers(l *lab.Lab, i int, dev string) (map[string]wgDump, error) {
	out, err := l.WG(i, "show", dev, "dump")
	if err != nil {
		return nil, err
	}
	peers := map[string]wgDump{}
	for n, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Split(line, "\t")
		if n == 0 || len(f) < 8 {
			continue // the device's own line
		}
		peers[f[0]] = wgDump{pub: f[0], psk: f[1], endpoint: f[2], allowed: f[3], keepalive: f[7]}
	}
	return peers, nil
}

// waitWGMesh waits until every node's devices hold exactly the other nodes as peers,
// with their subnets, endpoints (public address and port), the PSK and the keepalive.
func waitWGMesh(t *testing.T, l *lab.Lab, nodes []wgNode) {
	t.Helper()
	for _, a := range nodes {
		for _, dev := range []string{"flannel-wg", "flannel-wg-v6"} {
			want := map[string]wgDump{}
			for _, b := range nodes {
				if b.index == a.index {
					continue
				}
				d := wgDump{pub: b.pub, psk: wgPSK, endpoint: fmt.Sprintf("%s:51820", l.NodeIP(b.index)), allowed: b.subnet.String(), keepalive: "25"}
				if a.noKeepalive {
					d.psk, d.keepalive = "(none)", "off"
				}
				if dev == "flannel-wg-v6" {
					d.endpoint, d.allowed = fmt.Sprintf("[%s]:51821", l.NodeIPv6(b.index)), b.subnet6.String()
				}
				want[b.pub] = d
			}
			waitFor(t, convergeTimeout, fmt.Sprintf("node %d: peers of %s", a.index, dev), func() (bool, string) {
				got, err := wgPeers(l, a.index, dev)
				if err != nil {
					return false, err.Error()
				}
				if len(got) != len(want) {
					return false, fmt.Sprintf("%d peers %v, want %v", len(got), got, want)
				}
				for k, w := range want {
					if got[k] != w {
						return false, fmt.Sprintf("peer %s is %+v, want %+v", k, got[k], w)
					}
				}
				return true, ""
			})
		}
	}
}

// The wireguard backend in userspace (the lab's kernel has no WireGuard module) on a
// dual-stack network over the lab's IPv6 underlay: three nodes advertise upstream's
// lease values, hold each other as peers on flannel-wg (IPv4, port 51820) and
// flannel-wg-v6 (IPv6, port 51821), pods ping each other over both families, the
// underlay carries only WireGuard datagrams, a peer removed with wg(8) comes back, a new
// key file is picked up and advertised while pods keep (or resume) talking, and no log
// holds a private key or the PSK.
func TestWireguardUserspaceDualStack(t *testing.T) {
	needWG(t)
	l := newLab(t, "wg", 3, withWireguard)
	startAll(t, l, wgDualConfig, fmt.Sprintf("--healthz-port=%d", healthzPort))
	nodes := wgNodes(t, l)
	for _, n := range nodes {
		if !strings.Contains(n.envText, "FLANNEL_MTU=1420\n") || !n.subnet.IsValid() || !n.subnet6.IsValid() {
			t.Errorf("node %d: subnet.env\n%s\nwant both subnets and FLANNEL_MTU=1420", n.index, n.envText)
		}
		log := l.LogTail(n.index, 400)
		if !strings.Contains(log, `"WireGuard implementation" implementation="userspace"`) {
			t.Errorf("node %d did not log the userspace choice:\n%s", n.index, l.LogTail(n.index, 40))
		}
	}
	checkLeases(t, l, func(i int) (string, string) {
		n := nodes[i-1]
		key := fmt.Sprintf("%s-24&%s-64", n.subnet.Addr(), n.subnet6.Addr())
		val := fmt.Sprintf(`{"PublicIP":"%s","PublicIPv6":"%s","BackendType":"wireguard","BackendData":{"PublicKey":"%s","Port":51820},"BackendV6Data":{"PublicKey":"%s","Port":51821}}`,
			l.NodeIP(i), l.NodeIPv6(i), n.pub, n.pub)
		return key, val
	})
	waitWGMesh(t, l, nodes)
	for _, n := range nodes {
		checkWGLinks(t, l, n)
	}
	body := waitReadyz(t, l, 1, "?verbose", 200, "[+]wireguard ok (userspace WireGuard: flannel-wg, flannel-wg-v6)")
	t.Logf("node 1 /readyz?verbose:\n%s", body)
	waitMetric(t, l, 1, `flannel_wireguard_implementation{impl="userspace"}`, "= 1", func(v float64) bool { return v == 1 })

	pods := addPods(t, l)
	pingMesh(t, l, pods)
	pingFullSize(t, l, pods[0], pods[1])
	onlyWireguardOnUnderlay(t, l, pods)

	// A peer removed by hand comes back (polled: WireGuard sends no notification).
	start := time.Now()
	if _, err := l.WG(1, "set", "flannel-wg", "peer", nodes[1].pub, "remove"); err != nil {
		t.Fatal(err)
	}
	waitWGMesh(t, l, nodes)
	t.Logf("a peer removed with wg(8) was back after %v", time.Since(start).Round(time.Millisecond))
	pingMesh(t, l, pods)

	// Key rotation: node 2 gets a new key file; pings between pods of nodes 1 and 2
	// stop while the peers learn the new key and resume without any device deleted.
	streams := map[string]*lab.PingStream{}
	for _, dst := range pods[1].Addrs() {
		s, err := lab.StartPingStream(pods[0].NS, dst, 20*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		streams[dst.String()] = s
	}
	time.Sleep(500 * time.Millisecond)
	rotated := rotateKey(t, l, 2)
	nodes[1].priv, nodes[1].pub = rotated.priv, rotated.pub
	waitWGMesh(t, l, nodes)
	checkLeases(t, l, func(i int) (string, string) {
		n := nodes[i-1]
		return fmt.Sprintf("%s-24&%s-64", n.subnet.Addr(), n.subnet6.Addr()),
			fmt.Sprintf(`{"PublicIP":"%s","PublicIPv6":"%s","BackendType":"wireguard","BackendData":{"PublicKey":"%s","Port":51820},"BackendV6Data":{"PublicKey":"%s","Port":51821}}`,
				l.NodeIP(i), l.NodeIPv6(i), n.pub, n.pub)
	})
	pingMesh(t, l, pods)
	time.Sleep(time.Second)
	for dst, s := range streams {
		sent, lost, err := s.Stop()
		if err != nil {
			t.Fatal(err)
		}
		// pings resumed (pingMesh above), so the loss is the gap
		t.Logf("key rotation on node 2: pod n1 -> %s: %d of %d pings lost at 20 ms, a gap of about %v",
			dst, lost, sent, time.Duration(lost)*20*time.Millisecond)
	}
	for _, n := range nodes {
		if err := l.StopFlanneld(n.index); err != nil {
			t.Error(err)
		}
	}
	// secrets never logged
	secrets := map[string]string{"the PSK": wgPSK}
	for _, n := range nodes {
		secrets[fmt.Sprintf("node %d's private key", n.index)] = n.priv
	}
	secrets["node 2's first private key"] = rotated.oldPriv
	for i := 1; i <= l.Nodes(); i++ {
		data, err := os.ReadFile(l.LogPath(i))
		if err != nil {
			t.Fatal(err)
		}
		for what, s := range secrets {
			for _, form := range secretForms(s) {
				if strings.Contains(string(data), form) {
					t.Errorf("node %d's log holds %s", i, what)
				}
			}
		}
	}
}

// secretForms are the ways a base64 key may be written: base64 and hex.
func secretForms(b64 string) []string {
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return []string{b64}
	}
	return []string{b64, hex.EncodeToString(raw)}
}

type rotation struct{ oldPriv, priv, pub string }

// rotateKey writes a new private key to node i's key file the way an operator would
// (a new file moved over the old one) and returns the keys.
func rotateKey(t *testing.T, l *lab.Lab, i int) rotation {
	t.Helper()
	old, _ := wgKeys(t, l, i)
	out, err := exec.Command("wg", "genkey").Output()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(l.NodeDir(i), "wgkey")
	tmp := path + ".new"
	if err := os.WriteFile(tmp, out, 0o400); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	priv, pub := wgKeys(t, l, i)
	return rotation{oldPriv: old, priv: priv, pub: pub}
}

// checkWGLinks checks node n's devices: MTU 1420, up, the lease's network addresses,
// the networks' routes through them, and the blackhole routes beneath.
func checkWGLinks(t *testing.T, l *lab.Lab, n wgNode) {
	t.Helper()
	ctx := context.Background()
	ns := l.NodeNS(n.index)
	for dev, addr := range map[string]string{"flannel-wg": n.subnet.Addr().String() + "/32", "flannel-wg-v6": n.subnet6.Addr().String() + "/128"} {
		link, err := lab.GetLink(ctx, ns, dev)
		if err != nil {
			t.Fatalf("node %d: %v", n.index, err)
		}
		if link.MTU != 1420 || !slices.Contains(link.Flags, "UP") {
			t.Errorf("node %d: %s has MTU %d flags %v, want 1420 and UP", n.index, dev, link.MTU, link.Flags)
		}
		out, err := l.Exec(ns, "ip", "addr", "show", "dev", dev)
		if err != nil || !strings.Contains(out, " "+addr+" ") {
			t.Errorf("node %d: %s lacks %s:\n%s %v", n.index, dev, addr, out, err)
		}
	}
	for _, c := range []struct{ args, want []string }{
		{[]string{"ip", "route", "show", "10.5.0.0/16"}, []string{"10.5.0.0/16 dev flannel-wg scope link", "blackhole 10.5.0.0/16 metric 1000000"}},
		{[]string{"ip", "-6", "route", "show", "2001:db8:1000::/56"}, []string{"2001:db8:1000::/56 dev flannel-wg-v6 metric 1024", "blackhole 2001:db8:1000::/56 dev lo metric 1000000"}},
	} {
		out, err := l.Exec(ns, c.args...)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("node %d: %s:\n%s\nlacks %q", n.index, strings.Join(c.args, " "), out, w)
			}
		}
	}
}

var tcpdumpLineRE = regexp.MustCompile(`^\S+ (IP6?) (\S+) > (\S+): (.*)$`)

// onlyWireguardOnUnderlay captures node 1's eth0 while its pod pings the other pods over
// both families, and checks that every IP packet captured is either a WireGuard
// datagram between node addresses on port 51820/51821, the node's etcd traffic or the
// underlay's IPv6 neighbour discovery: no pod address appears on the underlay.
func onlyWireguardOnUnderlay(t *testing.T, l *lab.Lab, pods []lab.Pod) {
	t.Helper()
	c := startCapture(t, l, 1)
	for _, to := range pods[1:] {
		for _, dst := range to.Addrs() {
			if _, err := l.Exec(pods[0].NS, "ping", "-n", "-c", "5", "-i", "0.2", "-W", "2", dst.String()); err != nil {
				t.Errorf("pod n1 -> %s: %v", dst, err)
			}
		}
	}
	lines := c.stop()
	nodePort := func(s string) bool {
		for i := 1; i <= l.Nodes(); i++ {
			for _, p := range []string{"51820", "51821"} {
				if s == l.NodeIP(i).String()+"."+p || s == l.NodeIPv6(i).String()+"."+p {
					return true
				}
			}
		}
		return false
	}
	wg, other := 0, 0
	for _, line := range lines {
		for _, p := range pods {
			for _, a := range p.Addrs() {
				if strings.Contains(line, " "+a.String()+".") || strings.Contains(line, " "+a.String()+":") || strings.Contains(line, " "+a.String()+" ") {
					t.Errorf("a pod address on the underlay: %s", line)
				}
			}
		}
		m := tcpdumpLineRE.FindStringSubmatch(line)
		switch {
		case m == nil:
			continue
		case nodePort(m[2]) && nodePort(strings.TrimSuffix(m[3], ":")) && strings.HasPrefix(m[4], "UDP"):
			wg++
		case strings.Contains(line, lab.EtcdIP.String()+".2379"):
		case strings.Contains(m[4], "ICMP6, neighbor") || strings.Contains(m[4], "ICMP6, router") || strings.Contains(m[4], "multicast listener"):
			// the underlay's own address resolution
		default:
			other++
			t.Errorf("not a WireGuard datagram between nodes: %s", line)
		}
	}
	if wg == 0 {
		t.Errorf("no WireGuard datagram captured on node 1's eth0:\n%s", strings.Join(lines, "\n"))
	}
	t.Logf("node 1 eth0 during pod pings: %d WireGuard datagrams between node addresses on ports 51820/51821, %d other IP packets besides etcd's and neighbour discovery", wg, other)
}

// What a restart costs with the userspace device, which lives in the daemon: while the
// daemon is down its devices are gone, and the blackhole routes keep pod traffic from
// leaving unencrypted by the default route; after the restart, pings resume. A device
// deleted by hand is recreated with its peers.
func TestWireguardUserspaceRestartAndDeviceDeleted(t *testing.T) {
	needWG(t)
	l := newLab(t, "wgrs", 2, withWireguard)
	startAll(t, l, lab.NetConfig(lab.DualStack, `{"Type":"wireguard"}`))
	nodes := wgNodes(t, l)
	for i := range nodes {
		nodes[i].noKeepalive = true
	}
	waitWGMesh(t, l, nodes)
	pods := addPods(t, l)
	pingMesh(t, l, pods)

	// the cost of a restart: node 2's daemon stopped and started again at once
	const interval = 20 * time.Millisecond
	stream, err := lab.StartPingStream(pods[0].NS, pods[1].IP, interval)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	down := time.Now()
	if err := l.StopFlanneld(2); err != nil {
		t.Fatal(err)
	}
	restartNode2 := func() {
		t.Helper()
		if err := l.StartFlanneld(2); err != nil {
			t.Fatal(err)
		}
		if _, err := l.WaitSubnetEnv(2, startTimeout); err != nil {
			t.Fatal(err)
		}
		waitFor(t, convergeTimeout, "pod n1 -> pod n2 after the restart", func() (bool, string) {
			_, err := l.PingRTT(pods[0].NS, pods[1].IP, time.Second)
			return err == nil, fmt.Sprint(err)
		})
	}
	restartNode2()
	back := time.Since(down)
	time.Sleep(300 * time.Millisecond)
	sent, lost, err := stream.Stop()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("userspace restart of node 2 (SIGTERM, then started at once): pings pod n1 -> pod n2 answered again %v after the stop; %d of %d pings at %v lost (about %v)",
		back.Round(time.Millisecond), lost, sent, interval, time.Duration(lost)*interval)
	waitWGMesh(t, l, nodes)

	// while the daemon is down its devices are gone and only the blackholes route
	if err := l.StopFlanneld(2); err != nil {
		t.Fatal(err)
	}
	ns2 := l.NodeNS(2)
	if _, err := lab.GetLink(context.Background(), ns2, "flannel-wg"); err == nil {
		t.Error("flannel-wg outlived the daemon")
	}
	for _, c := range []struct{ args []string }{{[]string{"ip", "route", "show", "10.5.0.0/16"}}, {[]string{"ip", "-6", "route", "show", "2001:db8:1000::/56"}}} {
		out, err := l.Exec(ns2, c.args...)
		if err != nil || !strings.HasPrefix(strings.TrimSpace(out), "blackhole ") || strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("node 2 without its daemon: %s:\n%s (%v), want only the blackhole route", strings.Join(c.args, " "), out, err)
		}
	}
	// pod 2's traffic to pod 1 is dropped on node 2, not sent in the clear
	capture := startCapture(t, l, 2)
	for _, dst := range pods[0].Addrs() {
		if _, err := l.Exec(pods[1].NS, "ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", dst.String()); err == nil {
			t.Errorf("pod n2 -> %s answered while node 2's devices are gone", dst)
		}
	}
	for _, line := range capture.stop() {
		for _, p := range pods {
			for _, a := range p.Addrs() {
				if strings.Contains(line, " "+a.String()+" ") || strings.Contains(line, " "+a.String()+".") || strings.Contains(line, " "+a.String()+":") {
					t.Errorf("plaintext pod packet on node 2's underlay: %s", line)
				}
			}
		}
	}
	restartNode2()
	waitWGMesh(t, l, nodes)

	// a device deleted by hand comes back with its peers
	before, err := lab.GetLink(context.Background(), l.NodeNS(1), "flannel-wg")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := l.Exec(l.NodeNS(1), "ip", "link", "del", "flannel-wg"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, convergeTimeout, "flannel-wg recreated on node 1", func() (bool, string) {
		link, err := lab.GetLink(context.Background(), l.NodeNS(1), "flannel-wg")
		if err != nil {
			return false, err.Error()
		}
		return link.Ifindex != before.Ifindex, "same ifindex"
	})
	waitWGMesh(t, l, nodes)
	checkWGLinks(t, l, nodes[0])
	pingMesh(t, l, pods)
	t.Logf("flannel-wg deleted by hand on node 1: recreated with its peers within %v", time.Since(start).Round(time.Millisecond))
}

// A node switched from wireguard to vxlan removes at start what wireguard left beside its
// devices: the blackholes beneath the networks, which would drop traffic to the networks'
// unleased addresses. The pods made under wireguard ping each other over vxlan.
func TestWireguardToVXLANRemovesBlackholes(t *testing.T) {
	needWG(t)
	l := newLab(t, "wgvx", 2, withWireguard)
	startAll(t, l, lab.NetConfig(lab.DualStack, `{"Type":"wireguard"}`))
	blackholes := func(i int) string {
		t.Helper()
		var out string
		for _, fam := range []string{"-4", "-6"} {
			o, err := l.Exec(l.NodeNS(i), "ip", fam, "route", "show", "type", "blackhole")
			if err != nil {
				t.Fatal(err)
			}
			out += o
		}
		return strings.TrimSpace(out)
	}
	for i := 1; i <= l.Nodes(); i++ {
		for _, want := range []string{"blackhole 10.5.0.0/16 metric 1000000", "blackhole 2001:db8:1000::/56 dev lo metric 1000000"} {
			if got := blackholes(i); !strings.Contains(got, want) {
				t.Fatalf("node %d under wireguard: blackholes\n%s\nlack %q", i, got, want)
			}
		}
	}
	pods := addPods(t, l)
	pingMesh(t, l, pods)

	for i := 1; i <= l.Nodes(); i++ {
		if err := l.StopFlanneld(i); err != nil {
			t.Fatal(err)
		}
	}
	startAll(t, l, dualStackConfig)
	for i := 1; i <= l.Nodes(); i++ {
		if got := blackholes(i); got != "" {
			t.Errorf("node %d under vxlan: blackholes left\n%s", i, got)
		}
	}
	waitFullMesh(t, l, "flannel.1", infos(t, l, "flannel.1"))
	waitFullMesh(t, l, "flannel-v6.1", infos(t, l, "flannel-v6.1"))
	pingMesh(t, l, pods)
}

// A node switched from host-gw to wireguard removes host-gw's routes to its peers through
// eth0: more specific than the networks' routes through the devices, they would carry pod
// traffic in the clear. After the switch the pods made under host-gw ping each other and
// the underlay carries only WireGuard datagrams; such a route added later goes too.
func TestWireguardFromHostGWRemovesPeerRoutes(t *testing.T) {
	needWG(t)
	l := newLab(t, "wghg", 2, withWireguard)
	startAll(t, l, lab.NetConfig(lab.DualStack, `{"Type":"host-gw"}`))
	// viaEth0 lists node i's routes into the pod networks through eth0, both families.
	viaEth0 := func(i int) []string {
		t.Helper()
		var out []string
		for _, list := range []func(context.Context, string) ([]lab.Route, error){lab.Routes, lab.Routes6} {
			rs, err := list(context.Background(), l.NodeNS(i))
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rs {
				dst, err := netip.ParsePrefix(r.Dst)
				if err != nil || r.Dev != "eth0" {
					continue
				}
				for _, n := range []netip.Prefix{lab.PodNetwork, lab.PodNetworkIPv6} {
					if n.Contains(dst.Addr()) && dst.Bits() >= n.Bits() {
						out = append(out, r.Dst+" via "+r.Gateway)
					}
				}
			}
		}
		return out
	}
	for i := 1; i <= l.Nodes(); i++ {
		waitFor(t, convergeTimeout, fmt.Sprintf("node %d under host-gw: a route per family to the peer through eth0", i), func() (bool, string) {
			got := viaEth0(i)
			return len(got) == 2, fmt.Sprint(got)
		})
	}
	pods := addPods(t, l)
	pingMesh(t, l, pods)

	for i := 1; i <= l.Nodes(); i++ {
		if err := l.StopFlanneld(i); err != nil {
			t.Fatal(err)
		}
		if got := viaEth0(i); len(got) != 2 {
			t.Fatalf("node %d: host-gw's routes through eth0 did not outlive its daemon: %v", i, got)
		}
	}
	startAll(t, l, wgDualConfig)
	for i := 1; i <= l.Nodes(); i++ {
		waitFor(t, convergeTimeout, fmt.Sprintf("node %d under wireguard: no route into the pod networks through eth0", i), func() (bool, string) {
			got := viaEth0(i)
			return len(got) == 0, fmt.Sprint(got)
		})
	}
	waitWGMesh(t, l, wgNodes(t, l))
	pingMesh(t, l, pods)
	onlyWireguardOnUnderlay(t, l, pods)

	// one put back by hand goes too
	if _, err := l.Exec(l.NodeNS(1), "ip", "route", "add", envSubnet(t, l, 2).String(), "via", l.NodeIP(2).String(), "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, convergeTimeout, "node 1: the route through eth0 added by hand removed", func() (bool, string) {
		got := viaEth0(1)
		return len(got) == 0, fmt.Sprint(got)
	})
}

// capture is a tcpdump of a node's eth0.
type capture struct {
	cmd *exec.Cmd
	out *strings.Builder
}

func startCapture(t *testing.T, l *lab.Lab, i int) *capture {
	t.Helper()
	c := &capture{out: &strings.Builder{}}
	c.cmd = exec.Command("ip", "netns", "exec", l.NodeNS(i), "tcpdump", "-i", "eth0", "-n", "-l", "-q", "ip or ip6")
	c.cmd.Stdout = c.out
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // listening
	return c
}

func (c *capture) stop() []string {
	time.Sleep(300 * time.Millisecond)
	_ = c.cmd.Process.Signal(os.Interrupt)
	_ = c.cmd.Wait()
	return strings.Split(strings.TrimSpace(c.out.String()), "\n")
}

// kernelWireguardMissing says why the kernel's WireGuard cannot be used here ("" when it
// can): it tries to create a wireguard link in a throwaway namespace.
func kernelWireguardMissing(t *testing.T) string {
	t.Helper()
	needRoot(t)
	ns := lab.UniqueName(labFamily, "wgprobe")
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v %s", ns, err, out)
	}
	defer func() { _ = exec.Command("ip", "netns", "del", ns).Run() }()
	out, err := exec.Command("ip", "-n", ns, "link", "add", "wgprobe", "type", "wireguard").CombinedOutput()
	if err != nil {
		return fmt.Sprintf("the kernel has no WireGuard (ip link add type wireguard: %v: %s); the kernel path is tested where the wireguard module exists",
			err, strings.TrimSpace(string(out)))
	}
	return ""
}

// The kernel path, where the kernel has WireGuard (skipped otherwise, in CI too): forced
// kernel devices; a daemon killed with -9, or stopped, and started again adopts
// flannel-wg with its peers and sessions, so no ping is lost and nothing is rewritten.
func TestWireguardKernelHitlessRestart(t *testing.T) {
	if why := kernelWireguardMissing(t); why != "" {
		t.Skip(why)
	}
	testRestartHitless(t, "rswg", `{"Network":"10.5.0.0/16","Backend":{"Type":"wireguard","Implementation":"kernel"}}`, "flannel-wg")
}

// A cluster of our nodes and upstream's, where the kernel has WireGuard (upstream needs
// it; skipped otherwise) and upstream's flanneld is at hand ($FLANNEL_TEST_UPSTREAM,
// the path `make flanneld-upstream` prints): node 2 runs upstream's, nodes 1 and 3 ours;
// their leases have one shape and their pods ping each other.
func TestWireguardMixedWithUpstream(t *testing.T) {
	if why := kernelWireguardMissing(t); why != "" {
		t.Skip(why)
	}
	upstream := os.Getenv("FLANNEL_TEST_UPSTREAM")
	if upstream == "" {
		t.Skip("set FLANNEL_TEST_UPSTREAM to upstream's flanneld (make flanneld-upstream prints its path)")
	}
	l := newLab(t, "wgmix", 3)
	if err := l.PutConfig(context.Background(), `{"Network":"10.5.0.0/16","Backend":{"Type":"wireguard"}}`); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		var err error
		if i == 2 {
			err = l.StartFlanneldBin(i, upstream, []string{"WIREGUARD_KEY_FILE=" + filepath.Join(l.NodeDir(i), "wgkey")})
		} else {
			err = l.StartFlanneld(i)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 3; i++ {
		if _, err := l.WaitSubnetEnv(i, startTimeout); err != nil {
			t.Fatal(err)
		}
	}
	nodes := wgNodes(t, l)
	checkLeases(t, l, func(i int) (string, string) {
		n := nodes[i-1]
		return fmt.Sprintf("%s-24", n.subnet.Addr()),
			fmt.Sprintf(`{"PublicIP":"%s","PublicIPv6":null,"BackendType":"wireguard","BackendData":{"PublicKey":"%s","Port":51820}}`, l.NodeIP(i), n.pub)
	})
	pods := addPods(t, l)
	pingMesh(t, l, pods)
}

// The admission rule for wireguard leases in the lab: a lease with a malformed public key
// and a younger lease that advertises node 2's public key (an impostor with its own
// endpoint) are rejected and counted on every node (bad_backend_data; duplicate_key
// where node 2 is a peer), no device takes the impostor's endpoint or subnet, and the pods
// keep talking.
func TestWireguardHostileLeases(t *testing.T) {
	needWG(t)
	l := newLab(t, "wgbad", 3, withWireguard)
	startAll(t, l, wgDualConfig, fmt.Sprintf("--healthz-port=%d", healthzPort))
	nodes := wgNodes(t, l)
	waitWGMesh(t, l, nodes)
	pods := addPods(t, l)
	pingMesh(t, l, pods)
	base := map[int]map[string]float64{}
	for i := 1; i <= 3; i++ {
		r, err := rejected(l, i)
		if err != nil {
			t.Fatal(err)
		}
		base[i] = r
	}
	used := map[byte]bool{}
	for _, n := range nodes {
		used[n.subnet.Addr().As4()[2]] = true
	}
	var free []byte
	for x := byte(200); len(free) < 2; x++ {
		if !used[x] {
			free = append(free, x)
		}
	}
	value := func(pub, key string) string {
		return fmt.Sprintf(`{"PublicIP":%q,"PublicIPv6":null,"BackendType":"wireguard","BackendData":{"PublicKey":%q,"Port":51820}}`, pub, key)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i, v := range []string{value("192.0.2.201", "AAAA"), value("192.0.2.202", nodes[1].pub)} {
		k := fmt.Sprintf("%s/subnets/10.5.%d.0-24", l.EtcdPrefix(), free[i])
		if _, err := l.Etcd().Put(ctx, k, v); err != nil {
			t.Fatalf("put %s: %v", k, err)
		}
	}
	for i := 1; i <= 3; i++ {
		want := map[string]int{"bad_backend_data": 1, "duplicate_key": 1}
		if i == 2 {
			want["duplicate_key"] = 0 // its own key: the backend skips the lease, not the rule
		}
		waitRejected(t, l, i, base[i], want)
	}
	waitWGMesh(t, l, nodes) // the peers are exactly the three nodes, with their endpoints
	pingMesh(t, l, pods)
}

// Implementation kernel on a kernel without WireGuard is a clear start-up error: the
// daemon exits non-zero naming the fix, and writes no lease.
func TestWireguardForcedKernelWithoutModule(t *testing.T) {
	if why := kernelWireguardMissing(t); why == "" {
		t.Skip("the kernel has WireGuard here")
	}
	l := newLab(t, "wgnok", 1, withWireguard)
	if err := l.PutConfig(context.Background(), `{"Network":"10.5.0.0/16","Backend":{"Type":"wireguard","Implementation":"kernel"}}`); err != nil {
		t.Fatal(err)
	}
	if err := l.StartFlanneld(1); err != nil {
		t.Fatal(err)
	}
	code, err := l.WaitExit(1, startTimeout)
	if err != nil {
		t.Fatal(err)
	}
	log := l.LogTail(1, 20)
	if code == 0 || !strings.Contains(log, "Implementation is kernel, but create flannel-wg: the kernel has no WireGuard") ||
		!strings.Contains(log, "modprobe wireguard") {
		t.Errorf("exit %d, log:\n%s", code, log)
	}
	resp, err := l.Etcd().Get(context.Background(), l.EtcdPrefix()+"/subnets/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 0 {
		t.Errorf("%d leases written by a daemon that could not start its backend", resp.Count)
	}
}

// startKubeWireguard starts a Kubernetes-mode wireguard cluster of n nodes (userspace
// devices, each node its own /run/wireguard), node i with pod CIDR 10.244.i.0/24, and
// waits for every node's subnet.env.
func startKubeWireguard(t *testing.T, tag string, n int) *kubeLab {
	t.Helper()
	needWG(t)
	k := newKubeLab(t, tag, n, func(o *lab.Options) { o.OwnWireguardDir = true })
	if err := os.WriteFile(k.netConf, []byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		k.registerNode(t, i, fmt.Sprintf("10.244.%d.0/24", i))
		k.start(t, i)
	}
	for i := 1; i <= n; i++ {
		if _, err := k.WaitSubnetEnv(i, startTimeout); err != nil {
			t.Fatal(err)
		}
	}
	return k
}

// Kubernetes mode: the node annotations carry the wireguard backend data as upstream
// writes it, and a rotated key is advertised by patching them: the peer takes the new
// key and the pods keep talking.
func TestKubeWireguardKeyRotation(t *testing.T) {
	k := startKubeWireguard(t, "kubewg", 2)
	annotated := func(i int, pub string) {
		t.Helper()
		want := map[string]string{
			"flannel.alpha.coreos.com/backend-type": "wireguard",
			"flannel.alpha.coreos.com/backend-data": fmt.Sprintf(`{"PublicKey":"%s","Port":51820}`, pub),
			"flannel.alpha.coreos.com/public-ip":    k.NodeIP(i).String(),
		}
		waitFor(t, convergeTimeout, fmt.Sprintf("node %d's annotations", i), func() (bool, string) {
			ann := k.node(t, i).Annotations
			for key, v := range want {
				if ann[key] != v {
					return false, fmt.Sprintf("%s = %q, want %q", key, ann[key], v)
				}
			}
			return true, ""
		})
	}
	_, pub1 := wgKeys(t, k.Lab, 1)
	_, pub2 := wgKeys(t, k.Lab, 2)
	annotated(1, pub1)
	annotated(2, pub2)
	pods := addPods(t, k.Lab)
	pingMesh(t, k.Lab, pods)

	rotated := rotateKey(t, k.Lab, 2)
	annotated(2, rotated.pub)
	waitFor(t, convergeTimeout, "node 1 holds node 2's new key", func() (bool, string) {
		peers, err := wgPeers(k.Lab, 1, "flannel-wg")
		if err != nil {
			return false, err.Error()
		}
		_, ok := peers[rotated.pub]
		return ok && len(peers) == 1, fmt.Sprintf("peers %v", peers)
	})
	pingMesh(t, k.Lab, pods)
}
