package diagnose

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flannel-go/flannel/pkg/control"
	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

const wgConf = `{"Network":"10.5.0.0/16","Backend":{"Type":"wireguard"}}`

func wgKey(i int) string { return fmt.Sprintf("%043dA=", i) }

// fakeWG is a wireguard backend: flannel-wg holding the peers of leases 2 and 3.
type fakeWG struct {
	fakeBackend
	wg *WireGuard
}

func (b *fakeWG) Type() string      { return "wireguard" }
func (b *fakeWG) Devices() []string { return []string{"flannel-wg"} }
func (b *fakeWG) MTU() int          { return 1420 }
func (b *fakeWG) WireGuard(context.Context, *subnet.Lease, []subnet.Lease) (*WireGuard, error) {
	return b.wg, nil
}
func (b *fakeWG) TxChecksum() ([]Offload, error) { return nil, ErrUnsupported }
func (b *fakeWG) Encap() Encap {
	e := b.fakeBackend.Encap()
	e.Overhead, e.Overhead6, e.UDPPort, e.WireGuard = 80, 80, 51820, true
	return e
}

func wgWorld() (*world, *fakeWG) {
	w := healthy()
	w.etcd.config = wgConf
	cfg, err := subnet.ParseConfig(wgConf)
	if err != nil {
		panic(err)
	}
	doc, _ := json.Marshal(cfg)
	w.daemon.Config.Network = doc
	w.daemon.Readiness.Checks = append(w.daemon.Readiness.Checks, control.Check{Name: "wireguard", OK: true, Note: "userspace WireGuard: flannel-wg"})
	for i := range w.etcd.leases {
		a := &w.etcd.leases[i].Lease.Attrs
		a.BackendType = "wireguard"
		a.BackendData = json.RawMessage(fmt.Sprintf(`{"PublicKey":%q,"Port":51820}`, wgKey(i+1)))
	}
	w.files["run/flannel/subnet.env"].Data = []byte(strings.Replace(subnetEnv, "FLANNEL_MTU=1450", "FLANNEL_MTU=1420", 1))
	for i := range w.kernel.links {
		switch w.kernel.links[i].Name {
		case "flannel.1":
			w.kernel.links[i] = Link{Name: "flannel-wg", Index: 3, Type: "tun", MTU: 1420, Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("10.5.1.0/32")}}
		case "cni0":
			w.kernel.links[i].MTU = 1420
		}
	}
	dev := WGDevice{Name: "flannel-wg", Implementation: "userspace", ListenPort: 51820, PublicKey: wgKey(1)}
	wg := &WireGuard{}
	for i := 2; i <= 3; i++ {
		dev.Peers = append(dev.Peers, WGPeer{PublicKey: wgKey(i), Endpoint: netip.MustParseAddrPort(fmt.Sprintf("192.0.2.%d:51820", 10+i)),
			LastHandshake: now.Add(-10 * time.Second)})
		l := vxLease(i)
		wg.Want = append(wg.Want, WGPeerWant{Lease: l.Key(), Device: "flannel-wg", PublicKey: wgKey(i),
			AllowedIPs: []netip.Prefix{l.Subnet}})
	}
	wg.Devices = []WGDevice{dev}
	b := &fakeWG{wg: wg}
	return w, b
}

func (w *world) runWith(b Backend) *Report {
	d := w.deps()
	d.Backend = func(*subnet.Config, *Iface) (Backend, error) { return b, nil }
	return Run(context.Background(), NewState(w.opts, d), Checks(w.opts.Kube))
}

