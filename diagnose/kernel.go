package diagnose

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/flannel-go/flannel/pkg/claim"
	"github.com/flannel-go/flannel/pkg/forwarding"
	"github.com/flannel-go/flannel/pkg/observe"
)

// drift computes, once, how the kernel differs from what the leases require.
func (s *State) drift(ctx context.Context) (missing, stale []Object, err error) {
	if s.driftDone {
		return s.missing, s.stale, s.driftErr
	}
	s.driftDone = true
	b, err := s.loadBackend()
	if err != nil {
		s.driftErr = err
		return nil, nil, err
	}
	s.missing, s.stale, s.driftErr = b.Drift(ctx, &s.own.Lease, s.peers())
	return s.missing, s.stale, s.driftErr
}

func isDeviceObject(o Object) bool { return o.Kind == observe.Device || o.Kind == observe.Address }

func split(objs []Object) (dev, peers []string) {
	for _, o := range objs {
		if isDeviceObject(o) {
			dev = append(dev, o.Text)
		} else {
			peers = append(peers, o.Text)
		}
	}
	slices.Sort(dev)
	slices.Sort(peers)
	return dev, peers
}

func (s *State) repairFix() string {
	if s.daemon == nil {
		return "start flanneld: it converges the kernel at start (adopting what is right, replacing what differs, removing stale objects it owns)"
	}
	return "the running daemon repairs these within a second; if they stay, see its log for the kernel's refusal, or another program that keeps changing them (Documentation/self-healing.md)"
}

func checkDevice(ctx context.Context, s *State) Result {
	if s.own == nil {
		return skipAfter(CheckLease)
	}
	b, err := s.loadBackend()
	if err != nil {
		return fail("the backend cannot be set up here: "+oneLine(err), "fix the network config's Backend or the interface flags")
	}
	devs := b.Devices()
	if len(devs) == 0 {
		return skip("the %s backend owns no device", b.Type())
	}
	links, lerr := s.links()
	missing, stale, err := s.drift(ctx)
	switch {
	case errors.Is(err, ErrUnsupported):
		return s.deviceByLinks(b, devs, links, lerr)
	case err != nil:
		return fail("reading the kernel: "+oneLine(err), "run diagnose as root")
	}
	mdev, _ := split(missing)
	sdev, _ := split(stale)
	if len(mdev)+len(sdev) > 0 {
		var parts []string
		if len(mdev) > 0 {
			parts = append(parts, "missing or different: "+strings.Join(mdev, "; "))
		}
		if len(sdev) > 0 {
			parts = append(parts, "stale: "+strings.Join(sdev, "; "))
		}
		fix := s.repairFix()
		if s.wgKeyDiffers(ctx, b) {
			fix = "the devices hold another key than this node's lease advertises, so no peer can reach this node: restart flanneld, which advertises its key file's key; if the lease was edited, put its PublicKey back"
		}
		return fail(strings.Join(parts, "; "), fix, append(mdev, sdev...)...)
	}
	var evs []string
	wg, _ := b.WireGuard(ctx, &s.own.Lease, s.peers()) // nil for other backends
	for _, d := range devs {
		if l, ok := findLink(links, d); ok {
			evs = append(evs, describeLink(l)+wgDeviceEvidence(wg, d))
		} else {
			evs = append(evs, d)
		}
	}
	return pass("%s", strings.Join(evs, "; "))
}

// deviceByLinks checks a Drift-less backend's devices exist, are up and have its MTU.
func (s *State) deviceByLinks(b Backend, devs []string, links []Link, lerr error) Result {
	if lerr != nil {
		return fail("listing the links: "+oneLine(lerr), "run diagnose as root")
	}
	var bad, evs []string
	for _, d := range devs {
		l, ok := findLink(links, d)
		switch {
		case !ok:
			bad = append(bad, d+" is absent")
		case l.MTU != b.MTU():
			bad = append(bad, fmt.Sprintf("%s has MTU %d, want %d", d, l.MTU, b.MTU()))
		case !l.Up:
			bad = append(bad, d+" is down")
		default:
			evs = append(evs, describeLink(l))
		}
	}
	if len(bad) > 0 {
		return fail(strings.Join(bad, "; "), s.repairFix(), devs...)
	}
	return pass("%s", strings.Join(evs, "; "))
}

func (s *State) links() ([]Link, error) {
	if s.linksDone {
		return s.linkList, s.linksErr
	}
	s.linksDone = true
	if s.Deps.Kernel == nil {
		s.linksErr = errors.New("no kernel access")
	} else {
		s.linkList, s.linksErr = s.Deps.Kernel.Links()
	}
	return s.linkList, s.linksErr
}

