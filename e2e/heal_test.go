package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flannel-go/flannel/e2e/lab"
)

// Self-healing: kernel state the daemon owns, changed or removed by
// hand, is restored from the lease set, prompted by a netlink notification rather than
// the 30 s safety-net resync; state on our devices (or host-gw routes inside the
// Network) that no lease explains is removed; pods ping again afterwards. The timeouts
// are generous; heal latencies are logged here and measured by make bench-heal.

// healTimeout bounds each wait for a repair. It is long on purpose (a busy 2-core
// machine); that the repair came from a kernel notification is checked in the log.
const healTimeout = 30 * time.Second

// kernelKick is what flanneld (-v=2) logs when a kernel notification makes it reconcile.
const kernelKick = "Kernel change; reconciling"

// logSize is the current size of node i's flanneld log, to look only at what follows.
func logSize(t *testing.T, l *lab.Lab, i int) int64 {
	t.Helper()
	st, err := os.Stat(l.LogPath(i))
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// logSince is node i's flanneld log from byte off on.
func logSince(t *testing.T, l *lab.Lab, i int, off int64) string {
	t.Helper()
	b, err := os.ReadFile(l.LogPath(i))
	if err != nil {
		t.Fatal(err)
	}
	if off > int64(len(b)) {
		off = 0
	}
	return string(b[off:])
}

// fault runs the commands that break something on node i, waits until healed reports
// the state restored, checks that a kernel notification prompted the repair and logs
// how long the repair took.
func fault(t *testing.T, l *lab.Lab, i int, what string, cmds [][]string, healed func() (bool, string)) {
	t.Helper()
	off := logSize(t, l, i)
	for _, c := range cmds {
		if out, err := l.Exec(l.NodeNS(i), c...); err != nil {
			t.Fatalf("%s: %s: %v %s", what, strings.Join(c, " "), err, out)
		}
	}
	start := time.Now()
	deadline := start.Add(healTimeout)
	for {
		ok, why := healed()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not healed after %v: %s", what, healTimeout, why)
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(start)
	if log := logSince(t, l, i, off); !strings.Contains(log, kernelKick) {
		t.Errorf("%s: healed after %v but flanneld did not log %q: the repair did not come from the kernel watch", what, took, kernelKick)
	}
	t.Logf("%s: healed after %v", what, took.Round(time.Millisecond))
}

// quiet checks that node i's flanneld does not keep reconciling by itself (its own
// writes must not wake it over and over): at most one round (a periodic resync may fall
// into the window) in 5 s of rest.
func quiet(t *testing.T, l *lab.Lab, i int) {
	t.Helper()
	time.Sleep(time.Second) // the echo of the last repair settles
	off := logSize(t, l, i)
	time.Sleep(5 * time.Second)
	log := logSince(t, l, i, off)
	if n := strings.Count(log, `"Reconciled"`); n > 1 {
		t.Errorf("node %d reconciled %d times in 5 s at rest (a reconcile storm?):\n%s", i, n, log)
	}
}

func pingPods(t *testing.T, l *lab.Lab, pods []lab.Pod, what string) {
	t.Helper()
	for _, from := range pods {
		for _, to := range pods {
			if from.Node == to.Node {
				continue
			}
			if err := l.Ping(from.NS, to.IP); err != nil {
				t.Fatalf("after %s: pod on node %d -> pod on node %d: %v", what, from.Node, to.Node, err)
			}
		}
	}
}

// routeState lists node i's main-table routes to dst as "via <gw> dev <dev>" strings.
func routeState(l *lab.Lab, i int, dst string) []string {
	routes, err := lab.Routes(context.Background(), l.NodeNS(i))
	if err != nil {
		return []string{err.Error()}
	}
	var out []string
	for _, r := range routes {
		if r.Dst == dst {
			out = append(out, fmt.Sprintf("via %s dev %s", r.Gateway, r.Dev))
		}
	}
	return out
}

// freeSubnet is a /24 inside the lab network that no node leased.
func freeSubnet(leased ...netip.Prefix) netip.Prefix {
	for b := 250; b > 0; b-- {
		sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 5, byte(b), 0}), 24)
		if !slices.Contains(leased, sn) {
			return sn
		}
	}
	panic("no free subnet")
}

