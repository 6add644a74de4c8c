// Command benchheal measures how fast flanneld restores the kernel state it owns after a
// fault on node 1, per backend and fault kind, polling every 2 ms from the fault's start;
// pauses keep flanneld's back-off out of it. A fault not healed within -limit is undone.
//
//	sudo make bench-heal    # or: sudo go run ./e2e/cmd/benchheal -runs 5 -upstream build
package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/flannel-go/flannel/e2e/benchkit"
	"github.com/flannel-go/flannel/e2e/lab"
	"github.com/flannel-go/flannel/pkg/netlinkx"
)

const family = "fgbheal"

const target = time.Second

// scene is what the faults of one backend work on, read from node 1 after start-up.
type scene struct {
	h       *netlink.Handle
	dev     string       // our device ("" for host-gw)
	own     netip.Prefix // node 1's subnet
	peer    netip.Prefix // node 2's subnet
	peerPub netip.Addr   // node 2's public address
	peerMAC net.HardwareAddr
	ext     int // eth0's index
	stale   netip.Prefix
	network netip.Prefix
	deleted int // index of the device a fault deleted
	// wireguard: node 1's device's UAPI socket and node 2's public key
	uapi    string
	peerKey wgtypes.Key
}

type faultKind struct {
	name   string
	inject func(s *scene) error
	healed func(s *scene) (bool, error)
}

func main() {
	var o options
	flag.IntVar(&o.runs, "runs", 3, "injections per fault (the median is reported)")
	flag.DurationVar(&o.pause, "pause", 11*time.Second, "pause between fault kinds (longer than flanneld's 10 s back-off window; upstream has none and gets no pause)")
	flag.DurationVar(&o.limit, "limit", 15*time.Second, "a fault not healed after this long is reported as not healed within it, and not injected again (upstream checks host-gw routes every 10 s)")
	o.Define("after ours, in a lab of its own per backend")
	only := flag.String("backends", "vxlan,host-gw,udp,wireguard", "backends to measure, comma-separated")
	flag.Parse()
	o.backends = strings.Split(*only, ",")
	benchkit.Main("benchheal", "bench-heal", func(ctx context.Context) error { return run(ctx, o) })
}

type options struct {
	benchkit.Flags
	runs         int
	pause, limit time.Duration
	backends     []string
}

