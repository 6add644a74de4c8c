package wireguard

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// uapiSet renders cfg as the body of a UAPI set operation; it holds keys: never log it.
func uapiSet(cfg wgtypes.Config) string {
	var b strings.Builder
	line := func(k, v string) {
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(v)
		b.WriteByte('\n')
	}
	if cfg.PrivateKey != nil {
		line("private_key", hex.EncodeToString(cfg.PrivateKey[:]))
	}
	if cfg.ListenPort != nil {
		line("listen_port", strconv.Itoa(*cfg.ListenPort))
	}
	if cfg.FirewallMark != nil {
		line("fwmark", strconv.Itoa(*cfg.FirewallMark))
	}
	if cfg.ReplacePeers {
		line("replace_peers", "true")
	}
	for _, p := range cfg.Peers {
		line("public_key", hex.EncodeToString(p.PublicKey[:]))
		if p.Remove {
			line("remove", "true")
			continue
		}
		if p.UpdateOnly {
			line("update_only", "true")
		}
		if p.PresharedKey != nil {
			line("preshared_key", hex.EncodeToString(p.PresharedKey[:]))
		}
		if p.Endpoint != nil {
			if ap, ok := addrPort(p.Endpoint); ok {
				line("endpoint", ap.String())
			}
		}
		if p.PersistentKeepaliveInterval != nil {
			line("persistent_keepalive_interval", strconv.Itoa(int(*p.PersistentKeepaliveInterval/time.Second)))
		}
		if p.ReplaceAllowedIPs {
			line("replace_allowed_ips", "true")
		}
		for _, a := range p.AllowedIPs {
			line("allowed_ip", a.String())
		}
	}
	return b.String()
}

// parseUAPI reads a get answer, ignoring unknown keys as wg(8); errors never quote a key.
func parseUAPI(text string) (*wgtypes.Device, error) {
	d := &wgtypes.Device{Type: wgtypes.Userspace}
	var peer *wgtypes.Peer
	var hsSec, hsNsec int64
	endPeer := func() {
		if peer != nil {
			if hsSec != 0 || hsNsec != 0 {
				peer.LastHandshakeTime = time.Unix(hsSec, hsNsec)
			}
			d.Peers = append(d.Peers, *peer)
		}
		peer, hsSec, hsNsec = nil, 0, 0
	}
	for n, line := range strings.Split(text, "\n") {
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("uapi: line %d has no '='", n+1)
		}
		bad := func(err error) error { return fmt.Errorf("uapi: line %d: bad %s: %w", n+1, k, err) }
		var err error
		switch {
		case k == "errno":
			if v != "0" {
				return nil, fmt.Errorf("uapi: device answered errno=%s", v)
			}
		case k == "public_key":
			endPeer()
			peer = &wgtypes.Peer{}
			peer.PublicKey, err = hexKey(v)
		case peer == nil:
			switch k {
			case "private_key":
				// PublicKey stays zero: deriving it costs a scalar multiplication
				d.PrivateKey, err = hexKey(v)
			case "listen_port":
				d.ListenPort, err = uint16Value(v)
			case "fwmark":
				var m uint64
				m, err = strconv.ParseUint(v, 10, 32)
				d.FirewallMark = int(m)
			}
		default:
			switch k {
			case "preshared_key":
				peer.PresharedKey, err = hexKey(v)
			case "endpoint":
				var ap netip.AddrPort
				if ap, err = netip.ParseAddrPort(v); err == nil {
					peer.Endpoint = net.UDPAddrFromAddrPort(ap)
				}
			case "persistent_keepalive_interval":
				var s int
				s, err = uint16Value(v)
				peer.PersistentKeepaliveInterval = time.Duration(s) * time.Second
			case "last_handshake_time_sec":
				hsSec, err = strconv.ParseInt(v, 10, 64)
			case "last_handshake_time_nsec":
				hsNsec, err = strconv.ParseInt(v, 10, 64)
			case "rx_bytes":
				peer.ReceiveBytes, err = strconv.ParseInt(v, 10, 64)
			case "tx_bytes":
				peer.TransmitBytes, err = strconv.ParseInt(v, 10, 64)
			case "protocol_version":
				peer.ProtocolVersion, err = strconv.Atoi(v)
			case "allowed_ip":
				var p netip.Prefix
				if p, err = netip.ParsePrefix(v); err == nil {
					peer.AllowedIPs = append(peer.AllowedIPs, ipNets([]netip.Prefix{p})[0])
				}
			}
		}
		if err != nil {
			return nil, bad(err)
		}
	}
	endPeer()
	return d, nil
}

// uapiDrifted is drifted on a get answer, allocating nothing; unreadable text counts as drift.
func uapiDrifted(text string, want *devWant, s wgSettings) bool {
	var pskHex [64]byte
	psk := wgtypes.Key{}
	if s.psk != nil {
		psk = *s.psk
	}
	hex.Encode(pskHex[:], psk[:])
	var keyHex [64]byte
	hex.Encode(keyHex[:], s.key[:])
	keepalive := int(s.keepalive / time.Second)

	peers, sawKey, sawPort := 0, false, false
	cur := -1                     // index in want.peers of the peer being read; -1 before the first
	allowed, endpoint := 0, false // of the current peer
	endPeer := func() bool {
		return cur < 0 || (allowed == len(want.peers[cur].allowed) && endpoint)
	}
	for len(text) > 0 {
		line := text
		if i := strings.IndexByte(text, '\n'); i >= 0 {
			line, text = text[:i], text[i+1:]
		} else {
			text = ""
		}
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return true
		}
		switch k {
		case "private_key":
			if v != string(keyHex[:]) {
				return true
			}
			sawKey = true
		case "listen_port":
			if p, err := strconv.Atoi(v); err != nil || p != want.port {
				return true
			}
			sawPort = true
		case "public_key":
			if !endPeer() {
				return true
			}
			pk, err := hexKey(v)
			if err != nil {
				return true
			}
			j, found := slices.BinarySearchFunc(want.peers, pk, func(p peerWant, k wgtypes.Key) int { return bytes.Compare(p.key[:], k[:]) })
			if !found {
				return true
			}
			cur, allowed, endpoint = j, 0, false
			peers++
		case "preshared_key":
			if cur < 0 || v != string(pskHex[:]) {
				return true
			}
		case "persistent_keepalive_interval":
			if n, err := strconv.Atoi(v); cur < 0 || err != nil || n != keepalive {
				return true
			}
		case "endpoint":
			endpoint = true
		case "allowed_ip":
			p, err := netip.ParsePrefix(v)
			if cur < 0 || err != nil {
				return true
			}
			if _, ok := slices.BinarySearchFunc(want.peers[cur].allowed, p, netip.Prefix.Compare); !ok {
				return true
			}
			allowed++
		case "errno":
			if v != "0" {
				return true
			}
		}
	}
	if !endPeer() {
		return true
	}
	return !sawKey || !sawPort || peers != len(want.peers)
}

var errKeyHex = errors.New("not 64 hexadecimal digits")

// hexKey decodes a key written as 64 hex digits; its error never contains the text.
func hexKey(s string) (wgtypes.Key, error) {
	var k wgtypes.Key
	if len(s) != 2*wgtypes.KeyLen {
		return k, errKeyHex
	}
	if _, err := hex.Decode(k[:], []byte(s)); err != nil {
		return wgtypes.Key{}, errKeyHex
	}
	return k, nil
}

func uint16Value(s string) (int, error) {
	v, err := strconv.ParseUint(s, 10, 16)
	return int(v), err
}