func TestHealVXLAN(t *testing.T) {
	l := newLab(t, "healvx", 2)
	startAll(t, l, vxlanConfig)
	ns := infos(t, l, "flannel.1")
	waitFullMesh(t, l, "flannel.1", ns)
	pods := addPods(t, l)
	pingPods(t, l, pods, "start-up")
	quiet(t, l, 1)

	n1, p2 := ns[0], peerOf(l, ns[1])
	gw := p2.subnet.Addr().String()
	intact := func() (bool, string) {
		arp, fdb, route, err := peerState(l.NodeNS(1), "flannel.1", p2)
		if err != nil {
			return false, err.Error()
		}
		return arp && fdb && route, fmt.Sprintf("arp=%v fdb=%v route=%v", arp, fdb, route)
	}
	device := func(want func(k *lab.Link) (bool, string)) func() (bool, string) {
		return func() (bool, string) {
			k, err := lab.GetLink(context.Background(), l.NodeNS(1), "flannel.1")
			if err != nil {
				return false, err.Error()
			}
			return want(k)
		}
	}
	ownAddr := n1.subnet.Addr().String() + "/32"

	fault(t, l, 1, "peer route deleted", [][]string{{"ip", "route", "del", p2.subnet.String()}}, intact)
	pingPods(t, l, pods, "route deleted")
	fault(t, l, 1, "neighbour deleted", [][]string{{"ip", "neigh", "del", gw, "dev", "flannel.1"}}, intact)
	fault(t, l, 1, "FDB entry deleted", [][]string{{"bridge", "fdb", "del", p2.mac, "dev", "flannel.1", "dst", p2.public.String()}}, intact)
	pingPods(t, l, pods, "neighbour and FDB entry deleted")
	fault(t, l, 1, "neighbour changed", [][]string{{"ip", "neigh", "replace", gw, "lladdr", "02:00:00:00:00:99", "dev", "flannel.1", "nud", "permanent"}}, intact)
	fault(t, l, 1, "FDB entry changed", [][]string{{"bridge", "fdb", "replace", p2.mac, "dev", "flannel.1", "dst", "192.0.2.99", "self", "permanent"}}, intact)
	fault(t, l, 1, "route changed", [][]string{{"ip", "route", "replace", p2.subnet.String(), "via", "192.0.2.1", "dev", "eth0"}}, func() (bool, string) {
		ok, why := intact()
		rs := routeState(l, 1, p2.subnet.String())
		return ok && len(rs) == 1, fmt.Sprintf("%s routes=%v", why, rs)
	})
	pingPods(t, l, pods, "entries changed")

	// When the kernel has nexthop objects the peer route goes through one; deleting it
	// takes the route with it.
	var rs []struct {
		NHID int `json:"nhid"`
	}
	if out, err := l.Exec(l.NodeNS(1), "ip", "-j", "route", "show", p2.subnet.String()); err != nil {
		t.Fatalf("ip route show: %v", err)
	} else if err := json.Unmarshal([]byte(out), &rs); err != nil {
		t.Fatalf("ip -j route show %s: %v: %s", p2.subnet, err, out)
	}
	if len(rs) == 1 && rs[0].NHID != 0 {
		fault(t, l, 1, "nexthop object deleted", [][]string{{"ip", "nexthop", "del", "id", strconv.Itoa(rs[0].NHID)}}, intact)
		pingPods(t, l, pods, "nexthop deleted")
	} else {
		t.Logf("the peer route uses no nexthop object (%+v): no nexthop fault", rs)
	}

	fault(t, l, 1, "address changed", [][]string{
		{"ip", "addr", "del", ownAddr, "dev", "flannel.1"},
		{"ip", "addr", "add", "10.5.253.7/32", "dev", "flannel.1"},
	}, device(func(k *lab.Link) (bool, string) {
		return slices.Equal(k.IPv4Addrs(), []string{ownAddr}), fmt.Sprintf("addresses %v, want [%s]", k.IPv4Addrs(), ownAddr)
	}))
	fault(t, l, 1, "device MTU changed and set down", [][]string{
		{"ip", "link", "set", "flannel.1", "mtu", "1300"},
		{"ip", "link", "set", "flannel.1", "down"},
	}, func() (bool, string) {
		okDev, why := device(func(k *lab.Link) (bool, string) {
			return k.MTU == 1450 && k.IsUp(), fmt.Sprintf("mtu %d up %v", k.MTU, k.IsUp())
		})()
		okPeer, whyPeer := intact() // down flushed the routes through it
		return okDev && okPeer, why + " " + whyPeer
	})
	pingPods(t, l, pods, "device changed")

	// An attribute netlink cannot set back in place: the device is recreated, with its MAC.
	fault(t, l, 1, "device attribute changed (learning on)", [][]string{{"ip", "link", "set", "flannel.1", "type", "vxlan", "learning"}}, func() (bool, string) {
		okDev, why := device(func(k *lab.Link) (bool, string) {
			return k.VXLAN != nil && !k.VXLAN.Learning && strings.EqualFold(k.Address, n1.mac) && slices.Equal(k.IPv4Addrs(), []string{ownAddr}),
				fmt.Sprintf("vxlan %+v mac %s (want nolearning, %s) addrs %v", k.VXLAN, k.Address, n1.mac, k.IPv4Addrs())
		})()
		if !okDev {
			return false, why
		}
		return intact()
	})
	pingPods(t, l, pods, "device attribute changed")

	fault(t, l, 1, "device deleted", [][]string{{"ip", "link", "del", "flannel.1"}}, func() (bool, string) {
		okDev, why := device(func(k *lab.Link) (bool, string) {
			return k.IsUp() && k.MTU == 1450 && strings.EqualFold(k.Address, n1.mac) && slices.Equal(k.IPv4Addrs(), []string{ownAddr}),
				fmt.Sprintf("up %v mtu %d mac %s (want %s) addrs %v", k.IsUp(), k.MTU, k.Address, n1.mac, k.IPv4Addrs())
		})()
		if !okDev {
			return false, why
		}
		return intact()
	})
	pingPods(t, l, pods, "device deleted")

	// Ownership: entries on flannel.1 and routes inside the Network on eth0 that no lease
	// explains go; a route outside the Network and cni0's own subnet route stay.
	stale := freeSubnet(ns[0].subnet, ns[1].subnet)
	staleGw := stale.Addr().String()
	other := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 5, stale.Addr().As4()[2] - 1, 0}), 24)
	// static entries of the other kinds: "nud noarp" neighbours, "static" FDB entries
	stale2 := freeSubnet(ns[0].subnet, ns[1].subnet, stale, other)
	fault(t, l, 1, "stale entries added", [][]string{
		{"ip", "neigh", "add", staleGw, "lladdr", "02:00:00:00:00:fa", "dev", "flannel.1"},
		{"bridge", "fdb", "add", "02:00:00:00:00:fa", "dev", "flannel.1", "dst", "192.0.2.250"},
		{"ip", "neigh", "add", stale2.Addr().String(), "lladdr", "02:00:00:00:00:fb", "dev", "flannel.1", "nud", "noarp"},
		{"bridge", "fdb", "add", "02:00:00:00:00:fb", "dev", "flannel.1", "dst", "192.0.2.251", "static"},
		{"ip", "route", "add", stale.String(), "via", staleGw, "dev", "flannel.1", "onlink"},
		{"ip", "route", "add", other.String(), "via", "192.0.2.1", "dev", "eth0"},
		{"ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.1", "dev", "eth0"},
	}, func() (bool, string) {
		left, what, err := anyTrace(l.NodeNS(1), "flannel.1", peer{subnet: stale, mac: "02:00:00:00:00:fa"})
		if err != nil {
			return false, err.Error()
		}
		if left {
			return false, "still there: " + what
		}
		left, what, err = anyTrace(l.NodeNS(1), "flannel.1", peer{subnet: stale2, mac: "02:00:00:00:00:fb"})
		if err != nil {
			return false, err.Error()
		}
		if rs := routeState(l, 1, other.String()); len(rs) > 0 {
			return false, fmt.Sprintf("route to %s still there: %v", other, rs)
		}
		return !left, "still there: " + what
	})
	if rs := routeState(l, 1, "198.51.100.0/24"); len(rs) != 1 {
		t.Errorf("the route outside the Network was touched: %v", rs)
	}
	if rs := routeState(l, 1, n1.subnet.String()); !slices.Contains(rs, "via  dev cni0") {
		t.Errorf("cni0's own subnet route is gone: %v", rs)
	}
	ok, why := intact()
	if !ok {
		t.Errorf("the peer's entries changed while stale ones were removed: %s", why)
	}
	pingPods(t, l, pods, "stale entries removed")
	quiet(t, l, 1)
}

