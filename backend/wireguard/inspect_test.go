package wireguard

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

// driftRig is a node converged with the peers of k2 and k3, and a reader of it built as
// diagnose builds one: never prepared, with a key file that does not exist.
type driftRig struct {
	*rig
	b, reader *Backend
	own       subnet.Lease
	peers     subnet.Peers
}

func newDriftRig(ctx context.Context, t *testing.T, backendJSON string) *driftRig {
	t.Helper()
	r := newRig(t, backendJSON)
	b := r.backend()
	r.start(ctx, b)
	peers := peerLeases(t, k2, k3)
	if err := b.Reconcile(ctx, peers); err != nil {
		t.Fatal(err)
	}
	r.wg.takeOps()
	reader, err := newBackend(r.links, Options{KeyFile: filepath.Join(t.TempDir(), "wgkey")}, r.ext, r.cfg)
	if err != nil {
		t.Fatal(err)
	}
	reader.newKernel = func() (wgClient, error) { return r.wg, nil }
	own := *ownLease
	own.Attrs = *b.node.attrs()
	return &driftRig{rig: r, b: b, reader: reader, own: own, peers: peers}
}

func (d *driftRig) drift(ctx context.Context, t *testing.T) backend.Drift {
	t.Helper()
	dr, err := d.reader.Drift(ctx, &d.own, d.peers)
	if err != nil {
		t.Fatal(err)
	}
	return dr
}

// ip runs ip(8) with args in the rig's namespace.
func (d *driftRig) ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", append([]string{"-n", d.ns.Name}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v %s", strings.Join(args, " "), err, out)
	}
}

// changes counts d's objects as the reconciler reports what it writes: addresses and
// routes added and removed, peers written (added or updated) and removed.
func changes(d backend.Drift) map[string]int {
	n := map[string]int{}
	for _, o := range d.Missing {
		if o.Kind != observe.Device {
			n[string(o.Kind)+"/write"]++
		}
	}
	for _, o := range d.Stale {
		n[string(o.Kind)+"/remove"]++
	}
	return n
}

// reported is what a round reported in changes' terms.
func reported(obs map[string]int) map[string]int {
	n := map[string]int{}
	for k, v := range obs {
		kind, op, _ := strings.Cut(k, "/")
		if v == 0 || kind == string(observe.Device) {
			continue
		}
		if op == string(observe.Add) || op == string(observe.Repair) {
			op = "write"
		}
		n[kind+"/"+op] += v
	}
	return n
}

func peerString(dev string, key wgtypes.Key, ep string, allowed, why string) string {
	s := fmt.Sprintf("peer dev %s (%s endpoint %s allowed-ips %s", dev, key, ep, allowed)
	if why != "" {
		s += "; " + why
	}
	return s + ")"
}