func run(ctx context.Context, o options) error {
	if o.runs < 1 {
		return errors.New("-runs must be at least 1")
	}
	work, err := os.MkdirTemp("", "fgbheal-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	daemons, err := o.Daemons(ctx, work)
	if err != nil {
		return err
	}
	_ = lab.Sweep(family)
	rep := benchkit.NewReport("heal", "kernel state: time from a fault until the state reads back whole", "go run ./e2e/cmd/benchheal")
	rep.SetDaemons(daemons)
	fmt.Printf("kernel state healing: time from a fault until the state reads back whole, median of %d (target <= %v); %s\n",
		o.runs, target, rep.Machine)
	for _, be := range o.backends {
		be = strings.TrimSpace(be)
		for _, d := range daemons {
			if err := benchBackend(ctx, rep, be, d, o, filepath.Join(work, d.Name, be)); err != nil {
				return fmt.Errorf("%s, %s: %w", d.Name, be, err)
			}
		}
	}
	rep.Note("a fault not healed within %v counts as not within it and is not injected again; it is undone by restarting the daemon (its device, the stale route and the peer route removed first)", o.limit)
	if len(daemons) > 1 {
		rep.Note("the %v pause between fault kinds (longer than our back-off window) is left out for upstream, which has no back-off", o.pause)
	}
	err = o.Finish(os.Stdout, rep)
	missed := 0
	for _, res := range rep.Results {
		if met, ok := res.Met(); ok && !met {
			missed++
		}
	}
	if missed > 0 {
		fmt.Printf("%d fault kinds missed the %v target\n", missed, target)
	}
	return err
}

func benchBackend(ctx context.Context, rep *benchkit.Report, be string, d benchkit.Daemon, o options, dir string) error {
	var cfg string
	var kinds []faultKind
	switch be {
	case "vxlan":
		cfg, kinds = `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`, vxlanFaults()
	case "host-gw":
		cfg, kinds = `{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}`, hostgwFaults()
	case "udp":
		cfg, kinds = `{"Network":"10.5.0.0/16","Backend":{"Type":"udp"}}`, udpFaults()
	case "wireguard":
		if d.IsUpstream() {
			rep.Note("%s, wireguard: not measured (upstream's needs the kernel's WireGuard; ours runs userspace devices here)", d.Name)
			return nil
		}
		cfg, kinds = `{"Network":"10.5.0.0/16","Backend":{"Type":"wireguard","Implementation":"userspace"}}`, wireguardFaults()
	default:
		return fmt.Errorf("unknown backend %q", be)
	}
	tag := strings.ReplaceAll(be, "-", "")
	pause := o.pause
	if d.IsUpstream() {
		tag, pause = tag+"u", 0
	}
	l, err := lab.New(ctx, lab.Options{Name: lab.UniqueName(family, tag), Nodes: 2, WorkDir: dir, FlanneldBin: d.Bin, OwnWireguardDir: be == "wireguard"})
	if err != nil {
		return err
	}
	defer l.Close()
	if err := l.PutConfig(ctx, cfg); err != nil {
		return err
	}
	envs := make([]map[string]string, 3)
	for i := 1; i <= 2; i++ {
		if err := l.StartFlanneld(i); err != nil {
			return err
		}
	}
	for i := 1; i <= 2; i++ {
		if envs[i], err = l.WaitSubnetEnv(i, time.Minute); err != nil {
			return fmt.Errorf("%w (log tail:\n%s)", err, l.LogTail(i, 20))
		}
	}
	s, closeScene, err := newScene(l, be, envs)
	if err != nil {
		return err
	}
	defer closeScene()
	if err := waitHealed(ctx, s, kinds, time.Minute); err != nil {
		return fmt.Errorf("%w (log tail:\n%s)", err, l.LogTail(1, 20))
	}
	for ki, k := range kinds {
		if ki > 0 && pause > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(pause):
			}
		}
		res := benchkit.Result{Case: be + ": " + k.name, Metric: "time to heal", Unit: "ms", Daemon: d.Name, Limit: ms(o.limit)}
		if !d.IsUpstream() {
			res.Target = ms(target)
		}
		for r := 0; r < o.runs && res.Over == 0; r++ {
			// Time from the fault's start: a device delete returns after flanneld may have
			// recreated it.
			start := time.Now()
			if err := k.inject(s); err != nil {
				return fmt.Errorf("%s: inject: %w", k.name, err)
			}
			healed, exited := false, false
			for !healed && !exited && time.Since(start) <= o.limit {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				ok, err := k.healed(s)
				healed, exited = err == nil && ok, !l.FlanneldRunning(1)
				if !healed {
					time.Sleep(2 * time.Millisecond)
				}
			}
			if healed {
				res.Runs = append(res.Runs, ms(time.Since(start)))
				// let the echo of the repair settle
				time.Sleep(500 * time.Millisecond)
			} else {
				res.Over++
				if exited {
					rep.Note("%s, %s, %s: flanneld exited (log: %s)", d.Name, be, k.name, l.LogTail(1, 1))
				}
				if err := restore(ctx, l, s); err != nil {
					return fmt.Errorf("after %s: %w", k.name, err)
				}
			}
			// everything else must be whole too
			if err := waitHealed(ctx, s, kinds, 30*time.Second); err != nil {
				return fmt.Errorf("after %s: %w", k.name, err)
			}
		}
		rep.Add(res)
		fmt.Fprintf(os.Stderr, "benchheal: %-10s %-8s %-24s %s (%s)\n", d.Name, be, k.name, res.Cell(), res.AllRuns())
	}
	return nil
}

// restore undoes an unrepaired fault by restarting node 1's daemon on a clean kernel.
func restore(ctx context.Context, l *lab.Lab, s *scene) error {
	if l.FlanneldRunning(1) {
		if err := l.StopFlanneld(1); err != nil {
			_ = l.KillFlanneld(1)
		}
	}
	if s.dev != "" {
		if link, err := s.link(); err == nil {
			_ = s.h.LinkDel(link)
		}
	}
	for _, dst := range []netip.Prefix{s.stale, s.peer} {
		rs, _ := s.routesTo(dst)
		for _, r := range rs {
			_ = s.h.RouteDel(&r)
		}
	}
	if err := l.StartFlanneld(1); err != nil {
		return err
	}
	if _, err := l.WaitSubnetEnv(1, time.Minute); err != nil {
		return err
	}
	return ctx.Err()
}

