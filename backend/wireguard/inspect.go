package wireguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/netlinkx"
	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

var _ backend.DriftReader = (*Backend)(nil)

// DeviceState is one WireGuard device as the kernel (generic netlink) or the userspace
// device (its UAPI socket, as wg(8) reads it) reports it. Nothing secret is kept.
type DeviceState struct {
	Name string
	// Implementation is "kernel" (a wireguard link), "userspace" (a TUN served by a
	// flanneld) or "" when the link is absent.
	Implementation string
	MTU            int
	Up             bool
	// Err says why the WireGuard state could not be read (then the fields below are zero).
	Err        error
	ListenPort int
	PublicKey  string
	Peers      []PeerState
}

// PeerState is one peer of a device.
type PeerState struct {
	PublicKey     string
	Endpoint      netip.AddrPort // invalid: none
	AllowedIPs    []netip.Prefix
	LastHandshake time.Time // zero: none since the device holds the peer
}

// PeerWant is the peer an admitted lease asks for on a device.
type PeerWant struct {
	Lease      string // subnet key
	Device     string
	PublicKey  string
	Endpoint   netip.AddrPort
	AllowedIPs []netip.Prefix
}

// Inspect reads the devices and says which peer each admitted lease asks for, changing
// nothing: no key file is read or written and no device is created or configured. own is
// the node's lease; its public key is the one the devices must hold.
func (b *Backend) Inspect(ctx context.Context, own *subnet.Lease, peers subnet.Peers) ([]DeviceState, []PeerWant, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	devs, err := b.wanted(own, peers)
	if err != nil {
		return nil, nil, err
	}
	var want []PeerWant
	for _, d := range devs {
		for _, p := range d.peers {
			want = append(want, PeerWant{Lease: p.lease, Device: d.name, PublicKey: p.key.String(), Endpoint: p.endpoint, AllowedIPs: p.allowed})
		}
	}
	states, _, err := b.readStates(ctx, devs)
	return states, want, err
}

// wanted is the desired state for own and peers, computed on a copy of the node's state
// with own's public key in place of the private key file's.
func (b *Backend) wanted(own *subnet.Lease, peers subnet.Peers) ([]devWant, error) {
	if own == nil {
		return nil, errors.New("wireguard: Drift needs the node's own lease")
	}
	k, ok := PublicKey(own)
	if !ok {
		return nil, fmt.Errorf("wireguard: lease %s carries no WireGuard public key", own.Key())
	}
	pub, err := wgtypes.ParseKey(k)
	if err != nil {
		return nil, fmt.Errorf("wireguard: lease %s: %w", own.Key(), err)
	}
	n := b.node
	n.own, n.pub = own, pub
	devs, _ := n.desired(peers) // unusable peers are Reconcile's to log
	return devs, nil
}

// readStates reads every device's link and WireGuard state; raw holds each device as
// wgctrl read it (nil when absent or unreadable), for Drift alone: it has the keys.
func (b *Backend) readStates(ctx context.Context, devs []devWant) (states []DeviceState, raw []*wgtypes.Device, err error) {
	wg, err := b.newKernel() // wgctrl: generic netlink and the UAPI sockets
	if err != nil {
		return nil, nil, fmt.Errorf("wireguard: open the WireGuard configuration interface: %w", err)
	}
	defer wg.Close()
	states = make([]DeviceState, 0, len(devs))
	raw = make([]*wgtypes.Device, 0, len(devs))
	for _, d := range devs {
		if err := ctx.Err(); err != nil {
			return states, raw, err
		}
		st := DeviceState{Name: d.name}
		l, err := b.h.LinkByName(d.name)
		switch {
		case netlinkx.IsNotFound(err):
			states, raw = append(states, st), append(raw, nil)
			continue
		case err != nil:
			return states, raw, fmt.Errorf("wireguard: look up %s: %w", d.name, err)
		}
		st.MTU, st.Up = l.Attrs().MTU, l.Attrs().Flags&net.FlagUp != 0
		st.Implementation = implUserspace
		if l.Type() == linkType {
			st.Implementation = implKernel
		}
		have, err := wg.Device(d.name)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				err = errors.New("no WireGuard device answers for it (no kernel device, no UAPI socket)")
			}
			st.Err = err
			states, raw = append(states, st), append(raw, nil)
			continue
		}
		st.ListenPort, st.PublicKey = have.ListenPort, have.PublicKey.String()
		for i := range have.Peers {
			st.Peers = append(st.Peers, peerStateOf(&have.Peers[i]))
		}
		states, raw = append(states, st), append(raw, have)
	}
	return states, raw, nil
}

// peerStateOf is p without its secrets, its AllowedIPs masked and ordered.
func peerStateOf(p *wgtypes.Peer) PeerState {
	ps := PeerState{PublicKey: p.PublicKey.String(), LastHandshake: p.LastHandshakeTime}
	if ap, ok := addrPort(p.Endpoint); ok {
		ps.Endpoint = ap
	}
	for _, n := range p.AllowedIPs {
		if pf, ok := netlinkx.Prefix(&n); ok {
			ps.AllowedIPs = append(ps.AllowedIPs, pf.Masked())
		}
	}
	slices.SortFunc(ps.AllowedIPs, netip.Prefix.Compare)
	return ps
}