func TestHealHostGW(t *testing.T) {
	l := newLab(t, "healhg", 2)
	startAll(t, l, hostgwConfig)
	s1, s2 := envSubnet(t, l, 1), envSubnet(t, l, 2)
	want := "via " + l.NodeIP(2).String() + " dev eth0"
	intact := func() (bool, string) {
		rs := routeState(l, 1, s2.String())
		return slices.Equal(rs, []string{want}), fmt.Sprintf("routes to %s: %v, want [%s]", s2, rs, want)
	}
	waitFor(t, convergeTimeout, "node 1's route to node 2", intact)
	pods := addPods(t, l)
	pingPods(t, l, pods, "start-up")
	quiet(t, l, 1)

	fault(t, l, 1, "peer route deleted", [][]string{{"ip", "route", "del", s2.String()}}, intact)
	pingPods(t, l, pods, "route deleted")
	fault(t, l, 1, "peer route changed", [][]string{{"ip", "route", "replace", s2.String(), "via", "192.0.2.1", "dev", "eth0"}}, intact)
	pingPods(t, l, pods, "route changed")

	stale := freeSubnet(s1, s2)
	fault(t, l, 1, "stale route added", [][]string{
		{"ip", "route", "add", stale.String(), "via", "192.0.2.1", "dev", "eth0"},
		{"ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.1", "dev", "eth0"},
	}, func() (bool, string) {
		rs := routeState(l, 1, stale.String())
		return len(rs) == 0, fmt.Sprintf("routes to %s: %v", stale, rs)
	})
	if rs := routeState(l, 1, "198.51.100.0/24"); len(rs) != 1 {
		t.Errorf("the route outside the Network was touched: %v", rs)
	}
	if rs := routeState(l, 1, s1.String()); !slices.Contains(rs, "via  dev cni0") {
		t.Errorf("cni0's own subnet route is gone: %v", rs)
	}
	if ok, why := intact(); !ok {
		t.Errorf("the peer route changed while the stale one was removed: %s", why)
	}

	// Taking eth0 down flushes the routes through it without a route notification; the
	// link notification brings them back once it is up again.
	fault(t, l, 1, "external interface down and up", [][]string{
		{"ip", "link", "set", "eth0", "down"},
		{"ip", "link", "set", "eth0", "up"},
	}, intact)
	pingPods(t, l, pods, "external interface down and up")
	quiet(t, l, 1)
}