func findLink(links []Link, name string) (Link, bool) {
	for _, l := range links {
		if l.Name == name {
			return l, true
		}
	}
	return Link{}, false
}

// describeLink is "flannel.1: vxlan VNI 1, port 8472, local 192.0.2.11, MTU 1450, up".
func describeLink(l Link) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s", l.Name, l.Type)
	if l.Type == "vxlan" {
		fmt.Fprintf(&b, " VNI %d, port %d, local %s,", l.VNI, l.Port, addrOrNone(l.Local))
	}
	fmt.Fprintf(&b, " MTU %d", l.MTU)
	if l.Up {
		b.WriteString(", up")
	} else {
		b.WriteString(", down")
	}
	return b.String()
}

func checkPeerObjects(ctx context.Context, s *State) Result {
	if s.own == nil {
		return skipAfter(CheckLease)
	}
	missing, stale, err := s.drift(ctx)
	switch {
	case errors.Is(err, ErrUnsupported):
		return skip("the %s backend keeps no per-peer kernel objects diagnose can read", s.backend.Type())
	case err != nil:
		return skipAfter(CheckDevice)
	}
	_, mp := split(missing)
	_, sp := split(stale)
	n := len(s.peers())
	if len(mp)+len(sp) > 0 {
		var parts []string
		if len(mp) > 0 {
			parts = append(parts, fmt.Sprintf("%d missing or different: %s", len(mp), first(mp, 5)))
		}
		if len(sp) > 0 {
			parts = append(parts, fmt.Sprintf("%d stale (no admitted lease explains them): %s", len(sp), first(sp, 5)))
		}
		fix := s.repairFix()
		if len(sp) > 0 && s.daemon == nil {
			fix = "start flanneld, which removes stale objects it owns, or delete them by hand (e.g. ip route del <destination>)"
		}
		return fail(strings.Join(parts, "; "), fix, append(mp, sp...)...)
	}
	if s.backend.Encap().WireGuard {
		return pass("WireGuard peers (keys, AllowedIPs, endpoints), addresses and routes match the %s", count(n, "admitted peer"))
	}
	return pass("routes, neighbour and FDB entries match the %s", count(n, "admitted peer"))
}

