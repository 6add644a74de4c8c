package wireguard

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

var (
	k2 = mustKey("sB7+SM0p5cCY9zW2vD4dQwpOMFmKoIrpg1EuiHZNwlA=").PublicKey()
	k3 = mustKey("KFs1G7xMvAn7vN1bBZYS0xZj8oZoxuLEnkMEtMgtxX8=").PublicKey()
	k4 = mustKey("4Bd6lZ7o4W2ZCsjI6Nx1o8iO+Bq7m7Zf6Wb6hW1GfWI=").PublicKey()
)

func wantDev(peers ...peerWant) *devWant {
	return &devWant{name: "flannel-wg", port: 51820, peers: sortPeers(peers)}
}

// sortPeers orders peers by key, as desired does.
func sortPeers(ps []peerWant) []peerWant {
	slices.SortFunc(ps, func(a, b peerWant) int { return bytes.Compare(a.key[:], b.key[:]) })
	return ps
}

func pw(k wgtypes.Key, ep string, allowed ...string) peerWant {
	p := peerWant{key: k, endpoint: netip.MustParseAddrPort(ep)}
	for _, a := range allowed {
		p.allowed = append(p.allowed, netip.MustParsePrefix(a))
	}
	return p
}

func hp(k wgtypes.Key, ep string, allowed ...string) wgtypes.Peer {
	p := wgtypes.Peer{PublicKey: k}
	if ep != "" {
		p.Endpoint = net.UDPAddrFromAddrPort(netip.MustParseAddrPort(ep))
	}
	p.AllowedIPs = ipNets(pw(k, "1.1.1.1:1", allowed...).allowed)
	return p
}

func TestDiffDevice(t *testing.T) {
	s := wgSettings{key: testPriv}
	a, b := pw(k2, "198.51.100.2:51820", "10.5.2.0/24"), pw(k3, "198.51.100.3:51820", "10.5.3.0/24")
	tests := []struct {
		name  string
		want  *devWant
		have  wgtypes.Device
		sent  map[wgtypes.Key]netip.AddrPort
		count peerCounts
		text  []string // lines of the configuration text, in order
		drift bool     // what the poll's cheap test says
	}{
		{name: "converged: nothing", want: wantDev(a, b),
			have: wgtypes.Device{PrivateKey: testPriv, ListenPort: 51820, Peers: []wgtypes.Peer{hp(k3, "198.51.100.3:51820", "10.5.3.0/24"), hp(k2, "198.51.100.2:51820", "10.5.2.0/24")}},
			sent: map[wgtypes.Key]netip.AddrPort{k2: a.endpoint, k3: b.endpoint}},
		{name: "fresh device: key, port, every peer", want: wantDev(a),
			have:  wgtypes.Device{},
			count: peerCounts{added: 1, device: 2},
			text:  []string{"private_key=", "listen_port=51820", "public_key=", "endpoint=198.51.100.2:51820", "replace_allowed_ips=true", "allowed_ip=10.5.2.0/24"}, drift: true},
		{name: "one peer more, one less: no other peer touched", want: wantDev(a, b),
			have:  wgtypes.Device{PrivateKey: testPriv, ListenPort: 51820, Peers: []wgtypes.Peer{hp(k2, "198.51.100.2:51820", "10.5.2.0/24"), hp(k4, "198.51.100.4:51820", "10.5.4.0/24")}},
			sent:  map[wgtypes.Key]netip.AddrPort{k2: a.endpoint},
			count: peerCounts{added: 1, removed: 1},
			text:  []string{"public_key=" + hexKeyText(k3), "endpoint=198.51.100.3:51820", "allowed_ip=10.5.3.0/24", "public_key=" + hexKeyText(k4), "remove=true"}, drift: true},
		{name: "allowed IPs changed: only they are replaced", want: wantDev(a),
			have:  wgtypes.Device{PrivateKey: testPriv, ListenPort: 51820, Peers: []wgtypes.Peer{hp(k2, "198.51.100.2:51820", "10.5.9.0/24")}},
			sent:  map[wgtypes.Key]netip.AddrPort{k2: a.endpoint},
			count: peerCounts{updated: 1},
			text:  []string{"public_key=", "update_only=true", "replace_allowed_ips=true", "allowed_ip=10.5.2.0/24"}, drift: true},
		{name: "a roamed endpoint is left alone", want: wantDev(a),
			have: wgtypes.Device{PrivateKey: testPriv, ListenPort: 51820, Peers: []wgtypes.Peer{hp(k2, "203.0.113.7:40000", "10.5.2.0/24")}},
			sent: map[wgtypes.Key]netip.AddrPort{k2: a.endpoint}},
		{name: "the lease's endpoint changed: written", want: wantDev(a),
			have:  wgtypes.Device{PrivateKey: testPriv, ListenPort: 51820, Peers: []wgtypes.Peer{hp(k2, "198.51.100.9:51820", "10.5.2.0/24")}},
			sent:  map[wgtypes.Key]netip.AddrPort{k2: netip.MustParseAddrPort("198.51.100.9:51820")},
			count: peerCounts{updated: 1},
			text:  []string{"public_key=", "update_only=true", "endpoint=198.51.100.2:51820"}},
		{name: "after a restart (nothing sent yet) a differing endpoint is written once", want: wantDev(a),
			have:  wgtypes.Device{PrivateKey: testPriv, ListenPort: 51820, Peers: []wgtypes.Peer{hp(k2, "203.0.113.7:40000", "10.5.2.0/24")}},
			count: peerCounts{updated: 1},
			text:  []string{"endpoint=198.51.100.2:51820"}},
		{name: "new key: only the key", want: wantDev(a),
			have:  wgtypes.Device{PrivateKey: peerPriv, ListenPort: 51820, Peers: []wgtypes.Peer{hp(k2, "198.51.100.2:51820", "10.5.2.0/24")}},
			sent:  map[wgtypes.Key]netip.AddrPort{k2: a.endpoint},
			count: peerCounts{device: 1},
			text:  []string{"private_key=" + hexKeyText(testPriv)}, drift: true},
	}
	for _, tt := range tests {
		cfg, n := diffDevice(tt.want, s, &tt.have, tt.sent)
		if n != tt.count {
			t.Errorf("%s: counts %+v, want %+v", tt.name, n, tt.count)
		}
		text := uapiSet(cfg)
		at := 0
		for _, l := range tt.text {
			i := strings.Index(text[at:], l)
			if i < 0 {
				t.Errorf("%s: configuration text\n%s\nlacks (in order) %q", tt.name, text, l)
				break
			}
			at += i + len(l)
		}
		if len(tt.text) == 0 && text != "" {
			t.Errorf("%s: writes\n%s", tt.name, text)
		}
		if got := drifted(tt.want, s, &tt.have); got != tt.drift {
			t.Errorf("%s: drifted = %v, want %v", tt.name, got, tt.drift)
		}
	}
}

