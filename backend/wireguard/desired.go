package wireguard

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

// Device names, as upstream.
const (
	deviceName   = "flannel-wg"
	deviceNameV6 = "flannel-wg-v6"
)

// devWant is what one device must carry, a pure function of the config and the leases.
type devWant struct {
	name     string
	port     int            // listen port
	addrs    []netip.Prefix // the own lease's network address per family carried (/32, /128)
	networks []netip.Prefix // routed through the device (and blackholed beneath it)
	peers    []peerWant     // ordered by public key
}

// peerWant is one WireGuard peer of a device.
type peerWant struct {
	key      wgtypes.Key
	endpoint netip.AddrPort
	allowed  []netip.Prefix // the peer's subnets, masked, ordered
	lease    string         // subnet key, for logs
}

// nodeInfo is what the desired state depends on besides the peer leases.
type nodeInfo struct {
	cfg                Config
	pub                wgtypes.Key   // own public key
	v4, v6             bool          // families the network enables
	network, network6  netip.Prefix  // the flannel networks
	own                *subnet.Lease // own lease (subnets)
	extAddr, extV6Addr netip.Addr    // own public addresses (Mode auto's choice)
}

// devices lists the devices the config needs, without peers.
func (n *nodeInfo) devices() []devWant {
	var v4Net, v6Net []netip.Prefix
	var v4Addr, v6Addr []netip.Prefix
	if n.v4 {
		v4Net = []netip.Prefix{n.network.Masked()}
		if sn, ok := n.own.FamilySubnet(false); ok {
			v4Addr = []netip.Prefix{netip.PrefixFrom(sn.Addr(), 32)}
		}
	}
	if n.v6 {
		v6Net = []netip.Prefix{n.network6.Masked()}
		if sn, ok := n.own.FamilySubnet(true); ok {
			v6Addr = []netip.Prefix{netip.PrefixFrom(sn.Addr(), 128)}
		}
	}
	if n.cfg.Mode != Separate {
		return []devWant{{name: deviceName, port: n.cfg.ListenPort, addrs: append(v4Addr, v6Addr...), networks: append(v4Net, v6Net...)}}
	}
	var devs []devWant
	if n.v4 {
		devs = append(devs, devWant{name: deviceName, port: n.cfg.ListenPort, addrs: v4Addr, networks: v4Net})
	}
	if n.v6 {
		devs = append(devs, devWant{name: deviceNameV6, port: n.cfg.ListenPortV6, addrs: v6Addr, networks: v6Net})
	}
	return devs
}

// attrs are this node's lease attributes: per family, the key and the carrying device's port.
func (n *nodeInfo) attrs() *subnet.LeaseAttrs {
	a := &subnet.LeaseAttrs{BackendType: BackendType}
	v6Port := n.cfg.ListenPortV6
	if n.cfg.Mode != Separate {
		v6Port = n.cfg.ListenPort // one device, one port
	}
	if n.v4 {
		a.PublicIP = n.extAddr
		a.BackendData = marshalBackendData(n.pub, n.cfg.ListenPort)
	}
	if n.v6 {
		a.PublicIPv6 = n.extV6Addr
		a.BackendV6Data = marshalBackendData(n.pub, v6Port)
	}
	return a
}

// desired computes every device's peers, returning unusable leases as problems.
func (n *nodeInfo) desired(peers subnet.Peers) ([]devWant, []backend.Problem) {
	devs := n.devices()
	var probs []backend.Problem
	seen := make(map[wgtypes.Key]string, peers.Len())
	for l := range peers.All() {
		key := l.Key()
		skip := func(format string, args ...any) {
			probs = append(probs, backend.Problem{Peer: key, Reason: fmt.Sprintf(format, args...)})
		}
		if l.Subnet == n.own.Subnet && l.IPv6Subnet == n.own.IPv6Subnet {
			continue // the own lease
		}
		if l.Attrs.BackendType != BackendType {
			probs = append(probs, backend.Problem{Peer: key, Reason: fmt.Sprintf("backend type %q is not %s", l.Attrs.BackendType, BackendType),
				Skip: observe.SkippedOtherBackend})
			continue
		}
		if n.cfg.Mode == Separate {
			for i := range devs {
				v6 := devs[i].name == deviceNameV6
				p, ok, why := n.separatePeer(&l, v6)
				if why != "" {
					skip("%s", why)
				}
				if !ok {
					continue
				}
				if other, dup := seen[p.key]; dup && other != key {
					skip("public key %s is advertised by %s too", p.key, other)
					continue
				}
				seen[p.key] = key
				devs[i].peers = append(devs[i].peers, p)
			}
			continue
		}
		p, ok, why := n.singlePeer(&l)
		if !ok {
			skip("%s", why)
			continue
		}
		if other, dup := seen[p.key]; dup {
			skip("public key %s is advertised by %s too", p.key, other)
			continue
		}
		seen[p.key] = key
		devs[0].peers = append(devs[0].peers, p)
	}
	for i := range devs {
		slices.SortFunc(devs[i].peers, func(a, b peerWant) int { return bytes.Compare(a.key[:], b.key[:]) })
	}
	return devs, probs
}