func count(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// first joins the first n strings, saying how many more there are.
func first(ss []string, n int) string {
	if len(ss) <= n {
		return strings.Join(ss, "; ")
	}
	return fmt.Sprintf("%s; and %d more", strings.Join(ss[:n], "; "), len(ss)-n)
}

func checkTrafficRules(ctx context.Context, s *State) Result {
	if s.own == nil || s.cfg == nil {
		return skipAfter(CheckLease)
	}
	if !s.Opts.IPMasq && !s.Opts.Forward {
		return skip("neither --ip-masq nor --iptables-forward-rules is set: the daemon installs no rules")
	}
	if !s.Opts.Root {
		return skip("reading iptables or nftables needs root")
	}
	if s.Deps.Rules == nil {
		return skip("no access to the rules")
	}
	spec := RuleSpec{NFTables: s.cfg.EnableNFTables, Masquerade: s.Opts.IPMasq, Forward: s.Opts.Forward}
	if s.cfg.EnableIPv4 {
		spec.Network, spec.Subnet = s.cfg.Network, s.own.Lease.Subnet
	}
	if s.cfg.EnableIPv6 {
		spec.IPv6Network, spec.IPv6Subnet = s.cfg.IPv6Network, s.own.Lease.IPv6Subnet
	}
	missing, mode, err := s.Deps.Rules(ctx, spec)
	if err != nil {
		return fail("reading the "+mode+" rules: "+oneLine(err), "check that "+mode+" works on this node ("+mode+" is what the network config's EnableNFTables selects)")
	}
	if len(missing) > 0 {
		return fail(fmt.Sprintf("%d %s rules missing: %s", len(missing), mode, first(missing, 3)), s.repairFix(), missing...)
	}
	var what []string
	if s.Opts.IPMasq {
		what = append(what, "masquerade")
	}
	if s.Opts.Forward {
		what = append(what, "forward")
	}
	return pass("the %s rules are in place in %s", strings.Join(what, " and "), mode)
}

func checkIPForward(_ context.Context, s *State) Result {
	if s.cfg == nil {
		return skipAfter(CheckNetworkConfig)
	}
	if s.Deps.Kernel == nil {
		return skip("no kernel access")
	}
	var evs, objs []string
	for _, st := range forwarding.Read(s.cfg.EnableIPv4, s.cfg.EnableIPv6, s.Deps.Kernel.Sysctl) {
		switch {
		case st.Err != nil:
			return skip("reading %s: %s", st.Name, oneLine(st.Err))
		case st.Off():
			objs = append(objs, st.Name)
		}
		evs = append(evs, st.Name+" = "+st.Value)
	}
	if len(objs) > 0 {
		return fail(strings.Join(evs, ", ")+": the node does not forward pod traffic",
			"sysctl -w "+strings.Join(objs, "=1 ")+"=1, and keep it in /etc/sysctl.d/ (the daemon does not change it)", objs...)
	}
	return pass("%s", strings.Join(evs, ", "))
}

func checkChecksumOffload(_ context.Context, s *State) Result {
	if s.own == nil {
		return skipAfter(CheckLease)
	}
	b, err := s.loadBackend()
	if err != nil {
		return skipAfter(CheckDevice)
	}
	offs, err := b.TxChecksum()
	switch {
	case errors.Is(err, ErrUnsupported):
		return skip("only the vxlan backend sets transmit checksum offload")
	case err != nil:
		return skip("reading the offload: %s", oneLine(err))
	}
	var evs, bad, objs []string
	for _, o := range offs {
		state := onOff(o.On)
		if o.Decided && o.On != o.Want {
			bad = append(bad, fmt.Sprintf("%s has transmit checksum offload %s, want %s: %s", o.Device, state, onOff(o.Want), o.Why))
			objs = append(objs, o.Device)
			continue
		}
		evs = append(evs, fmt.Sprintf("%s %s (%s)", o.Device, state, o.Why))
	}
	if len(bad) > 0 {
		return fail(strings.Join(bad, "; "),
			"restart flanneld, which sets it when it adopts the device (the vxlan option ChecksumOffload says how), or: ethtool -K "+objs[0]+" tx-checksum-ip-generic "+onOff(!offs[0].On), objs...)
	}
	return pass("%s", strings.Join(evs, "; "))
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

func checkInstances(ctx context.Context, s *State) Result {
	b, err := s.loadBackend()
	if err != nil {
		return skipAfter(CheckDevice)
	}
	ours := b.Claims()
	for _, n := range []netip.Prefix{s.cfg.Network, s.cfg.IPv6Network} {
		if n.IsValid() && (n.Addr().Is4() && s.cfg.EnableIPv4 || n.Addr().Is6() && s.cfg.EnableIPv6) {
			ours.Networks = append(ours.Networks, n.Masked())
		}
	}
	var conflicts, objs, remedies []string
	// The kernel refuses a second vxlan device on the same VNI and port.
	if links, err := s.links(); err == nil && b.Type() == "vxlan" {
		for _, d := range b.Devices() {
			own, ok := findLink(links, d)
			if !ok {
				continue
			}
			for _, l := range links {
				if l.Type == "vxlan" && l.Name != d && l.VNI == own.VNI && l.Port == own.Port && l.Local.Is4() == own.Local.Is4() {
					conflicts = append(conflicts, fmt.Sprintf("device %s uses VNI %d and port %d like %s", l.Name, l.VNI, l.Port, d))
					objs = append(objs, l.Name)
				}
			}
		}
	}
	others, note := 0, ""
	switch {
	case !s.Opts.Root:
		note = "; other instances not asked (their control sockets answer root only)"
	case s.Deps.Instances != nil:
		cctx, cancel := withTimeout(ctx, s.Opts.DatastoreTimeout)
		found, err := s.Deps.Instances(cctx)
		cancel()
		if err != nil {
			note = "; other instances not found: " + oneLine(err)
		}
		for _, f := range found {
			if f.Status == nil {
				continue
			}
			others++
			in := f.Status.Instance
			for _, c := range claim.Conflicts(ours, in.ClaimSet()) {
				conflicts = append(conflicts, fmt.Sprintf("%s is also claimed by flanneld pid %d (%s)", c, in.PID, strings.Join(in.Locks, ", ")))
				objs = append(objs, c.Ours)
				remedies = append(remedies, c.Remedy())
			}
		}
	}
	if len(conflicts) > 0 {
		fix := "remove the device nothing owns (ip link del <name>), or give this network another VNI"
		if len(remedies) > 0 {
			fix = remedies[0] + " (Documentation/running.md, several daemons on one host)"
		}
		return fail(strings.Join(conflicts, "; "), fix, objs...)
	}
	if others == 0 {
		return pass("no other flanneld instance and no foreign device takes what this one does%s", note)
	}
	return pass("%s claim nothing this one does%s", count(others, "other instance"), note)
}