// Drift names exactly what a Reconcile round writes (missing) and deletes (stale): each
// case changes a converged node by hand; Drift reports it, the round that follows reports
// as many changes of each kind, and Drift is empty after it.
func TestDriftMatchesReconcile(t *testing.T) {
	const cfg = `{"Type":"wireguard","PSK":"` + testPSK + `","PersistentKeepaliveInterval":25}`
	k2v4 := peerString("flannel-wg", k2, "192.0.2.2:51820", "10.5.2.0/24", "")
	k3v4 := peerString("flannel-wg", k3, "192.0.2.3:51820", "10.5.3.0/24", "")
	tests := []struct {
		name           string
		change         func(t *testing.T, d *driftRig)
		missing, stale []string
	}{
		{
			name:   "an address in the network added by hand",
			change: func(t *testing.T, d *driftRig) { d.ip(t, "addr", "add", "10.5.77.0/32", "dev", "flannel-wg") },
			stale:  []string{"address 10.5.77.0/32 dev flannel-wg"},
		},
		{
			name: "an IPv6 address in the network added by hand",
			change: func(t *testing.T, d *driftRig) {
				d.ip(t, "addr", "add", "2001:db8:1000:77::1/128", "dev", "flannel-wg-v6", "nodad")
			},
			stale: []string{"address 2001:db8:1000:77::1/128 dev flannel-wg-v6"},
		},
		{
			name:   "an address outside the networks is not the backend's",
			change: func(t *testing.T, d *driftRig) { d.ip(t, "addr", "add", "198.51.100.7/32", "dev", "flannel-wg") },
		},
		{
			name:    "the own address removed: the kernel drops the routes with its last one",
			change:  func(t *testing.T, d *driftRig) { d.ip(t, "addr", "del", "10.5.1.0/32", "dev", "flannel-wg") },
			missing: []string{"address 10.5.1.0/32 dev flannel-wg", "route 10.5.0.0/16 dev flannel-wg"},
		},
		{
			name:   "a route in the network through the device",
			change: func(t *testing.T, d *driftRig) { d.ip(t, "route", "add", "10.5.99.0/24", "dev", "flannel-wg") },
			stale:  []string{"route 10.5.99.0/24 dev flannel-wg"},
		},
		{
			name: "a route outside the networks through the device",
			change: func(t *testing.T, d *driftRig) {
				d.ip(t, "route", "add", "198.51.100.0/24", "via", "10.5.1.9", "dev", "flannel-wg", "onlink")
			},
			stale: []string{"route 198.51.100.0/24 via 10.5.1.9 dev flannel-wg"},
		},
		{
			name: "an IPv6 route through the device",
			change: func(t *testing.T, d *driftRig) {
				d.ip(t, "-6", "route", "add", "2001:db8:77::/64", "dev", "flannel-wg-v6")
			},
			stale: []string{"route 2001:db8:77::/64 dev flannel-wg-v6 (metric 1024)"},
		},
		{
			name: "a route through the device in another table is not the backend's",
			change: func(t *testing.T, d *driftRig) {
				d.ip(t, "route", "add", "10.5.99.0/24", "dev", "flannel-wg", "table", "100")
			},
		},
		{
			name: "host-gw's routes to peers through the external interface bypass the devices",
			change: func(t *testing.T, d *driftRig) {
				d.ip(t, "route", "add", "10.5.2.0/24", "via", "192.0.2.2", "dev", "u0")
				d.ip(t, "-6", "route", "add", "2001:db8:1000:2::/64", "via", "2001:db8::2", "dev", "u0")
			},
			stale: []string{"route 10.5.2.0/24 via 192.0.2.2 dev u0", "route 2001:db8:1000:2::/64 via 2001:db8::2 dev u0 (metric 1024)"},
		},
		{
			name: "a route to the whole network through the external interface",
			change: func(t *testing.T, d *driftRig) {
				d.ip(t, "route", "add", "10.5.0.0/16", "via", "192.0.2.9", "dev", "u0", "metric", "5")
			},
			stale: []string{"route 10.5.0.0/16 via 192.0.2.9 dev u0 (metric 5)"},
		},
		{
			name: "the own subnet on the pod bridge is not a bypass",
			change: func(t *testing.T, d *driftRig) {
				d.ip(t, "link", "add", "cni0", "type", "bridge")
				d.ip(t, "link", "set", "cni0", "up")
				d.ip(t, "addr", "add", "10.5.1.1/24", "dev", "cni0")
				d.ip(t, "-6", "route", "add", "2001:db8:1000:1::/64", "dev", "cni0")
			},
		},
		{
			name: "routes through the external interface outside the networks or wider are not bypasses",
			change: func(t *testing.T, d *driftRig) {
				d.ip(t, "route", "add", "198.51.100.0/24", "via", "192.0.2.9", "dev", "u0")
				d.ip(t, "route", "add", "10.0.0.0/8", "via", "192.0.2.9", "dev", "u0")
				d.ip(t, "-6", "route", "add", "2001:db8:1000::/48", "via", "2001:db8::9", "dev", "u0")
			},
		},
		{
			name:   "the external interface's own prefix in the network is the kernel's",
			change: func(t *testing.T, d *driftRig) { d.ip(t, "addr", "add", "10.5.200.1/24", "dev", "u0") },
		},
		{
			name: "a route through the external interface in another table is not the backend's",
			change: func(t *testing.T, d *driftRig) {
				d.ip(t, "route", "add", "10.5.2.0/24", "via", "192.0.2.2", "dev", "u0", "table", "100")
				d.ip(t, "-6", "route", "add", "2001:db8:1000:2::/64", "via", "2001:db8::2", "dev", "u0", "table", "100")
			},
		},
		{
			name:    "the network route removed",
			change:  func(t *testing.T, d *driftRig) { d.ip(t, "route", "del", "10.5.0.0/16", "dev", "flannel-wg") },
			missing: []string{"route 10.5.0.0/16 dev flannel-wg"},
		},
		{
			name: "the network route in another form",
			change: func(t *testing.T, d *driftRig) {
				d.ip(t, "route", "del", "10.5.0.0/16", "dev", "flannel-wg")
				d.ip(t, "route", "add", "10.5.0.0/16", "dev", "flannel-wg", "metric", "5")
			},
			missing: []string{"route 10.5.0.0/16 dev flannel-wg"},
			stale:   []string{"route 10.5.0.0/16 dev flannel-wg (metric 5)"},
		},
		{
			name: "the blackhole removed",
			change: func(t *testing.T, d *driftRig) {
				d.ip(t, "route", "del", "blackhole", "10.5.0.0/16", "metric", "1000000")
			},
			missing: []string{"route 10.5.0.0/16 (blackhole metric 1000000)"},
		},
		{
			name: "the IPv6 blackhole removed",
			change: func(t *testing.T, d *driftRig) {
				d.ip(t, "-6", "route", "del", "blackhole", "2001:db8:1000::/56", "metric", "1000000")
			},
			missing: []string{"route 2001:db8:1000::/56 (blackhole metric 1000000)"},
		},
		{
			name: "the blackholes of an old network",
			change: func(t *testing.T, d *driftRig) {
				d.ip(t, "route", "add", "blackhole", "10.5.7.0/24", "metric", "1000000")
				d.ip(t, "-6", "route", "add", "blackhole", "2001:db8:7::/48", "metric", "1000000")
			},
			stale: []string{"route 10.5.7.0/24 (blackhole metric 1000000)", "route 2001:db8:7::/48 (blackhole metric 1000000)"},
		},
		{
			name: "a blackhole of another metric is not the backend's",
			change: func(t *testing.T, d *driftRig) {
				d.ip(t, "route", "del", "blackhole", "10.5.0.0/16", "metric", "1000000")
				d.ip(t, "route", "add", "blackhole", "10.5.0.0/16", "metric", "7")
			},
			missing: []string{"route 10.5.0.0/16 (blackhole metric 1000000)"},
		},
		{
			name:    "the device down, with another MTU: the kernel drops its routes",
			change:  func(t *testing.T, d *driftRig) { d.ip(t, "link", "set", "flannel-wg", "down", "mtu", "1300") },
			missing: []string{"device flannel-wg (mtu 1300, want 1420, down)", "route 10.5.0.0/16 dev flannel-wg"},
		},
		{
			name:   "the device deleted: everything on it, not the blackhole",
			change: func(t *testing.T, d *driftRig) { d.ip(t, "link", "del", "flannel-wg") },
			missing: []string{"device flannel-wg (absent)", "address 10.5.1.0/32 dev flannel-wg", "route 10.5.0.0/16 dev flannel-wg",
				k2v4, k3v4},
		},
		{
			name: "the device deleted with the blackhole",
			change: func(t *testing.T, d *driftRig) {
				d.ip(t, "link", "del", "flannel-wg")
				d.ip(t, "route", "del", "blackhole", "10.5.0.0/16", "metric", "1000000")
			},
			missing: []string{"device flannel-wg (absent)", "address 10.5.1.0/32 dev flannel-wg", "route 10.5.0.0/16 dev flannel-wg",
				"route 10.5.0.0/16 (blackhole metric 1000000)", k2v4, k3v4},
		},
		{
			name:    "a peer removed by wg(8)",
			change:  func(t *testing.T, d *driftRig) { d.wg.removePeer(t, "flannel-wg-v6", k3) },
			missing: []string{peerString("flannel-wg-v6", k3, "[2001:db8::3]:51821", "2001:db8:1000:3::/64", "absent")},
		},
		{
			name: "a peer no lease explains",
			change: func(t *testing.T, d *driftRig) {
				configure(t, d, wgtypes.PeerConfig{PublicKey: k4})
			},
			stale: []string{"peer dev flannel-wg (" + k4.String() + " allowed-ips (none))"},
		},
		{
			name: "a peer's keepalive and preshared key changed",
			change: func(t *testing.T, d *driftRig) {
				off, none := time.Duration(0), wgtypes.Key{}
				configure(t, d, wgtypes.PeerConfig{PublicKey: k2, UpdateOnly: true, PersistentKeepaliveInterval: &off, PresharedKey: &none})
			},
			missing: []string{peerString("flannel-wg", k2, "192.0.2.2:51820", "10.5.2.0/24", "no preshared key, keepalive off, want 25s")},
		},
		{
			name: "a peer's allowed IPs changed",
			change: func(t *testing.T, d *driftRig) {
				configure(t, d, wgtypes.PeerConfig{PublicKey: k3, UpdateOnly: true, ReplaceAllowedIPs: true})
			},
			missing: []string{peerString("flannel-wg", k3, "192.0.2.3:51820", "10.5.3.0/24", "allowed-ips (none)")},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, stop := context.WithCancel(context.Background())
			defer stop()
			d := newDriftRig(ctx, t, cfg)
			if dr := d.drift(ctx, t); !dr.Converged() {
				t.Fatalf("a converged node drifts: %+v", dr)
			}
			tc.change(t, d)
			dr := d.drift(ctx, t)
			missing, stale := dr.Strings()
			slices.Sort(tc.missing)
			slices.Sort(tc.stale)
			if !slices.Equal(missing, tc.missing) || !slices.Equal(stale, tc.stale) {
				t.Errorf("Drift:\nmissing %q\n   want %q\nstale   %q\n   want %q", missing, tc.missing, stale, tc.stale)
			}
			d.obs.take()
			if err := d.b.Reconcile(ctx, d.peers); err != nil {
				t.Fatal(err)
			}
			if got, want := reported(d.obs.take()), changes(dr); !maps.Equal(got, want) {
				t.Errorf("the round reported %v, Drift said %v", got, want)
			}
			if dr := d.drift(ctx, t); !dr.Converged() {
				m, s := dr.Strings()
				t.Errorf("after a round, Drift says missing %q stale %q", m, s)
			}
		})
	}
}

