package diagnose

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"

	"github.com/flannel-go/flannel/subnet"
)

const smallProbe = 84 // IP packet bytes, as ping(8) sends by default

// probeResults are the three probes of each sampled peer and family.
type probeResults struct {
	skip    string // why no probe ran
	sampled int    // peers probed
	total   int    // admitted peers
	mtu     int    // FLANNEL_MTU
	encap   Encap
	devices []string
	peers   []peerProbe
}

type peerProbe struct {
	lease   subnet.Lease
	v6      bool
	public  netip.Addr // the peer's public address of the family
	overlay netip.Addr // the address that answers through the overlay
	size    int        // the MTU probe's size
	under   probe
	over    probe
	big     probe
}

type probe struct {
	ok  bool
	err error
}

func (p *peerProbe) name() string {
	sn := p.lease.Subnet
	if p.v6 {
		sn = p.lease.IPv6Subnet
	}
	return fmt.Sprintf("%s (%s)", p.public, sn)
}

// runProbes sends every probe at once, so the run takes about one probe timeout.
func (s *State) runProbes(ctx context.Context) *probeResults {
	if s.probes != nil {
		return s.probes
	}
	r := &probeResults{}
	s.probes = r
	b, err := s.loadBackend()
	switch {
	case s.own == nil:
		r.skip = "needs what the " + CheckLease + " check could not establish"
		return r
	case err != nil:
		r.skip = "needs what the " + CheckDevice + " check could not establish"
		return r
	case s.Deps.Prober == nil:
		r.skip = "no ICMP prober"
		return r
	}
	r.encap, r.devices = b.Encap(), b.Devices()
	r.mtu, _ = s.flannelMTU()
	peers := s.peers()
	r.total = len(peers)
	n := len(peers)
	if s.Opts.Peers > 0 && s.Opts.Peers < n {
		if s.Deps.Shuffle != nil {
			s.Deps.Shuffle(len(peers), func(i, j int) { peers[i], peers[j] = peers[j], peers[i] })
		}
		n = s.Opts.Peers
	}
	peers = peers[:n]
	r.sampled = n
	for _, l := range peers {
		for _, v6 := range []bool{false, true} {
			on, pub, mine, over := s.cfg.EnableIPv4, l.Attrs.PublicIP, s.ext.Public, r.encap.Overhead
			if v6 {
				on, pub, mine, over = s.cfg.EnableIPv6, l.Attrs.PublicIPv6, s.ext.Public6, r.encap.Overhead6
			}
			if !on || !pub.IsValid() || !mine.IsValid() {
				continue
			}
			p := peerProbe{lease: l, v6: v6, public: pub, size: r.mtu + over}
			if r.encap.OverlayTarget != nil {
				p.overlay = r.encap.OverlayTarget(l, v6)
			}
			r.peers = append(r.peers, p)
		}
	}
	timeout := s.Opts.ProbeTimeout
	var wg sync.WaitGroup
	send := func(dst netip.Addr, size int, df bool, out *probe) {
		if !dst.IsValid() {
			out.err = errors.New("no address to probe")
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			out.ok, out.err = s.Deps.Prober.Ping(ctx, dst, size, df, timeout)
		}()
	}
	for i := range r.peers {
		p := &r.peers[i]
		send(p.public, smallProbe, false, &p.under)
		send(p.overlay, smallProbe, false, &p.over)
		send(p.public, p.size, true, &p.big)
	}
	wg.Wait()
	return r
}

func (r *probeResults) probeSkip() (Result, bool) {
	if r.skip != "" {
		return skip("%s", r.skip), true
	}
	if r.total == 0 {
		return skip("no admitted peer to probe"), true
	}
	if len(r.peers) == 0 {
		return skip("no peer has a public address of an enabled family"), true
	}
	// A probe that could not be sent at all (no raw socket) stops every check.
	for _, p := range r.peers {
		if isPermission(p.under.err) {
			return skip("%s: run diagnose as root, or allow ping sockets (net.ipv4.ping_group_range)", oneLine(p.under.err)), true
		}
	}
	return Result{}, false
}

func isPermission(err error) bool {
	return err != nil && errors.Is(err, ErrPermission)
}

// ErrPermission is what a Prober wraps when it may not send ICMP at all.
var ErrPermission = errors.New("no permission to send ICMP")

func (r *probeResults) sample() string {
	if r.sampled == r.total {
		if r.total == 1 {
			return "the one peer"
		}
		return fmt.Sprintf("all %d peers", r.total)
	}
	return fmt.Sprintf("%d of %d peers, chosen at random (--peers=all checks every one)", r.sampled, r.total)
}