func TestHealUDP(t *testing.T) {
	l := newLab(t, "healudp", 2)
	startAll(t, l, noBackendConfig)
	s1, s2 := envSubnet(t, l, 1), envSubnet(t, l, 2)
	ownAddr := s1.Addr().String() + "/32"
	intact := func() (bool, string) {
		k, err := lab.GetLink(context.Background(), l.NodeNS(1), "flannel0")
		if err != nil {
			return false, err.Error()
		}
		rs := routeState(l, 1, labNetwork.String())
		return k.IsUp() && k.MTU == 1472 && slices.Equal(k.IPv4Addrs(), []string{ownAddr}) && slices.Equal(rs, []string{"via  dev flannel0"}),
			fmt.Sprintf("up %v mtu %d addrs %v routes %v", k.IsUp(), k.MTU, k.IPv4Addrs(), rs)
	}
	waitFor(t, convergeTimeout, "node 1's flannel0", intact)
	pods := addPods(t, l)
	pingPods(t, l, pods, "start-up")
	quiet(t, l, 1)

	fault(t, l, 1, "network route deleted", [][]string{{"ip", "route", "del", labNetwork.String(), "dev", "flannel0"}}, intact)
	pingPods(t, l, pods, "route deleted")
	fault(t, l, 1, "address changed", [][]string{
		{"ip", "addr", "del", ownAddr, "dev", "flannel0"},
		{"ip", "addr", "add", "10.5.253.7/32", "dev", "flannel0"},
	}, intact)
	fault(t, l, 1, "MTU changed and set down", [][]string{
		{"ip", "link", "set", "flannel0", "mtu", "1300"},
		{"ip", "link", "set", "flannel0", "down"},
	}, intact)
	pingPods(t, l, pods, "device changed")

	stale := freeSubnet(s1, s2)
	fault(t, l, 1, "stale route added", [][]string{{"ip", "route", "add", stale.String(), "dev", "flannel0"}}, func() (bool, string) {
		rs := routeState(l, 1, stale.String())
		return len(rs) == 0, fmt.Sprintf("routes to %s: %v", stale, rs)
	})

	fault(t, l, 1, "device deleted", [][]string{{"ip", "link", "del", "flannel0"}}, intact)
	pingPods(t, l, pods, "device deleted")
	quiet(t, l, 1)
}

