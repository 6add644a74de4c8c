package diagnose

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// handshakeAge is how old a working peer's latest handshake may be: WireGuard renews a
// session every two minutes under traffic, and the overlay probes just sent some.
const handshakeAge = 3 * time.Minute

// wgReadFix is what to do when the WireGuard devices cannot be read.
const wgReadFix = "run diagnose as root in the daemon's mount namespace: userspace devices answer on /var/run/wireguard/<device>.sock"

// wireGuard reads the WireGuard devices now; ok is false with the outcome when there is
// nothing to read (another backend, no lease, no backend).
func (s *State) wireGuard(ctx context.Context) (*WireGuard, Result, bool) {
	if s.own == nil {
		return nil, skipAfter(CheckLease), false
	}
	b, err := s.loadBackend()
	if err != nil {
		return nil, skipAfter(CheckDevice), false
	}
	wg, err := b.WireGuard(ctx, &s.own.Lease, s.peers())
	switch {
	case errors.Is(err, ErrUnsupported):
		return nil, skip("the %s backend does not use WireGuard", b.Type()), false
	case err != nil:
		return nil, fail("reading the WireGuard devices: "+oneLine(err), wgReadFix), false
	}
	return wg, Result{}, true
}

// daemonWireGuard is what the running daemon says of its WireGuard ("userspace
// WireGuard: flannel-wg"), "" when no daemon runs or it says nothing.
func (s *State) daemonWireGuard() string {
	if s.daemon == nil {
		return ""
	}
	for _, c := range s.daemon.Readiness.Checks {
		if c.Name == "wireguard" {
			return c.Note
		}
	}
	return ""
}

func checkWGImplementation(ctx context.Context, s *State) Result {
	wg, res, ok := s.wireGuard(ctx)
	if !ok {
		return res
	}
	impls := map[string][]string{}
	for _, d := range wg.Devices {
		if d.Implementation != "" {
			impls[d.Implementation] = append(impls[d.Implementation], d.Name)
		}
	}
	if len(impls) == 0 {
		return skip("no WireGuard device exists (see %s)", CheckDevice)
	}
	var kinds []string
	for k, devs := range impls {
		kinds = append(kinds, k+" ("+strings.Join(devs, ", ")+")")
	}
	slices.Sort(kinds)
	if len(impls) > 1 {
		return fail("the WireGuard devices are of different kinds: "+strings.Join(kinds, ", "),
			"restart flanneld: it uses one implementation and removes devices of the other kind")
	}
	impl := strings.SplitN(kinds[0], " ", 2)[0]
	note := s.daemonWireGuard()
	switch {
	case note == "":
		return pass("%s WireGuard, from the device kind: %s", impl, kinds[0])
	case !strings.HasPrefix(note, impl+" "):
		return fail(fmt.Sprintf("the daemon says %q but the devices are %s", note, kinds[0]),
			"restart flanneld, or remove the device of the other kind (ip link del <device>)", impls[impl]...)
	}
	return pass("%s (the daemon's status; the devices agree)", note)
}

// wgDeviceEvidence is ", userspace WireGuard, listen port 51820, public key <key>" for a
// device, "" when none was read.
func wgDeviceEvidence(wg *WireGuard, name string) string {
	if wg == nil {
		return ""
	}
	for _, d := range wg.Devices {
		if d.Name == name && d.Err == nil && d.Implementation != "" {
			return fmt.Sprintf(", %s WireGuard, listen port %d, public key %s", d.Implementation, d.ListenPort, d.PublicKey)
		}
	}
	return ""
}