func checkPeerUnderlay(ctx context.Context, s *State) Result {
	r := s.runProbes(ctx)
	if res, ok := r.probeSkip(); ok {
		return res
	}
	var bad, objs []string
	for _, p := range r.peers {
		if !p.under.ok {
			bad = append(bad, p.name()+probeErr(p.under.err))
			objs = append(objs, p.public.String())
		}
	}
	if len(bad) > 0 {
		return fail(fmt.Sprintf("%d of %d probed do not answer ICMP echo on the underlay: %s", len(bad), len(r.peers), first(bad, 5)),
			"check the path between the nodes (routes, firewalls; the peers must answer ping on their public address for the overlay checks to tell anything)", objs...)
	}
	return pass("%s answer on the underlay", r.sample())
}

func probeErr(err error) string {
	if err == nil {
		return ""
	}
	return ": " + oneLine(err)
}

func checkPeerOverlay(ctx context.Context, s *State) Result {
	r := s.runProbes(ctx)
	if res, ok := r.probeSkip(); ok {
		return res
	}
	var bad, objs []string
	downUnder := 0
	for _, p := range r.peers {
		switch {
		case p.over.ok:
		case !p.under.ok:
			downUnder++
		default:
			bad = append(bad, r.overlayBlame(&p))
			objs = append(objs, r.overlayObject(&p))
		}
	}
	if len(bad) > 0 {
		return fail(strings.Join(bad, "; "), r.overlayFix(), objs...)
	}
	if downUnder > 0 {
		return skip("%d peers not probed through the overlay: their underlay does not answer (see %s)", downUnder, CheckPeerUnderlay)
	}
	via := "the overlay"
	if len(r.devices) > 0 {
		via = strings.Join(r.devices, ", ")
	}
	return pass("%s answer through %s", r.sample(), via)
}

// overlayBlame says what drops a peer's overlay traffic when its underlay works.
func (r *probeResults) overlayBlame(p *peerProbe) string {
	if r.encap.WireGuard {
		return fmt.Sprintf("%s answers on the underlay, but %s does not answer through %s (see %s)", p.name(), p.overlay, strings.Join(r.devices, ", "), CheckWGHandshakes)
	}
	if r.encap.UDPPort == 0 {
		return fmt.Sprintf("traffic routed to %s via %s is dropped: %s answers on the underlay, %s does not", p.overlay, p.public, p.public, p.overlay)
	}
	return fmt.Sprintf("UDP port %d to or from %s is dropped: it answers on the underlay, but %s does not answer through the overlay", r.encap.UDPPort, p.name(), p.overlay)
}

func (r *probeResults) overlayObject(p *peerProbe) string {
	if r.encap.UDPPort == 0 {
		return p.public.String()
	}
	return fmt.Sprintf("%s udp/%d", p.public, r.encap.UDPPort)
}

func (r *probeResults) overlayFix() string {
	if r.encap.WireGuard {
		return fmt.Sprintf("check the peers' WireGuard keys (and PSK) against their leases, and allow UDP port %d between the nodes' public addresses in every firewall on the way", r.encap.UDPPort)
	}
	if r.encap.UDPPort == 0 {
		return "check forwarding and firewalls on both nodes (FORWARD chain, ip_forward), and that the peer's pod bridge exists"
	}
	return fmt.Sprintf("allow UDP port %d between the nodes' public addresses in every firewall on the way (host firewalls of both nodes, security groups)", r.encap.UDPPort)
}

func checkPeerMTU(ctx context.Context, s *State) Result {
	r := s.runProbes(ctx)
	if res, ok := r.probeSkip(); ok {
		return res
	}
	var bad, objs []string
	var local error
	size := 0
	for _, p := range r.peers {
		size = p.size
		var pe *PathError
		switch {
		case p.big.ok:
		case errors.As(p.big.err, &pe) && p.under.ok:
			bad = append(bad, p.name()+": "+pe.Error())
			objs = append(objs, p.public.String())
		case p.big.err != nil:
			local = p.big.err
			objs = append(objs, p.public.String())
		case p.under.ok:
			bad = append(bad, p.name())
			objs = append(objs, p.public.String())
		}
	}
	overhead := fmt.Sprintf("FLANNEL_MTU %d + %d of encapsulation", r.mtu, r.encap.Overhead)
	if local != nil {
		return fail(fmt.Sprintf("%d-byte packets with DF set cannot leave this node (%s): %s", size, overhead, oneLine(local)),
			"raise the external interface's MTU, or lower the backend's (vxlan: \"MTU\" in the Backend config) and recreate the pods", objs...)
	}
	if len(bad) > 0 {
		return fail(fmt.Sprintf("%d-byte packets with DF set (%s) get no answer from %s, small ones do: a link on the way has a smaller MTU", size, overhead, first(bad, 5)),
			fmt.Sprintf("raise the MTU of every link and switch port between the nodes to at least %d, or lower the backend's MTU (vxlan: \"MTU\" in the Backend config) and recreate the pods", size), objs...)
	}
	return pass("%s carry %d-byte packets with DF set (%s)", r.sample(), size, overhead)
}
