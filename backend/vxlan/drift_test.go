package vxlan

import (
	"context"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/netlinkx"
	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

// TestIntegrationDriftDevices: Drift reports a missing device, nothing once converged, and
// a changed MAC, MTU, up flag and addresses, without writing.
func TestIntegrationDriftDevices(t *testing.T) {
	l := newLab(t)
	ctx := context.Background()
	cfg := testConfig(t, `{"Type":"vxlan"}`, false)
	own := ownLease(false)
	own.Attrs = subnet.LeaseAttrs{BackendType: "vxlan", PublicIP: netip.MustParseAddr("192.0.2.1"),
		BackendData: []byte(`{"VNI":1,"VtepMAC":"0e:00:00:00:00:01"}`)}
	p2 := peer("10.5.2.0/24", "192.0.2.2", "0e:00:00:00:00:02")
	peers := subnet.PeersOf(p2, *own)
	ro, ch := l.backend(cfg)

	d, err := ro.Drift(ctx, own, peers)
	sameDrift(t, "no device yet", d, err, backend.Drift{Missing: []backend.Object{
		{Kind: observe.Device, Device: "flannel.1", Detail: "absent"},
		{Kind: observe.Address, Device: "flannel.1", Dst: netip.MustParsePrefix("10.5.1.0/32")},
		{Kind: observe.Neigh, Device: "flannel.1", IP: netip.MustParseAddr("10.5.2.0"), MAC: mustMAC("0e:00:00:00:00:02")},
		{Kind: observe.FDB, Device: "flannel.1", IP: netip.MustParseAddr("192.0.2.2"), MAC: mustMAC("0e:00:00:00:00:02")},
		{Kind: observe.Route, Device: "flannel.1", Dst: netip.MustParsePrefix("10.5.2.0/24"), Gateway: netip.MustParseAddr("10.5.2.0")},
		{Kind: observe.Nexthop, Device: "flannel.1", Gateway: netip.MustParseAddr("10.5.2.0")},
	}})
	if n := ch.writes.Load(); n != 0 {
		t.Fatalf("Drift made %d writes", n)
	}

	b, _ := l.backend(cfg)
	if _, err := b.Prepare(ctx, own); err != nil {
		t.Fatal(err)
	}
	nw, err := b.Start(ctx, own)
	if err != nil {
		t.Fatal(err)
	}
	if err := nw.Reconcile(ctx, peers); err != nil {
		t.Fatal(err)
	}
	for name, dr := range map[string]backend.DriftReader{"running": b, "read-only": ro} {
		if d, err := dr.Drift(ctx, own, peers); err != nil || !d.Converged() {
			t.Errorf("%s backend after a round: %+v, %v", name, d, err)
		}
	}

	link, err := l.h.LinkByName("flannel.1")
	if err != nil {
		t.Fatal(err)
	}
	for i, err := range []error{
		l.h.LinkSetDown(link),
		l.h.LinkSetMTU(link, 1400),
		l.h.LinkSetHardwareAddr(link, mustMAC("0e:00:00:00:00:77")),
		l.h.AddrAdd(link, &netlink.Addr{IPNet: netlinkx.IPNet(netip.MustParsePrefix("10.5.77.0/32"))}),
	} {
		if err != nil {
			t.Fatalf("change %d: %v", i, err)
		}
	}
	before := ch.writes.Load()
	d, err = ro.Drift(ctx, own, peers)
	// Down flushed neighbours, routes and nexthops; FDB entries stay.
	sameDrift(t, "a changed device", d, err, backend.Drift{
		Missing: []backend.Object{
			{Kind: observe.Device, Device: "flannel.1", Detail: "mac 0e:00:00:00:00:77, want 0e:00:00:00:00:01, mtu 1400, want 1450, down"},
			{Kind: observe.Neigh, Device: "flannel.1", IP: netip.MustParseAddr("10.5.2.0"), MAC: mustMAC("0e:00:00:00:00:02")},
			{Kind: observe.Route, Device: "flannel.1", Dst: netip.MustParsePrefix("10.5.2.0/24"), Gateway: netip.MustParseAddr("10.5.2.0")},
			{Kind: observe.Nexthop, Device: "flannel.1", Gateway: netip.MustParseAddr("10.5.2.0")},
		},
		Stale: []backend.Object{{Kind: observe.Address, Device: "flannel.1", Dst: netip.MustParsePrefix("10.5.77.0/32")}},
	})
	if n := ch.writes.Load() - before; n != 0 {
		t.Fatalf("Drift made %d writes", n)
	}
	if err := nw.Reconcile(ctx, peers); err != nil {
		t.Fatal(err)
	}
	if d, err := ro.Drift(ctx, own, peers); err != nil || !d.Converged() {
		t.Errorf("after the repair: %+v, %v", d, err)
	}
}
