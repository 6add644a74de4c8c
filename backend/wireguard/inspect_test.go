package wireguard

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/flannel-go/flannel/subnet"
)

// Drift and Inspect read what a running backend made, from a second backend that was
// never prepared (as diagnose builds it): converged is empty, a peer removed by hand is
// missing, a foreign peer stale, a lease key the device does not hold a device drift. No
// key file is made and nothing is configured.
func TestDriftReadsOnly(t *testing.T) {
	r := newRig(t, `{"Type":"wireguard"}`)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
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

	drift := func() (missing, stale string) {
		t.Helper()
		d, err := reader.Drift(ctx, &own, peers)
		if err != nil {
			t.Fatal(err)
		}
		m, s := d.Strings()
		return strings.Join(m, "\n"), strings.Join(s, "\n")
	}
	if m, s := drift(); m != "" || s != "" {
		t.Fatalf("converged backend drifts: missing %q stale %q", m, s)
	}
	devs, want, err := reader.Inspect(ctx, &own, peers)
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 2 || devs[0].Implementation != implKernel || devs[0].PublicKey != b.node.pub.String() || devs[0].ListenPort != 51820 ||
		len(devs[0].Peers) != 2 || len(want) != 4 {
		t.Errorf("Inspect: %+v want %+v", devs, want)
	}

	r.wg.removePeer(t, "flannel-wg-v6", k3)
	foreign, _ := wgtypes.GeneratePrivateKey()
	if err := r.wg.ConfigureDevice("flannel-wg", wgtypes.Config{Peers: []wgtypes.PeerConfig{{PublicKey: foreign.PublicKey()}}}); err != nil {
		t.Fatal(err)
	}
	r.wg.takeOps()
	m, s := drift()
	if !strings.Contains(m, "peer dev flannel-wg-v6 ("+k3.String()+" endpoint [2001:db8::3]:51821 allowed-ips 2001:db8:1000:3::/64; absent)") {
		t.Errorf("missing %q does not name the removed peer", m)
	}
	if !strings.Contains(s, "peer dev flannel-wg ("+foreign.PublicKey().String()) {
		t.Errorf("stale %q does not name the foreign peer", s)
	}

	wrong := own
	wrong.Attrs = *b.node.attrs()
	other, _ := wgtypes.GeneratePrivateKey()
	wrong.Attrs.BackendData = marshalBackendData(other.PublicKey(), 51820)
	wrong.Attrs.BackendV6Data = marshalBackendData(other.PublicKey(), 51821)
	d, err := reader.Drift(ctx, &wrong, subnet.PeersOf())
	if err != nil {
		t.Fatal(err)
	}
	ms, _ := d.Strings()
	if len(ms) == 0 || !strings.Contains(strings.Join(ms, "\n"), "want the lease's "+other.PublicKey().String()) {
		t.Errorf("a lease key the device lacks: missing %q", ms)
	}

	if ops := r.wg.takeOps(); len(ops) != 0 {
		t.Errorf("reading configured the devices: %v", ops)
	}
	if _, err := os.Stat(reader.keyFile); !os.IsNotExist(err) {
		t.Errorf("reading made a key file: %v", err)
	}
}
