package hostgw

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

var _ backend.DriftReader = (*Backend)(nil)

// Drift implements backend.DriftReader in scratch state of its own.
func (b *Backend) Drift(ctx context.Context, own *subnet.Lease, peers subnet.Peers) (backend.Drift, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var d backend.Drift
	if own == nil {
		return d, errors.New("host-gw: Drift needs the node's own lease")
	}
	for _, bf := range b.fams {
		if err := ctx.Err(); err != nil {
			return d, err
		}
		f := &family{v6: bf.v6, nlFam: bf.nlFam, network: bf.network}
		sn, ok := own.FamilySubnet(f.v6)
		if !ok {
			return d, fmt.Errorf("host-gw: lease %s has no %s subnet", own.Key(), f.label())
		}
		f.own = sn
		if err := b.readActual(f); err != nil {
			return d, fmt.Errorf("host-gw: %w", err)
		}
		f.want = make(map[netip.Prefix]route, peers.Len())
		desired(params{V6: f.v6, Ext: b.ext.Iface.Index, Network: f.network, Own: f.own}, peers, f.want, nil)
		diff(f.want, f.act, &f.ops)
		dev := b.ext.Iface.Name
		for _, r := range f.ops.set {
			d.Missing = append(d.Missing, backend.Object{Kind: observe.Route, Device: dev, Dst: r.Dst, Gateway: r.Gw})
		}
		for _, r := range f.ops.del {
			d.Stale = append(d.Stale, backend.Object{Kind: observe.Route, Device: dev, Dst: r.Dst, Gateway: r.Gw})
		}
	}
	return d, nil
}