// separatePeer is the lease's peer on one family's device, if ok; why explains an unusable lease.
func (n *nodeInfo) separatePeer(l *subnet.Lease, v6 bool) (p peerWant, ok bool, why string) {
	sn, has := l.FamilySubnet(v6)
	if !has {
		return p, false, ""
	}
	raw, pub, port, dataName := l.Attrs.BackendData, l.Attrs.PublicIP, n.cfg.ListenPort, "BackendData"
	if v6 {
		raw, pub, port, dataName = l.Attrs.BackendV6Data, l.Attrs.PublicIPv6, n.cfg.ListenPortV6, "BackendV6Data"
	}
	bd, err := parseBackendData(raw)
	if err != nil {
		return p, false, fmt.Sprintf("%s: %v", dataName, err)
	}
	if bd.PublicKey == n.pub {
		return p, false, "advertises this node's own public key"
	}
	if !pub.IsValid() || pub.IsUnspecified() {
		fam := "IPv4"
		if v6 {
			fam = "IPv6"
		}
		return p, false, "no " + fam + " public address"
	}
	if bd.Port != 0 {
		port = bd.Port
	}
	return peerWant{key: bd.PublicKey, endpoint: netip.AddrPortFrom(pub, uint16(port)), allowed: []netip.Prefix{sn}, lease: l.Key()}, true, ""
}

// singlePeer is the lease's peer on the one device of Modes auto, ipv4 and ipv6.
func (n *nodeInfo) singlePeer(l *subnet.Lease) (p peerWant, ok bool, why string) {
	var d4, d6 *backendData
	var allowed []netip.Prefix
	if sn, has := l.FamilySubnet(false); has && n.v4 {
		bd, err := parseBackendData(l.Attrs.BackendData)
		if err != nil {
			return p, false, "BackendData: " + err.Error()
		}
		d4, allowed = &bd, append(allowed, sn)
	}
	if sn, has := l.FamilySubnet(true); has && n.v6 {
		bd, err := parseBackendData(l.Attrs.BackendV6Data)
		if err != nil {
			return p, false, "BackendV6Data: " + err.Error()
		}
		d6, allowed = &bd, append(allowed, sn)
	}
	if len(allowed) == 0 {
		return p, false, "no subnet of an enabled family"
	}
	if d4 != nil && d6 != nil && d4.PublicKey != d6.PublicKey {
		return p, false, "BackendData and BackendV6Data advertise different public keys"
	}
	data := d4
	if data == nil {
		data = d6
	}
	if data.PublicKey == n.pub {
		return p, false, "advertises this node's own public key"
	}
	v6 := false
	switch n.cfg.Mode {
	case IPv6:
		v6 = true
	case Auto:
		v6 = n.autoPicksIPv6(l.Attrs.PublicIP, l.Attrs.PublicIPv6)
	}
	pub, port := l.Attrs.PublicIP, n.cfg.ListenPort
	if d4 != nil && d4.Port != 0 {
		port = d4.Port
	}
	if v6 {
		pub, port = l.Attrs.PublicIPv6, n.cfg.ListenPort
		if d6 != nil && d6.Port != 0 {
			port = d6.Port
		}
	}
	if !pub.IsValid() || pub.IsUnspecified() {
		if v6 {
			return p, false, "no IPv6 public address"
		}
		return p, false, "no IPv4 public address"
	}
	slices.SortFunc(allowed, netip.Prefix.Compare)
	return peerWant{key: data.PublicKey, endpoint: netip.AddrPortFrom(pub, uint16(port)), allowed: allowed, lease: l.Key()}, true, ""
}

// autoPicksIPv6 is upstream's choice of the underlay family in Mode auto.
func (n *nodeInfo) autoPicksIPv6(peer4, peer6 netip.Addr) bool {
	if !peer6.IsValid() {
		return false
	}
	if peer4.IsValid() && !peer4.IsUnspecified() && !peer4.IsPrivate() && n.extAddr.IsValid() {
		return false
	}
	return !peer6.IsPrivate() && n.extV6Addr.IsValid() && !n.extV6Addr.IsPrivate()
}