func hexKeyText(k wgtypes.Key) string {
	return uapiSet(wgtypes.Config{PrivateKey: &k})[len("private_key=") : len("private_key=")+64]
}

func TestDriftedSettings(t *testing.T) {
	psk := mustKey(testPSK)
	w := wantDev(pw(k2, "198.51.100.2:51820", "10.5.2.0/24"))
	have := wgtypes.Device{PrivateKey: testPriv, ListenPort: 51820, Peers: []wgtypes.Peer{hp(k2, "198.51.100.2:51820", "10.5.2.0/24")}}
	have.Peers[0].PresharedKey, have.Peers[0].PersistentKeepaliveInterval = psk, 25*time.Second
	s := wgSettings{key: testPriv, psk: &psk, keepalive: 25 * time.Second}
	if drifted(w, s, &have) {
		t.Fatal("drifted although converged")
	}
	for name, change := range map[string]func(d *wgtypes.Device){
		"psk removed":       func(d *wgtypes.Device) { d.Peers[0].PresharedKey = wgtypes.Key{} },
		"keepalive changed": func(d *wgtypes.Device) { d.Peers[0].PersistentKeepaliveInterval = 0 },
		"endpoint gone":     func(d *wgtypes.Device) { d.Peers[0].Endpoint = nil },
		"port changed":      func(d *wgtypes.Device) { d.ListenPort = 1 },
		"peer removed":      func(d *wgtypes.Device) { d.Peers = nil },
		"foreign peer":      func(d *wgtypes.Device) { d.Peers = append(d.Peers, hp(k3, "198.51.100.3:1", "10.5.3.0/24")) },
	} {
		d := have
		d.Peers = append([]wgtypes.Peer(nil), have.Peers...)
		change(&d)
		if !drifted(w, s, &d) {
			t.Errorf("%s: not seen as drift", name)
		}
	}
}

// newTestDevice is a userspace WireGuard device on a TUN that never comes up, so it opens
// no socket: enough to set and read its configuration.
func newTestDevice(t testing.TB) *device.Device {
	t.Helper()
	d := device.NewDevice(newDownTUN(), conn.NewStdNetBind(), device.NewLogger(device.LogLevelSilent, ""))
	t.Cleanup(d.Close)
	return d
}

