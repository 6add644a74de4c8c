package vxlan

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/netlinkx"
	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

var _ backend.DriftReader = (*Backend)(nil)

// Drift implements backend.DriftReader in scratch state; the devices must have own's VTEP
// MAC and the configured MTU.
func (b *Backend) Drift(ctx context.Context, own *subnet.Lease, peers subnet.Peers) (backend.Drift, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var d backend.Drift
	if own == nil {
		return d, errors.New("vxlan: Drift needs the node's own lease")
	}
	for _, bf := range b.fams {
		if err := ctx.Err(); err != nil {
			return d, err
		}
		f := newFamily(bf.v6, bf.name, bf.local, bf.network)
		f.nh = bf.nh
		sn, ok := own.FamilySubnet(f.v6)
		if !ok {
			return d, fmt.Errorf("vxlan: lease %s has no %s subnet", own.Key(), f.label())
		}
		f.own = sn
		f.mac = prevMAC(own, f.v6)
		usable, err := b.driftDevice(f, &d)
		if err != nil {
			return d, fmt.Errorf("vxlan: %w", err)
		}
		if usable {
			f.sizeActual(peers.Len())
			if err := b.readActual(f); err != nil {
				return d, fmt.Errorf("vxlan: %w", err)
			}
		}
		p := famParams{
			V6: f.v6, VNI: b.vc.VNI, Dev: f.index, Ext: b.ext.Iface.Index, Network: f.network, Own: f.own,
			Direct: b.vc.DirectRouting, IsDirect: f.under.isDirect, Nexthops: f.nh,
		}
		desiredFamily(p, peers, f.want, nil) // unusable peers are Reconcile's to log
		diff(f.want, f.act, &f.ops)
		f.driftObjects(&d, b.ext.Iface)
	}
	return d, nil
}

// driftDevice adds f's device differences to d, sets f.index and f.mac (the device's when
// own has none) and reports whether its objects can be read.
func (b *Backend) driftDevice(f *family, d *backend.Drift) (usable bool, err error) {
	dev := backend.Object{Kind: observe.Device, Device: f.name}
	addr := backend.Object{Kind: observe.Address, Device: f.name, Dst: f.wantAddr()}
	l, err := b.h.LinkByName(f.name)
	if err != nil && !netlinkx.IsNotFound(err) {
		return false, fmt.Errorf("look up %s: %w", f.name, err)
	}
	if err != nil {
		dev.Detail = "absent"
		d.Missing = append(d.Missing, dev, addr)
		return false, nil
	}
	vx, ok := l.(*netlink.Vxlan)
	why := ""
	if !ok {
		why = "type " + l.Type() + ", not vxlan"
	} else {
		why = b.mismatch(f, vx)
	}
	if why != "" {
		stale := dev
		stale.Detail = why
		d.Stale = append(d.Stale, stale)
		dev.Detail = "to be recreated"
		d.Missing = append(d.Missing, dev, addr)
		return false, nil
	}
	var diffs []string
	mac, _ := hwFrom(vx.HardwareAddr)
	if f.mac == (hwAddr{}) {
		f.mac = mac
	} else if mac != f.mac {
		diffs = append(diffs, fmt.Sprintf("mac %s, want %s", vx.HardwareAddr, f.mac))
	}
	mtu, err := b.targetMTU(f)
	if err != nil {
		return false, err
	}
	if vx.MTU != mtu {
		diffs = append(diffs, fmt.Sprintf("mtu %d, want %d", vx.MTU, mtu))
	}
	if vx.Flags&net.FlagUp == 0 {
		diffs = append(diffs, "down")
	}
	if len(diffs) > 0 {
		dev.Detail = strings.Join(diffs, ", ")
		d.Missing = append(d.Missing, dev)
	}
	f.index = vx.Index
	addrs, err := b.h.AddrList(vx, f.nlFam)
	if err != nil {
		return false, fmt.Errorf("list addresses of %s: %w", f.name, err)
	}
	found := false
	for _, a := range addrs {
		p, ok := netlinkx.Prefix(a.IPNet)
		switch {
		case !ok:
		case p == addr.Dst:
			found = true
		case f.staleAddr(p):
			d.Stale = append(d.Stale, backend.Object{Kind: observe.Address, Device: f.name, Dst: p})
		}
	}
	if !found {
		d.Missing = append(d.Missing, addr)
	}
	return true, nil
}

func (f *family) driftObjects(d *backend.Drift, ext *net.Interface) {
	o := &f.ops
	route := func(r route) backend.Object {
		dev := f.name
		if r.Link == ext.Index {
			dev = ext.Name
		}
		return backend.Object{Kind: observe.Route, Device: dev, Dst: r.Dst, Gateway: r.Gw}
	}
	mac := func(m hwAddr) net.HardwareAddr { return append(net.HardwareAddr(nil), m[:]...) }
	for i := range o.setRoutes {
		d.Missing = append(d.Missing, route(o.setRoute(i)))
	}
	for _, r := range o.delRoutes {
		d.Stale = append(d.Stale, route(r))
	}
	for _, e := range o.setNeigh {
		d.Missing = append(d.Missing, backend.Object{Kind: observe.Neigh, Device: f.name, IP: e.IP, MAC: mac(e.MAC)})
	}
	for _, e := range o.delNeigh {
		d.Stale = append(d.Stale, backend.Object{Kind: observe.Neigh, Device: f.name, IP: e.IP, MAC: mac(e.MAC)})
	}
	for _, e := range o.setFDB {
		d.Missing = append(d.Missing, backend.Object{Kind: observe.FDB, Device: f.name, IP: e.Dst, MAC: mac(e.MAC)})
	}
	for _, e := range o.delFDB {
		d.Stale = append(d.Stale, backend.Object{Kind: observe.FDB, Device: f.name, IP: e.Dst, MAC: mac(e.MAC)})
	}
	for _, gw := range o.addNH {
		d.Missing = append(d.Missing, backend.Object{Kind: observe.Nexthop, Device: f.name, Gateway: gw})
	}
	for _, id := range o.delNH {
		gw, _ := f.act.nexthopGw(id)
		d.Stale = append(d.Stale, backend.Object{Kind: observe.Nexthop, Device: f.name, ID: id, Gateway: gw})
	}
}