// Drift implements backend.DriftReader: exactly what a Reconcile round would write and
// delete. Devices are judged by their link and WireGuard settings, their addresses, routes
// and blackholes by healLink on a dryRun, their peers by diffDevice; roaming is not drift.
func (b *Backend) Drift(ctx context.Context, own *subnet.Lease, peers subnet.Peers) (backend.Drift, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var d backend.Drift
	devs, err := b.wanted(own, peers)
	if err != nil {
		return d, err
	}
	states, raw, err := b.readStates(ctx, devs)
	if err != nil {
		return d, err
	}
	mtu := b.node.cfg.DeviceMTU()
	ext := b.ext.Iface
	dry := &dryRun{h: b.h, ctx: ctx, names: map[int]string{ext.Index: ext.Name}}
	for i, w := range devs {
		st := states[i]
		dev := backend.Object{Kind: observe.Device, Device: w.name}
		var why []string
		switch {
		case st.Implementation == "":
			why = append(why, "absent")
			dry.absent = append(dry.absent, w.name)
		case st.Err != nil:
			why = append(why, st.Err.Error())
		default:
			if st.MTU != mtu {
				why = append(why, fmt.Sprintf("mtu %d, want %d", st.MTU, mtu))
			}
			if !st.Up {
				why = append(why, "down")
			}
			if st.ListenPort != w.port {
				why = append(why, fmt.Sprintf("listen port %d, want %d", st.ListenPort, w.port))
			}
			if st.PublicKey != b.publicKeyOf(own) {
				why = append(why, fmt.Sprintf("public key %s, want the lease's %s", st.PublicKey, b.publicKeyOf(own)))
			}
		}
		if len(why) > 0 {
			dev.Detail = strings.Join(why, ", ")
			d.Missing = append(d.Missing, dev)
		}
		if _, err := healLink(dry, &w, mtu, ext); err != nil {
			return d, fmt.Errorf("wireguard: %w", err)
		}
		if raw[i] == nil {
			for _, p := range w.peers {
				d.Missing = append(d.Missing, peerObject(w.name, p.key.String(), p.endpoint, p.allowed, ""))
			}
			continue
		}
		b.driftPeers(&w, raw[i], &d)
	}
	d.Missing = append(d.Missing, dry.drift.Missing...)
	d.Stale = append(d.Stale, dry.drift.Stale...)
	return d, nil
}

func (b *Backend) publicKeyOf(own *subnet.Lease) string {
	k, _ := PublicKey(own)
	return k
}

// driftPeers adds the peers diffDevice would write (missing, with what differs) and remove
// (stale); an endpoint counts as written, so only a peer without one needs one.
func (b *Backend) driftPeers(w *devWant, have *wgtypes.Device, d *backend.Drift) {
	s := wgSettings{key: have.PrivateKey, psk: b.node.cfg.PSK, keepalive: b.node.cfg.PersistentKeepaliveInterval}
	sent := make(map[wgtypes.Key]netip.AddrPort, len(w.peers))
	for _, p := range w.peers {
		sent[p.key] = p.endpoint
	}
	cfg, _ := diffDevice(w, s, have, sent)
	for _, pc := range cfg.Peers {
		k := pc.PublicKey
		i := slices.IndexFunc(have.Peers, func(p wgtypes.Peer) bool { return p.PublicKey == k })
		j := slices.IndexFunc(w.peers, func(p peerWant) bool { return p.key == k })
		switch {
		case pc.Remove || j < 0:
			h := peerStateOf(&have.Peers[i])
			d.Stale = append(d.Stale, peerObject(w.name, k.String(), h.Endpoint, h.AllowedIPs, ""))
			continue
		case i < 0:
			d.Missing = append(d.Missing, peerObject(w.name, k.String(), w.peers[j].endpoint, w.peers[j].allowed, "absent"))
			continue
		}
		want, h := &w.peers[j], &have.Peers[i]
		var why []string
		if pc.ReplaceAllowedIPs {
			why = append(why, "allowed-ips "+prefixList(peerStateOf(h).AllowedIPs))
		}
		if pc.Endpoint != nil {
			why = append(why, "no endpoint")
		}
		if pc.PresharedKey != nil {
			switch {
			case h.PresharedKey == (wgtypes.Key{}):
				why = append(why, "no preshared key")
			case *pc.PresharedKey == (wgtypes.Key{}):
				why = append(why, "a preshared key, want none")
			default:
				why = append(why, "another preshared key")
			}
		}
		if pc.PersistentKeepaliveInterval != nil {
			why = append(why, fmt.Sprintf("keepalive %s, want %s", keepalive(h.PersistentKeepaliveInterval), keepalive(s.keepalive)))
		}
		d.Missing = append(d.Missing, peerObject(w.name, k.String(), want.endpoint, want.allowed, strings.Join(why, ", ")))
	}
}

// keepalive is a persistent keepalive interval in the words of wg(8): "25s" or "off".
func keepalive(t time.Duration) string {
	if t == 0 {
		return "off"
	}
	return t.String()
}

// peerObject renders a peer in the words of wg(8): "peer dev flannel-wg (<key> endpoint
// 192.0.2.12:51820 allowed-ips 10.5.2.0/24; absent)".
func peerObject(dev, key string, ep netip.AddrPort, allowed []netip.Prefix, why string) backend.Object {
	detail := key
	if ep.IsValid() {
		detail += " endpoint " + ep.String()
	}
	detail += " allowed-ips " + prefixList(allowed)
	if why != "" {
		detail += "; " + why
	}
	return backend.Object{Kind: observe.Peer, Device: dev, Detail: detail}
}

func prefixList(ps []netip.Prefix) string {
	if len(ps) == 0 {
		return "(none)"
	}
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}