// downTUN is a tun.Device that carries no packet and never comes up.
type downTUN struct {
	events chan tun.Event
	closed chan struct{}
	once   sync.Once
}

func newDownTUN() *downTUN {
	return &downTUN{events: make(chan tun.Event), closed: make(chan struct{})}
}

func (d *downTUN) File() *os.File { return nil }
func (d *downTUN) Read([][]byte, []int, int) (int, error) {
	<-d.closed
	return 0, os.ErrClosed
}
func (d *downTUN) Write(bufs [][]byte, _ int) (int, error) { return len(bufs), nil }
func (d *downTUN) MTU() (int, error)                       { return 1420, nil }
func (d *downTUN) Name() (string, error)                   { return "test", nil }
func (d *downTUN) Events() <-chan tun.Event                { return d.events }
func (d *downTUN) BatchSize() int                          { return 1 }
func (d *downTUN) Close() error {
	d.once.Do(func() { close(d.closed); close(d.events) })
	return nil
}

// The configuration text drives a real userspace device to the desired state, and what
// the device reports back is parsed into the same state: a second diff is empty. Peers
// are then removed one by one, never all at once.
func TestUAPIRoundTrip(t *testing.T) {
	dev := newTestDevice(t)
	psk := mustKey(testPSK)
	s := wgSettings{key: testPriv, psk: &psk, keepalive: 25 * time.Second}
	w := &devWant{name: "flannel-wg-v6", port: 51821, peers: sortPeers([]peerWant{
		pw(k2, "[2001:db8::2]:51821", "2001:db8:1000:2::/64"),
		pw(k3, "198.51.100.3:51820", "10.5.3.0/24", "2001:db8:1000:3::/64"),
	})}
	get := func() *wgtypes.Device {
		text, err := dev.IpcGet()
		if err != nil {
			t.Fatal(err)
		}
		d, err := parseUAPI(text)
		if err != nil {
			t.Fatalf("%v in\n%s", err, text)
		}
		return d
	}
	cfg, n := diffDevice(w, s, get(), nil)
	if n.added != 2 || n.device != 2 {
		t.Fatalf("first diff %+v", n)
	}
	if err := dev.IpcSet(uapiSet(cfg)); err != nil {
		t.Fatal(err)
	}
	have := get()
	if have.PrivateKey != testPriv || have.ListenPort != 51821 || len(have.Peers) != 2 {
		t.Fatalf("device after the set: port %d, %d peers, keys ok %v", have.ListenPort, len(have.Peers), have.PrivateKey == testPriv)
	}
	if _, n := diffDevice(w, s, have, map[wgtypes.Key]netip.AddrPort{k2: w.peers[0].endpoint, k3: w.peers[1].endpoint}); n.total() != 0 {
		t.Errorf("second diff %+v: the device does not report what was set", n)
	}
	text := func() string {
		t.Helper()
		s, err := dev.IpcGet()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if drifted(w, s, have) || uapiDrifted(text(), w, s) {
		t.Error("drifted after convergence")
	}
	// the poll's text test sees what the parsed test sees
	for name, change := range map[string]string{
		"peer removed":      "public_key=" + hexKeyText(k2) + "\nremove=true\n",
		"psk changed":       "public_key=" + hexKeyText(k2) + "\npreshared_key=" + strings.Repeat("1", 64) + "\n",
		"keepalive changed": "public_key=" + hexKeyText(k2) + "\npersistent_keepalive_interval=0\n",
		"allowed IP added":  "public_key=" + hexKeyText(k2) + "\nallowed_ip=10.9.9.0/24\n",
		"allowed IPs gone":  "public_key=" + hexKeyText(k3) + "\nreplace_allowed_ips=true\n",
		"foreign peer":      "public_key=" + hexKeyText(k4) + "\nallowed_ip=10.5.4.0/24\n",
		"port changed":      "listen_port=4000\n",
		"key changed":       "private_key=" + hexKeyText(peerPriv) + "\n",
	} {
		if err := dev.IpcSet(change); err != nil {
			t.Fatal(err)
		}
		if !uapiDrifted(text(), w, s) || !drifted(w, s, get()) {
			t.Errorf("%s: not seen as drift", name)
		}
		cfg, _ := diffDevice(w, s, get(), nil)
		if err := dev.IpcSet(uapiSet(cfg)); err != nil {
			t.Fatal(err)
		}
		if uapiDrifted(text(), w, s) {
			t.Errorf("%s: drift after the repair", name)
		}
	}
	// a peer removed: only it goes
	w2 := &devWant{name: w.name, port: w.port, peers: []peerWant{pw(k3, "198.51.100.3:51820", "10.5.3.0/24", "2001:db8:1000:3::/64")}}
	cfg, n = diffDevice(w2, s, have, nil)
	if n != (peerCounts{removed: 1}) || len(cfg.Peers) != 1 || !cfg.Peers[0].Remove || cfg.Peers[0].PublicKey != k2 {
		t.Fatalf("removal diff %+v %+v", n, cfg.Peers)
	}
	if err := dev.IpcSet(uapiSet(cfg)); err != nil {
		t.Fatal(err)
	}
	if have = get(); len(have.Peers) != 1 || have.Peers[0].PublicKey != k3 {
		t.Errorf("peers after the removal: %+v", have.Peers)
	}
}

func TestParseUAPI(t *testing.T) {
	text := "private_key=" + hexKeyText(testPriv) + "\nlisten_port=51820\nfwmark=7\n" +
		"public_key=" + hexKeyText(k2) + "\npreshared_key=" + strings.Repeat("0", 64) + "\nprotocol_version=1\n" +
		"endpoint=[2001:db8::2]:51821\nlast_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\n" +
		"tx_bytes=10\nrx_bytes=20\npersistent_keepalive_interval=25\nallowed_ip=10.5.2.0/24\nallowed_ip=2001:db8:1000:2::/64\n" +
		"public_key=" + hexKeyText(k3) + "\nnew_key_of_a_later_version=1\nerrno=0\n\n"
	d, err := parseUAPI(text)
	if err != nil {
		t.Fatal(err)
	}
	if d.PrivateKey != testPriv || d.ListenPort != 51820 || d.FirewallMark != 7 || len(d.Peers) != 2 {
		t.Fatalf("device %+v", d)
	}
	p := d.Peers[0]
	if p.PublicKey != k2 || p.Endpoint.String() != "[2001:db8::2]:51821" || p.PersistentKeepaliveInterval != 25*time.Second ||
		len(p.AllowedIPs) != 2 || p.ReceiveBytes != 20 || p.TransmitBytes != 10 || p.LastHandshakeTime.Unix() != 1700000000 {
		t.Errorf("peer %+v", p)
	}
	for _, bad := range []string{"listen_port=x\n", "private_key=" + strings.Repeat("g", 64) + "\n", "noequals\n", "errno=22\n",
		"public_key=" + hexKeyText(k2) + "\nallowed_ip=10.5.2.0\n"} {
		if _, err := parseUAPI(bad); err == nil {
			t.Errorf("accepted %q", bad)
		} else if strings.Contains(err.Error(), strings.Repeat("g", 64)) {
			t.Errorf("the error quotes a key: %v", err)
		}
	}
}

// FuzzParseUAPI: the text comes from a device (and, with wg(8), from whoever set it);
// neither parseUAPI nor the poll's uapiDrifted panics, and a device parseUAPI accepts
// renders back into text it accepts.
func FuzzParseUAPI(f *testing.F) {
	f.Add("private_key=" + hexKeyText(testPriv) + "\nlisten_port=51820\npublic_key=" + hexKeyText(k2) + "\nallowed_ip=10.5.2.0/24\nendpoint=1.2.3.4:5\n")
	f.Add("public_key=" + hexKeyText(k3) + "\npersistent_keepalive_interval=65535\nlast_handshake_time_sec=-1\n")
	f.Add("errno=0\n\n")
	want := wantDev(pw(k2, "1.2.3.4:5", "10.5.2.0/24"))
	f.Fuzz(func(t *testing.T, text string) {
		uapiDrifted(text, want, wgSettings{key: testPriv}) // must not panic
		d, err := parseUAPI(text)
		if err != nil {
			return
		}
		cfg := wgtypes.Config{PrivateKey: &d.PrivateKey, ListenPort: &d.ListenPort}
		for _, p := range d.Peers {
			ka := p.PersistentKeepaliveInterval
			pc := wgtypes.PeerConfig{PublicKey: p.PublicKey, PresharedKey: &p.PresharedKey, Endpoint: p.Endpoint,
				PersistentKeepaliveInterval: &ka, ReplaceAllowedIPs: true, AllowedIPs: p.AllowedIPs}
			cfg.Peers = append(cfg.Peers, pc)
		}
		if _, err := parseUAPI(uapiSet(cfg)); err != nil {
			t.Fatalf("the rendering of an accepted device is refused: %v", err)
		}
	})
}
