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

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
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
	states, err := b.readStates(ctx, devs)
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

// readStates reads every device's link and WireGuard state.
func (b *Backend) readStates(ctx context.Context, devs []devWant) ([]DeviceState, error) {
	wg, err := b.newKernel() // wgctrl: generic netlink and the UAPI sockets
	if err != nil {
		return nil, fmt.Errorf("wireguard: open the WireGuard configuration interface: %w", err)
	}
	defer wg.Close()
	out := make([]DeviceState, 0, len(devs))
	for _, d := range devs {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		st := DeviceState{Name: d.name}
		l, err := b.h.LinkByName(d.name)
		switch {
		case netlinkx.IsNotFound(err):
			out = append(out, st)
			continue
		case err != nil:
			return out, fmt.Errorf("wireguard: look up %s: %w", d.name, err)
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
			out = append(out, st)
			continue
		}
		st.ListenPort, st.PublicKey = have.ListenPort, have.PublicKey.String()
		for _, p := range have.Peers {
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
			st.Peers = append(st.Peers, ps)
		}
		out = append(out, st)
	}
	return out, nil
}

// Drift implements backend.DriftReader: the devices must exist, be up, have the MTU, the
// listen port and own's public key, carry own's addresses and the network routes, and
// hold exactly the admitted peers' keys with their AllowedIPs and an endpoint. An endpoint
// other than the lease's is not drift: WireGuard follows a roaming peer.
func (b *Backend) Drift(ctx context.Context, own *subnet.Lease, peers subnet.Peers) (backend.Drift, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var d backend.Drift
	devs, err := b.wanted(own, peers)
	if err != nil {
		return d, err
	}
	states, err := b.readStates(ctx, devs)
	if err != nil {
		return d, err
	}
	mtu := b.node.cfg.DeviceMTU()
	for i, w := range devs {
		st := states[i]
		dev := backend.Object{Kind: observe.Device, Device: w.name}
		var why []string
		switch {
		case st.Implementation == "":
			why = append(why, "absent")
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
		if st.Implementation == "" || st.Err != nil {
			for _, p := range w.peers {
				d.Missing = append(d.Missing, peerObject(w.name, p.key.String(), p.endpoint, p.allowed, ""))
			}
			continue
		}
		if err := b.driftLink(&w, &d); err != nil {
			return d, fmt.Errorf("wireguard: %w", err)
		}
		driftPeers(&w, st.Peers, &d)
	}
	return d, nil
}

func (b *Backend) publicKeyOf(own *subnet.Lease) string {
	k, _ := PublicKey(own)
	return k
}

// driftLink adds the device's missing addresses and network routes.
func (b *Backend) driftLink(w *devWant, d *backend.Drift) error {
	link, err := b.h.LinkByName(w.name)
	if err != nil {
		return fmt.Errorf("look up %s: %w", w.name, err)
	}
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		v6 := fam == unix.AF_INET6
		nets := familyPrefixes(w.networks, v6)
		if len(nets) == 0 {
			continue
		}
		addrs, err := b.h.AddrList(link, fam)
		if err != nil {
			return fmt.Errorf("list addresses of %s: %w", w.name, err)
		}
		for _, want := range familyPrefixes(w.addrs, v6) {
			if !slices.ContainsFunc(addrs, func(a netlink.Addr) bool { p, ok := netlinkx.Prefix(a.IPNet); return ok && p == want }) {
				d.Missing = append(d.Missing, backend.Object{Kind: observe.Address, Device: w.name, Dst: want})
			}
		}
		routes, err := b.h.RouteListFiltered(fam, &netlink.Route{LinkIndex: link.Attrs().Index, Table: unix.RT_TABLE_MAIN},
			netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
		if err != nil {
			return fmt.Errorf("list routes of %s: %w", w.name, err)
		}
		for _, p := range nets {
			if !slices.ContainsFunc(routes, func(r netlink.Route) bool {
				dst, ok := netlinkx.Prefix(r.Dst)
				return ok && dst.Masked() == p && isNetworkRoute(&r, p, v6)
			}) {
				d.Missing = append(d.Missing, backend.Object{Kind: observe.Route, Device: w.name, Dst: p})
			}
		}
	}
	return nil
}

// driftPeers adds the admitted peers the device lacks or holds otherwise (missing) and the
// peers no admitted lease explains (stale).
func driftPeers(w *devWant, have []PeerState, d *backend.Drift) {
	byKey := make(map[string]PeerState, len(have))
	for _, p := range have {
		byKey[p.PublicKey] = p
	}
	for _, p := range w.peers {
		k := p.key.String()
		h, ok := byKey[k]
		delete(byKey, k)
		switch {
		case !ok:
			d.Missing = append(d.Missing, peerObject(w.name, k, p.endpoint, p.allowed, "absent"))
		case !slices.Equal(h.AllowedIPs, p.allowed):
			d.Missing = append(d.Missing, peerObject(w.name, k, p.endpoint, p.allowed, "allowed-ips "+prefixList(h.AllowedIPs)))
		case !h.Endpoint.IsValid():
			d.Missing = append(d.Missing, peerObject(w.name, k, p.endpoint, p.allowed, "no endpoint"))
		}
	}
	for _, h := range have {
		if _, ok := byKey[h.PublicKey]; ok {
			d.Stale = append(d.Stale, peerObject(w.name, h.PublicKey, h.Endpoint, h.AllowedIPs, ""))
		}
	}
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