func TestWireguardChecks(t *testing.T) {
	tests := []struct {
		name    string
		fault   func(w *world, b *fakeWG)
		outcome map[string]Outcome
		says    string // in the first failed check's evidence
		object  string
	}{
		{"healthy", func(*world, *fakeWG) {}, map[string]Outcome{CheckWGImpl: Passed, CheckWGHandshakes: Passed, CheckDevice: Passed}, "", ""},
		{"no daemon: the device kind", func(w *world, _ *fakeWG) { w.daemon = nil },
			map[string]Outcome{CheckWGImpl: Passed, CheckWGHandshakes: Passed, CheckDaemon: Failed}, "not running", ""},
		{"daemon and device disagree", func(w *world, b *fakeWG) { b.wg.Devices[0].Implementation = "kernel" },
			map[string]Outcome{CheckWGImpl: Failed}, `the daemon says "userspace WireGuard: flannel-wg" but the devices are kernel (flannel-wg)`, "flannel-wg"},
		{"no handshake", func(_ *world, b *fakeWG) { b.wg.Devices[0].Peers[1].LastHandshake = time.Unix(0, 0) },
			map[string]Outcome{CheckWGHandshakes: Failed}, "192.0.2.13 (10.5.3.0/24): no handshake with key " + wgKey(3) + " on flannel-wg", wgKey(3)},
		{"old handshake", func(_ *world, b *fakeWG) { b.wg.Devices[0].Peers[0].LastHandshake = now.Add(-5 * time.Minute) },
			map[string]Outcome{CheckWGHandshakes: Failed}, "latest handshake with key " + wgKey(2) + " on flannel-wg 5m0s ago", "192.0.2.12"},
		{"peer missing", func(_ *world, b *fakeWG) { b.wg.Devices[0].Peers = b.wg.Devices[0].Peers[:1] },
			map[string]Outcome{CheckWGHandshakes: Failed}, "flannel-wg holds no peer with its key " + wgKey(3), "192.0.2.13"},
		{"underlay down: not blamed", func(w *world, b *fakeWG) {
			w.prober.drop = map[netip.Addr]bool{netip.MustParseAddr("192.0.2.13"): true, netip.MustParseAddr("10.5.3.0"): true}
			b.wg.Devices[0].Peers[1].LastHandshake = time.Time{}
		}, map[string]Outcome{CheckWGHandshakes: Passed, CheckPeerUnderlay: Failed}, "do not answer ICMP echo on the underlay", "192.0.2.13"},
		{"overlay dropped", func(w *world, b *fakeWG) {
			w.prober.drop = map[netip.Addr]bool{netip.MustParseAddr("10.5.2.0"): true}
			b.wg.Devices[0].Peers[0].LastHandshake = time.Time{}
		}, map[string]Outcome{CheckPeerOverlay: Failed, CheckWGHandshakes: Failed}, "does not answer through flannel-wg (see wireguard-handshakes)", "192.0.2.12 udp/51820"},
		{"device drift", func(_ *world, b *fakeWG) {
			b.missing = []Object{drift(observe.Device, "device flannel-wg (mtu 1400, want 1420)")}
		}, map[string]Outcome{CheckDevice: Failed}, "mtu 1400, want 1420", ""},
		{"device key is not the lease's", func(_ *world, b *fakeWG) {
			b.missing = []Object{drift(observe.Device, "device flannel-wg (public key x, want the lease's y)")}
			b.wg.Devices[0].PublicKey = wgKey(9)
		}, map[string]Outcome{CheckDevice: Failed}, "public key x, want the lease's y", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, b := wgWorld()
			tc.fault(w, b)
			r := w.runWith(b)
			for name, want := range tc.outcome {
				if got := result(r, name); got.Outcome != want {
					t.Errorf("%s is %s (%s), want %s", name, got.Outcome, got.Evidence, want)
				}
			}
			failed := failedNames(r)
			for _, n := range failed {
				if _, ok := tc.outcome[n]; !ok {
					t.Errorf("%s failed too: %s", n, result(r, n).Evidence)
				}
			}
			if tc.says == "" {
				if r.Failed() {
					t.Errorf("failed: %v", failed)
				}
				return
			}
			var first *Result
			for i := range r.Checks {
				if r.Checks[i].Outcome == Failed {
					first = &r.Checks[i]
					break
				}
			}
			if first == nil || !strings.Contains(first.Evidence, tc.says) {
				t.Fatalf("first failure %+v does not say %q", first, tc.says)
			}
			if strings.Contains(tc.name, "key is not") && !strings.Contains(first.Fix, "restart flanneld, which advertises its key file") {
				t.Errorf("fix %q", first.Fix)
			}
			if first.Fix == "" {
				t.Errorf("%s has no fix", first.Name)
			}
			if tc.object != "" && !slices.Contains(first.Objects, tc.object) {
				t.Errorf("%s objects %q do not name %q", first.Name, first.Objects, tc.object)
			}
		})
	}
}

// The wireguard checks are left out of other backends' reports.
func TestWireguardChecksOnlyForWireguard(t *testing.T) {
	r := healthy().run()
	for _, c := range r.Checks {
		if c.Name == CheckWGImpl || c.Name == CheckWGHandshakes {
			t.Errorf("vxlan report has %s", c.Name)
		}
	}
	w, b := wgWorld()
	r = w.runWith(b)
	if ev := result(r, CheckDevice).Evidence; !strings.Contains(ev, "listen port 51820, public key "+wgKey(1)) {
		t.Errorf("device evidence %q", ev)
	}
}

// The link objects of a wireguard backend's Drift (a stale address, a stale route, the
// missing blackhole) fail the check they belong to, named as objects, with the fix for a
// running daemon and for a stopped one.
func TestWireguardLinkDrift(t *testing.T) {
	tests := []struct {
		name           string
		missing, stale []Object
		check, says    string
	}{
		{"a stale address", nil, []Object{drift(observe.Address, "address 10.5.77.0/32 dev flannel-wg")},
			CheckDevice, "stale: address 10.5.77.0/32 dev flannel-wg"},
		{"a stale route", nil, []Object{drift(observe.Route, "route 10.5.99.0/24 dev flannel-wg")},
			CheckPeerObjects, "1 stale (no admitted lease explains them): route 10.5.99.0/24 dev flannel-wg"},
		{"the blackhole missing", []Object{drift(observe.Route, "route 10.5.0.0/16 (blackhole metric 1000000)")}, nil,
			CheckPeerObjects, "1 missing or different: route 10.5.0.0/16 (blackhole metric 1000000)"},
	}
	for _, tc := range tests {
		for _, running := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s, daemon running %v", tc.name, running), func(t *testing.T) {
				w, b := wgWorld()
				if !running {
					w.daemon = nil
				}
				b.missing, b.stale = tc.missing, tc.stale
				r := w.runWith(b)
				c := result(r, tc.check)
				obj := append(tc.missing, tc.stale...)[0].Text
				if c.Outcome != Failed || !strings.Contains(c.Evidence, tc.says) || !slices.Contains(c.Objects, obj) {
					t.Fatalf("%s is %s %q %q, want failed saying %q naming %q", tc.check, c.Outcome, c.Evidence, c.Objects, tc.says, obj)
				}
				want := "the running daemon repairs these"
				if !running {
					want = "start flanneld"
				}
				if !strings.Contains(c.Fix, want) {
					t.Errorf("fix %q does not say %q", c.Fix, want)
				}
				for _, n := range failedNames(r) {
					if n != tc.check && n != CheckDaemon {
						t.Errorf("%s failed too: %s", n, result(r, n).Evidence)
					}
				}
			})
		}
	}
}