func waitHealed(ctx context.Context, s *scene, kinds []faultKind, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var bad []string
		for _, k := range kinds {
			if ok, err := k.healed(s); !ok {
				bad = append(bad, fmt.Sprintf("%s (%v)", k.name, err))
			}
		}
		if len(bad) == 0 {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("state not whole: %s", strings.Join(bad, "; "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func newScene(l *lab.Lab, be string, envs []map[string]string) (*scene, func(), error) {
	nsh, err := netns.GetFromName(l.NodeNS(1))
	if err != nil {
		return nil, nil, err
	}
	h, err := netlink.NewHandleAt(nsh, unix.NETLINK_ROUTE)
	if err != nil {
		nsh.Close()
		return nil, nil, err
	}
	done := func() { h.Close(); nsh.Close() }
	s := &scene{h: h, network: netip.MustParsePrefix("10.5.0.0/16"), peerPub: l.NodeIP(2)}
	for i, dst := range []*netip.Prefix{&s.own, &s.peer} {
		p, err := netip.ParsePrefix(envs[i+1]["FLANNEL_SUBNET"])
		if err != nil {
			done()
			return nil, nil, fmt.Errorf("node %d FLANNEL_SUBNET: %w", i+1, err)
		}
		*dst = p.Masked()
	}
	for b := 250; ; b-- {
		sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 5, byte(b), 0}), 24)
		if sn != s.own && sn != s.peer {
			s.stale = sn
			break
		}
	}
	eth, err := h.LinkByName("eth0")
	if err != nil {
		done()
		return nil, nil, err
	}
	s.ext = eth.Attrs().Index
	switch be {
	case "vxlan":
		s.dev = "flannel.1"
		// node 2's VTEP MAC, read from node 2
		nsh2, err := netns.GetFromName(l.NodeNS(2))
		if err != nil {
			done()
			return nil, nil, err
		}
		defer nsh2.Close()
		h2, err := netlink.NewHandleAt(nsh2, unix.NETLINK_ROUTE)
		if err != nil {
			done()
			return nil, nil, err
		}
		defer h2.Close()
		dl := time.Now().Add(time.Minute)
		for {
			link, err := h2.LinkByName(s.dev)
			if err == nil {
				s.peerMAC = link.Attrs().HardwareAddr
				break
			}
			if time.Now().After(dl) {
				done()
				return nil, nil, fmt.Errorf("node 2 %s: %w", s.dev, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	case "udp":
		s.dev = "flannel0"
	case "wireguard":
		s.dev = "flannel-wg"
		s.uapi = filepath.Join(l.WireguardDir(1), "flannel-wg.sock")
		raw, err := os.ReadFile(filepath.Join(l.NodeDir(2), "wgkey"))
		if err == nil {
			var k wgtypes.Key
			if k, err = wgtypes.ParseKey(strings.TrimSpace(string(raw))); err == nil {
				s.peerKey = k.PublicKey()
			}
		}
		if err != nil {
			done()
			return nil, nil, fmt.Errorf("node 2's WireGuard key: %w", err)
		}
	}
	return s, done, nil
}

func (s *scene) link() (netlink.Link, error) { return s.h.LinkByName(s.dev) }

func (s *scene) routesTo(dst netip.Prefix) ([]netlink.Route, error) {
	return s.h.RouteListFiltered(unix.AF_INET, &netlink.Route{Dst: netlinkx.IPNet(dst), Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
}

// routeIs reports whether the only route to dst goes via gw on link index idx.
func (s *scene) routeIs(dst netip.Prefix, gw netip.Addr, idx int) (bool, error) {
	rs, err := s.routesTo(dst)
	if err != nil {
		return false, err
	}
	if len(rs) != 1 {
		return false, fmt.Errorf("%d routes to %s", len(rs), dst)
	}
	g, _ := netlinkx.Addr(rs[0].Gw)
	if rs[0].LinkIndex != idx || g != gw {
		return false, fmt.Errorf("route to %s via %v dev %d", dst, g, rs[0].LinkIndex)
	}
	return true, nil
}

func (s *scene) noRoute(dst netip.Prefix) (bool, error) {
	rs, err := s.routesTo(dst)
	if err != nil {
		return false, err
	}
	if len(rs) > 0 {
		return false, fmt.Errorf("%d routes to %s", len(rs), dst)
	}
	return true, nil
}

// vxlanPeer reports whether node 2's neighbour, FDB entry and route are on flannel.1.
func (s *scene) vxlanPeer() (bool, error) {
	l, err := s.link()
	if err != nil {
		return false, err
	}
	idx := l.Attrs().Index
	gw := s.peer.Addr()
	ns, err := s.h.NeighList(idx, unix.AF_INET)
	if err != nil {
		return false, err
	}
	if !slices.ContainsFunc(ns, func(n netlink.Neigh) bool {
		a, _ := netlinkx.Addr(n.IP)
		return a == gw && n.State&netlink.NUD_PERMANENT != 0 && slices.Equal(n.HardwareAddr, s.peerMAC)
	}) {
		return false, errors.New("neighbour missing")
	}
	fdb, err := s.h.NeighList(idx, unix.AF_BRIDGE)
	if err != nil {
		return false, err
	}
	if !slices.ContainsFunc(fdb, func(n netlink.Neigh) bool {
		a, _ := netlinkx.Addr(n.IP)
		return a == s.peerPub && n.LinkIndex == idx && slices.Equal(n.HardwareAddr, s.peerMAC)
	}) {
		return false, errors.New("fdb entry missing")
	}
	return s.routeIs(s.peer, gw, idx)
}

// device reports whether our device is up with the lease's address and the MTU.
func (s *scene) device(mtu int) (bool, error) {
	l, err := s.link()
	if err != nil {
		return false, err
	}
	if l.Attrs().MTU != mtu || l.Attrs().Flags&net.FlagUp == 0 {
		return false, fmt.Errorf("mtu %d flags %v", l.Attrs().MTU, l.Attrs().Flags)
	}
	as, err := s.h.AddrList(l, unix.AF_INET)
	if err != nil {
		return false, err
	}
	want := netip.PrefixFrom(s.own.Addr(), 32)
	for _, a := range as {
		if p, ok := netlinkx.Prefix(a.IPNet); ok && p == want {
			return true, nil
		}
	}
	return false, fmt.Errorf("address %s missing", want)
}

// deleteDevice deletes our device, remembering its index.
func (s *scene) deleteDevice() error {
	l, err := s.link()
	if err != nil {
		return err
	}
	s.deleted = l.Attrs().Index
	return s.h.LinkDel(l)
}

// recreated reports whether our device exists again, whole, under another index.
func (s *scene) recreated(mtu int) (bool, error) {
	l, err := s.link()
	if err != nil {
		return false, err
	}
	if l.Attrs().Index == s.deleted {
		return false, fmt.Errorf("%s still has index %d", s.dev, s.deleted)
	}
	return s.device(mtu)
}

func vxlanFaults() []faultKind {
	del := func(s *scene, f func(idx int) error) error {
		l, err := s.link()
		if err != nil {
			return err
		}
		return f(l.Attrs().Index)
	}
	return []faultKind{
		{"peer route deleted", func(s *scene) error {
			// by destination only: a route through a nexthop object does not match a device
			return s.h.RouteDel(&netlink.Route{Dst: netlinkx.IPNet(s.peer), Table: unix.RT_TABLE_MAIN})
		}, (*scene).vxlanPeer},
		{"neighbour deleted", func(s *scene) error {
			return del(s, func(idx int) error {
				return s.h.NeighDel(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_INET, IP: s.peer.Addr().AsSlice()})
			})
		}, (*scene).vxlanPeer},
		{"FDB entry deleted", func(s *scene) error {
			return del(s, func(idx int) error {
				return s.h.NeighDel(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
					IP: s.peerPub.AsSlice(), HardwareAddr: s.peerMAC})
			})
		}, (*scene).vxlanPeer},
		{"address deleted", func(s *scene) error {
			l, err := s.link()
			if err != nil {
				return err
			}
			return s.h.AddrDel(l, &netlink.Addr{IPNet: netlinkx.IPNet(netip.PrefixFrom(s.own.Addr(), 32))})
		}, func(s *scene) (bool, error) { return s.device(1450) }},
		{"MTU changed", func(s *scene) error {
			l, err := s.link()
			if err != nil {
				return err
			}
			return s.h.LinkSetMTU(l, 1300)
		}, func(s *scene) (bool, error) { return s.device(1450) }},
		{"stale route added", func(s *scene) error {
			return del(s, func(idx int) error {
				return s.h.RouteAdd(&netlink.Route{Dst: netlinkx.IPNet(s.stale), Gw: s.stale.Addr().AsSlice(), LinkIndex: idx,
					Flags: int(netlink.FLAG_ONLINK), Table: unix.RT_TABLE_MAIN})
			})
		}, func(s *scene) (bool, error) { return s.noRoute(s.stale) }},
		{"device deleted", (*scene).deleteDevice, func(s *scene) (bool, error) {
			if ok, err := s.recreated(1450); !ok {
				return false, err
			}
			return s.vxlanPeer()
		}},
	}
}

func hostgwFaults() []faultKind {
	intact := func(s *scene) (bool, error) { return s.routeIs(s.peer, s.peerPub, s.ext) }
	return []faultKind{
		{"peer route deleted", func(s *scene) error {
			return s.h.RouteDel(&netlink.Route{Dst: netlinkx.IPNet(s.peer), LinkIndex: s.ext, Table: unix.RT_TABLE_MAIN})
		}, intact},
		{"peer route changed", func(s *scene) error {
			return s.h.RouteReplace(&netlink.Route{Dst: netlinkx.IPNet(s.peer), Gw: lab.GatewayIP.AsSlice(), LinkIndex: s.ext, Table: unix.RT_TABLE_MAIN})
		}, intact},
		{"stale route added", func(s *scene) error {
			return s.h.RouteAdd(&netlink.Route{Dst: netlinkx.IPNet(s.stale), Gw: lab.GatewayIP.AsSlice(), LinkIndex: s.ext, Table: unix.RT_TABLE_MAIN})
		}, func(s *scene) (bool, error) { return s.noRoute(s.stale) }},
	}
}

func udpFaults() []faultKind {
	intact := func(s *scene) (bool, error) {
		if ok, err := s.device(1472); !ok {
			return false, err
		}
		l, err := s.link()
		if err != nil {
			return false, err
		}
		return s.routeIs(s.network, netip.Addr{}, l.Attrs().Index)
	}
	return []faultKind{
		{"network route deleted", func(s *scene) error {
			l, err := s.link()
			if err != nil {
				return err
			}
			return s.h.RouteDel(&netlink.Route{Dst: netlinkx.IPNet(s.network), LinkIndex: l.Attrs().Index, Table: unix.RT_TABLE_MAIN})
		}, intact},
		{"address deleted", func(s *scene) error {
			l, err := s.link()
			if err != nil {
				return err
			}
			return s.h.AddrDel(l, &netlink.Addr{IPNet: netlinkx.IPNet(netip.PrefixFrom(s.own.Addr(), 32))})
		}, intact},
		{"stale route added", func(s *scene) error {
			l, err := s.link()
			if err != nil {
				return err
			}
			return s.h.RouteAdd(&netlink.Route{Dst: netlinkx.IPNet(s.stale), LinkIndex: l.Attrs().Index, Table: unix.RT_TABLE_MAIN})
		}, func(s *scene) (bool, error) { return s.noRoute(s.stale) }},
		{"device deleted", (*scene).deleteDevice, func(s *scene) (bool, error) {
			if ok, err := s.recreated(1472); !ok {
				return false, err
			}
			return intact(s)
		}},
	}
}

// uapiOp runs one UAPI operation on node 1's device and returns the answer's lines.
func (s *scene) uapiOp(op string) ([]string, error) {
	c, err := net.DialTimeout("unix", s.uapi, time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(op + "\n")); err != nil {
		return nil, err
	}
	var buf []byte
	tmp := make([]byte, 4096)
	for !strings.Contains(string(buf), "\n\n") {
		n, err := c.Read(tmp)
		if err != nil {
			return nil, err
		}
		buf = append(buf, tmp[:n]...)
	}
	lines := strings.Split(strings.TrimSpace(string(buf)), "\n")
	if last := lines[len(lines)-1]; last != "errno=0" {
		return nil, fmt.Errorf("uapi: %s", last)
	}
	return lines[:len(lines)-1], nil
}

// wgPeer reports whether node 2 is node 1's peer with only its subnet allowed.
func (s *scene) wgPeer() (bool, error) {
	lines, err := s.uapiOp("get=1\n")
	if err != nil {
		return false, err
	}
	pub := hex.EncodeToString(s.peerKey[:])
	in, allowed := false, []string{}
	for _, l := range lines {
		k, v, _ := strings.Cut(l, "=")
		switch {
		case k == "public_key":
			in = v == pub
		case in && k == "allowed_ip":
			allowed = append(allowed, v)
		}
	}
	if len(allowed) != 1 || allowed[0] != s.peer.String() {
		return false, fmt.Errorf("node 2's peer allows %v", allowed)
	}
	return true, nil
}

func wireguardFaults() []faultKind {
	const mtu = 1420
	intact := func(s *scene) (bool, error) {
		if ok, err := s.device(mtu); !ok {
			return false, err
		}
		l, err := s.link()
		if err != nil {
			return false, err
		}
		if ok, err := s.networkRoutes(l.Attrs().Index); !ok {
			return false, err
		}
		return s.wgPeer()
	}
	onDevice := func(f func(s *scene, idx int) error) func(s *scene) error {
		return func(s *scene) error {
			l, err := s.link()
			if err != nil {
				return err
			}
			return f(s, l.Attrs().Index)
		}
	}
	return []faultKind{
		{"peer removed with wg", func(s *scene) error {
			_, err := s.uapiOp("set=1\npublic_key=" + hex.EncodeToString(s.peerKey[:]) + "\nremove=true\n")
			return err
		}, intact},
		{"network route deleted", onDevice(func(s *scene, idx int) error {
			return s.h.RouteDel(&netlink.Route{Dst: netlinkx.IPNet(s.network), LinkIndex: idx, Scope: netlink.SCOPE_LINK, Table: unix.RT_TABLE_MAIN})
		}), intact},
		{"blackhole route deleted", func(s *scene) error {
			return s.h.RouteDel(&netlink.Route{Dst: netlinkx.IPNet(s.network), Type: unix.RTN_BLACKHOLE, Priority: 1000000, Table: unix.RT_TABLE_MAIN})
		}, intact},
		{"address deleted", onDevice(func(s *scene, idx int) error {
			l, err := s.link()
			if err != nil {
				return err
			}
			return s.h.AddrDel(l, &netlink.Addr{IPNet: netlinkx.IPNet(netip.PrefixFrom(s.own.Addr(), 32))})
		}), intact},
		{"MTU changed", onDevice(func(s *scene, idx int) error {
			l, err := s.link()
			if err != nil {
				return err
			}
			return s.h.LinkSetMTU(l, 1300)
		}), intact},
		{"stale route added", onDevice(func(s *scene, idx int) error {
			return s.h.RouteAdd(&netlink.Route{Dst: netlinkx.IPNet(s.stale), LinkIndex: idx, Table: unix.RT_TABLE_MAIN})
		}), func(s *scene) (bool, error) { return s.noRoute(s.stale) }},
		{"device deleted", (*scene).deleteDevice, func(s *scene) (bool, error) {
			if ok, err := s.recreated(mtu); !ok {
				return false, err
			}
			return intact(s)
		}},
	}
}

// networkRoutes reports whether the network has exactly its route via idx and its blackhole.
func (s *scene) networkRoutes(idx int) (bool, error) {
	rs, err := s.routesTo(s.network)
	if err != nil {
		return false, err
	}
	dev, hole := false, false
	for _, r := range rs {
		switch {
		case r.Type == unix.RTN_BLACKHOLE && r.Priority == 1000000:
			hole = true
		case r.Type == unix.RTN_UNICAST && r.LinkIndex == idx && r.Gw == nil:
			dev = true
		default:
			return false, fmt.Errorf("route %v to %s", r, s.network)
		}
	}
	if !dev || !hole {
		return false, fmt.Errorf("route through the device %v, blackhole %v", dev, hole)
	}
	return true, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