func checkWGHandshakes(ctx context.Context, s *State) Result {
	if _, res, ok := s.wireGuard(ctx); !ok {
		return res
	}
	// The probes go first: their packets through the devices start the handshakes.
	r := s.runProbes(ctx)
	if res, ok := r.probeSkip(); ok {
		return res
	}
	wg, res, ok := s.wireGuard(ctx)
	if !ok {
		return res
	}
	now := s.Deps.Now()
	var bad, objs []string
	downUnder := 0
	var newest, oldest time.Duration = -1, -1
	for _, p := range r.peers {
		if !p.under.ok {
			downUnder++
			continue
		}
		want, dev, peer := wg.peerOf(&p)
		var why string
		switch {
		case want == nil:
			why = "its lease gives no WireGuard peer"
		case dev == nil || dev.Implementation == "" || dev.Err != nil:
			why = "no readable device " + want.Device + " (see " + CheckDevice + ")"
		case peer == nil:
			why = fmt.Sprintf("%s holds no peer with its key %s (see %s)", want.Device, want.PublicKey, CheckPeerObjects)
		case peer.LastHandshake.IsZero() || peer.LastHandshake.Unix() <= 0:
			why = fmt.Sprintf("no handshake with key %s on %s", want.PublicKey, want.Device)
		case now.Sub(peer.LastHandshake) > handshakeAge:
			why = fmt.Sprintf("latest handshake with key %s on %s %s ago", want.PublicKey, want.Device, now.Sub(peer.LastHandshake).Round(time.Second))
		default:
			age := now.Sub(peer.LastHandshake)
			if newest < 0 || age < newest {
				newest = age
			}
			oldest = max(oldest, age)
			continue
		}
		bad = append(bad, p.name()+": "+why)
		objs = append(objs, p.public.String())
		if want != nil {
			objs = append(objs, want.PublicKey)
		}
	}
	if len(bad) > 0 {
		return fail(fmt.Sprintf("%d of %d probed answer on the underlay but complete no WireGuard handshake: %s", len(bad), len(r.peers), first(bad, 5)),
			fmt.Sprintf("check that each peer's private key matches the public key its lease advertises (wg show on both nodes), the PSK on both nodes, and that UDP port %d reaches the peers' listen ports through every firewall", r.encap.UDPPort),
			objs...)
	}
	if newest < 0 {
		return skip("%d peers not checked: their underlay does not answer (see %s)", downUnder, CheckPeerUnderlay)
	}
	return pass("%s completed a handshake within %s (newest %s ago, oldest %s ago)", r.sample(), handshakeAge,
		newest.Round(time.Second), oldest.Round(time.Second))
}

// peerOf finds the peer a probed lease family asks for, its device and the device's peer
// with its key (nil when absent).
func (wg *WireGuard) peerOf(p *peerProbe) (*WGPeerWant, *WGDevice, *WGPeer) {
	sn, _ := p.lease.FamilySubnet(p.v6)
	var want *WGPeerWant
	for i := range wg.Want {
		w := &wg.Want[i]
		if w.Lease == p.lease.Key() && slices.Contains(w.AllowedIPs, sn.Masked()) {
			want = w
			break
		}
	}
	if want == nil {
		return nil, nil, nil
	}
	for i := range wg.Devices {
		d := &wg.Devices[i]
		if d.Name != want.Device {
			continue
		}
		for j := range d.Peers {
			if d.Peers[j].PublicKey == want.PublicKey {
				return want, d, &d.Peers[j]
			}
		}
		return want, d, nil
	}
	return want, nil, nil
}

// wgKeyDiffers reports whether a WireGuard device holds another public key than the own
// lease advertises.
func (s *State) wgKeyDiffers(ctx context.Context, b Backend) bool {
	wg, err := b.WireGuard(ctx, &s.own.Lease, s.peers())
	if err != nil {
		return false
	}
	var data struct{ PublicKey string }
	if json.Unmarshal(s.own.Lease.Attrs.BackendData, &data) != nil || data.PublicKey == "" {
		if json.Unmarshal(s.own.Lease.Attrs.BackendV6Data, &data) != nil {
			return false
		}
	}
	for _, d := range wg.Devices {
		if d.Err == nil && d.Implementation != "" && d.PublicKey != data.PublicKey {
			return true
		}
	}
	return false
}
