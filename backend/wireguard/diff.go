package wireguard

import (
	"net"
	"net/netip"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// wgSettings are the device-wide WireGuard settings every peer shares.
type wgSettings struct {
	key       wgtypes.Key  // private key
	psk       *wgtypes.Key // nil: none
	keepalive time.Duration
}

// peerCounts says what a diff changes.
type peerCounts struct {
	added, removed, updated int
	device                  int // private key or listen port set
}

func (c peerCounts) total() int { return c.added + c.removed + c.updated + c.device }

// diffDevice returns the smallest configuration turning have into want, never replacing the
// peer list; an endpoint is written only when new or changed in the lease since sent, so
// WireGuard's roaming is left alone.
func diffDevice(want *devWant, s wgSettings, have *wgtypes.Device, sent map[wgtypes.Key]netip.AddrPort) (wgtypes.Config, peerCounts) {
	var cfg wgtypes.Config
	var n peerCounts
	if have.PrivateKey != s.key {
		k := s.key
		cfg.PrivateKey = &k
		n.device++
	}
	if have.ListenPort != want.port {
		p := want.port
		cfg.ListenPort = &p
		n.device++
	}
	psk := wgtypes.Key{}
	if s.psk != nil {
		psk = *s.psk
	}
	current := make(map[wgtypes.Key]*wgtypes.Peer, len(have.Peers))
	for i := range have.Peers {
		current[have.Peers[i].PublicKey] = &have.Peers[i]
	}
	for i := range want.peers {
		w := &want.peers[i]
		h, ok := current[w.key]
		delete(current, w.key)
		if !ok {
			pc := wgtypes.PeerConfig{
				PublicKey:         w.key,
				Endpoint:          udpAddr(w.endpoint),
				ReplaceAllowedIPs: true,
				AllowedIPs:        ipNets(w.allowed),
			}
			if s.psk != nil {
				pc.PresharedKey = &psk
			}
			if s.keepalive != 0 {
				ka := s.keepalive
				pc.PersistentKeepaliveInterval = &ka
			}
			cfg.Peers = append(cfg.Peers, pc)
			n.added++
			continue
		}
		pc := wgtypes.PeerConfig{PublicKey: w.key, UpdateOnly: true}
		changed := false
		if h.PresharedKey != psk {
			pc.PresharedKey, changed = &psk, true
		}
		if h.PersistentKeepaliveInterval != s.keepalive {
			ka := s.keepalive
			pc.PersistentKeepaliveInterval, changed = &ka, true
		}
		if last, ok := sent[w.key]; h.Endpoint == nil || !ok || last != w.endpoint {
			if cur, ok := addrPort(h.Endpoint); !ok || cur != w.endpoint {
				pc.Endpoint, changed = udpAddr(w.endpoint), true
			}
		}
		if !samePrefixes(h.AllowedIPs, w.allowed) {
			pc.ReplaceAllowedIPs, pc.AllowedIPs, changed = true, ipNets(w.allowed), true
		}
		if changed {
			cfg.Peers = append(cfg.Peers, pc)
			n.updated++
		}
	}
	for i := range have.Peers {
		if _, stale := current[have.Peers[i].PublicKey]; stale {
			cfg.Peers = append(cfg.Peers, wgtypes.PeerConfig{PublicKey: have.Peers[i].PublicKey, Remove: true})
			n.removed++
		}
	}
	return cfg, n
}

// drifted reports without allocating whether a diff would write anything but endpoints.
func drifted(want *devWant, s wgSettings, have *wgtypes.Device) bool {
	if have.PrivateKey != s.key || have.ListenPort != want.port || len(have.Peers) != len(want.peers) {
		return true
	}
	psk := wgtypes.Key{}
	if s.psk != nil {
		psk = *s.psk
	}
	for i := range have.Peers {
		h := &have.Peers[i]
		j, ok := slices.BinarySearchFunc(want.peers, h.PublicKey, func(p peerWant, k wgtypes.Key) int {
			for b := range k {
				if p.key[b] != k[b] {
					return int(p.key[b]) - int(k[b])
				}
			}
			return 0
		})
		if !ok {
			return true
		}
		if h.PresharedKey != psk || h.PersistentKeepaliveInterval != s.keepalive || h.Endpoint == nil ||
			!samePrefixes(h.AllowedIPs, want.peers[j].allowed) {
			return true
		}
	}
	return false
}

// samePrefixes reports whether the kernel's allowed IPs are exactly want (ordered).
func samePrefixes(have []net.IPNet, want []netip.Prefix) bool {
	if len(have) != len(want) {
		return false
	}
	for _, h := range have {
		ip, ok := netip.AddrFromSlice(h.IP)
		if !ok {
			return false
		}
		ones, _ := h.Mask.Size()
		if _, found := slices.BinarySearchFunc(want, netip.PrefixFrom(ip.Unmap(), ones), netip.Prefix.Compare); !found {
			return false
		}
	}
	return true
}

func ipNets(ps []netip.Prefix) []net.IPNet {
	out := make([]net.IPNet, len(ps))
	for i, p := range ps {
		bits := 32
		if p.Addr().Is6() {
			bits = 128
		}
		out[i] = net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), bits)}
	}
	return out
}

func udpAddr(ap netip.AddrPort) *net.UDPAddr { return net.UDPAddrFromAddrPort(ap) }

func addrPort(a *net.UDPAddr) (netip.AddrPort, bool) {
	if a == nil {
		return netip.AddrPort{}, false
	}
	ap := a.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}