// Someone who keeps deleting a route flannel.1 needs: flanneld repairs it a few times,
// then backs off exponentially and logs the object once, instead of fighting in a loop
// (without back-off every deletion would be repaired within milliseconds, over a
// hundred rounds in the 8 s below). Once the fight stops, the route comes back.
func TestHealBacksOffWhenFought(t *testing.T) {
	l := newLab(t, "healfight", 2)
	startAll(t, l, vxlanConfig)
	ns := infos(t, l, "flannel.1")
	waitFullMesh(t, l, "flannel.1", ns)
	p2 := peerOf(l, ns[1])
	off := logSize(t, l, 1)

	script := fmt.Sprintf(`n=0; end=$(( $(date +%%s) + 8 ))
while [ "$(date +%%s)" -lt "$end" ]; do
  ip route del %s 2>/dev/null && n=$((n+1))
  sleep 0.05
done
echo "$n"`, p2.subnet)
	out, err := l.Exec(l.NodeNS(1), "sh", "-c", script)
	if err != nil {
		t.Fatalf("fight: %v %s", err, out)
	}
	var deletions int
	if _, err := fmt.Sscan(strings.TrimSpace(out), &deletions); err != nil {
		t.Fatalf("fight output %q: %v", out, err)
	}
	t.Logf("the route was deleted (so repaired before) %d times in 8 s", deletions)
	if deletions < 2 {
		t.Errorf("only %d deletions: flanneld did not repair the route while fought", deletions)
	}
	if deletions > 40 {
		t.Errorf("%d deletions in 8 s: flanneld kept fighting instead of backing off", deletions)
	}
	log := logSince(t, l, 1, off)
	want := fmt.Sprintf(`object="route %s dev flannel.1"`, p2.subnet)
	backoffLines := 0
	for _, ln := range strings.Split(log, "\n") {
		if strings.Contains(ln, "keeps being changed by someone else") && strings.Contains(ln, want) {
			backoffLines++
		}
	}
	if backoffLines != 1 {
		t.Errorf("%d back-off log lines naming %s, want exactly 1:\n%s", backoffLines, want, log)
	}
	waitFor(t, 45*time.Second, "the route back after the fight", func() (bool, string) {
		arp, fdb, route, err := peerState(l.NodeNS(1), "flannel.1", p2)
		if err != nil {
			return false, err.Error()
		}
		return arp && fdb && route, fmt.Sprintf("arp=%v fdb=%v route=%v", arp, fdb, route)
	})
	pods := addPods(t, l)
	pingPods(t, l, pods, "the fight")
}