// configure changes flannel-wg's WireGuard state as wg(8) would, behind the backend's back.
func configure(t *testing.T, d *driftRig, p wgtypes.PeerConfig) {
	t.Helper()
	if err := d.wg.ConfigureDevice("flannel-wg", wgtypes.Config{Peers: []wgtypes.PeerConfig{p}}); err != nil {
		t.Fatal(err)
	}
	d.wg.takeOps()
}

// Drift and Inspect read only, from a backend that was never prepared (as diagnose builds
// it): Inspect shows the devices and the peers the leases ask for, a lease key the device
// does not hold is a device drift, no key file is made and nothing is configured.
func TestDriftReadsOnly(t *testing.T) {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	d := newDriftRig(ctx, t, `{"Type":"wireguard"}`)
	devs, want, err := d.reader.Inspect(ctx, &d.own, d.peers)
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 2 || devs[0].Implementation != implKernel || devs[0].PublicKey != d.b.node.pub.String() || devs[0].ListenPort != 51820 ||
		len(devs[0].Peers) != 2 || len(want) != 4 {
		t.Errorf("Inspect: %+v want %+v", devs, want)
	}

	wrong := d.own
	other, _ := wgtypes.GeneratePrivateKey()
	wrong.Attrs.BackendData = marshalBackendData(other.PublicKey(), 51820)
	wrong.Attrs.BackendV6Data = marshalBackendData(other.PublicKey(), 51821)
	dr, err := d.reader.Drift(ctx, &wrong, subnet.PeersOf())
	if err != nil {
		t.Fatal(err)
	}
	ms, _ := dr.Strings()
	if len(ms) == 0 || !strings.Contains(strings.Join(ms, "\n"), "want the lease's "+other.PublicKey().String()) {
		t.Errorf("a lease key the device lacks: missing %q", ms)
	}

	if ops := d.wg.takeOps(); len(ops) != 0 {
		t.Errorf("reading configured the devices: %v", ops)
	}
	if _, err := os.Stat(d.reader.keyFile); !os.IsNotExist(err) {
		t.Errorf("reading made a key file: %v", err)
	}
}
