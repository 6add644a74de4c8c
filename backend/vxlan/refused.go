package vxlan

import (
	"fmt"
	"net/netip"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

// refusal is a peer refused as a whole because the kernel refused its route or an object
// the route needs: what the leases wanted, the refused part, and why.
type refusal struct {
	rt     route        // the peer's desired route
	mac    hwAddr       // its neighbour's lladdr and FDB MAC (zero for a direct route)
	pub    netip.Addr   // its FDB remote (invalid for a direct route)
	part   observe.Kind // Neigh, FDB, Nexthop or Route
	reason string       // observe.Refused*
	text   string       // the problem in words, for the log
	peer   string       // the lease's subnet key ("" until resolved)
	fresh  bool         // refused in the round being made (reported at its end)
}

// failure is a refused request of this apply, not yet attributed to peers.
type failure struct {
	part   observe.Kind
	ip     netip.Addr   // Neigh: the neighbour; Nexthop: the gateway
	mac    hwAddr       // FDB
	dst    netip.Prefix // Route
	reason string
	text   string
}

// holdBack keeps refused peers' route and refused part out of f.want while the leases want
// exactly them, forgetting the others (all with retry).
func (f *family) holdBack(retry bool) {
	for dst, r := range f.refused {
		if retry || !f.wantsSame(r) {
			delete(f.refused, dst)
			continue
		}
		f.want.delRoute(dst)
		switch r.part {
		case observe.Neigh:
			f.want.delNeigh(r.rt.Gw)
		case observe.FDB:
			f.want.delFDB(r.mac)
		}
	}
}

// wantsSame reports whether f.want holds for r's peer what was refused.
func (f *family) wantsSame(r *refusal) bool {
	if w, ok := f.want.getRoute(r.rt.Dst); !ok || w != r.rt {
		return false
	}
	if !r.pub.IsValid() {
		return true // a direct route: nothing else
	}
	mac, ok := f.want.getNeigh(r.rt.Gw)
	if !ok || mac != r.mac {
		return false
	}
	pub, ok := f.want.getFDB(r.mac)
	return ok && pub == r.pub
}

// attribute refuses the peers whose route depends on a failed object; it returns their subnets.
func (f *family) attribute(fails []failure) []netip.Prefix {
	if len(fails) == 0 {
		return nil
	}
	byGw := make(map[netip.Addr][]netip.Prefix)
	for r := range f.want.allRoutes() {
		if r.Onlink {
			byGw[r.Gw] = append(byGw[r.Gw], r.Dst)
		}
	}
	var byMAC map[hwAddr][]netip.Addr
	var out []netip.Prefix
	for _, fl := range fails {
		var dsts []netip.Prefix
		switch fl.part {
		case observe.Route:
			dsts = []netip.Prefix{fl.dst}
		case observe.Neigh, observe.Nexthop:
			dsts = byGw[fl.ip]
		case observe.FDB:
			if byMAC == nil {
				byMAC = make(map[hwAddr][]netip.Addr)
				for ip, m := range f.want.neighs() {
					byMAC[m] = append(byMAC[m], ip)
				}
			}
			for _, gw := range byMAC[fl.mac] {
				dsts = append(dsts, byGw[gw]...)
			}
		}
		for _, dst := range dsts {
			if _, dup := f.refused[dst]; dup {
				continue // a part it depends on was refused first
			}
			rt, ok := f.want.getRoute(dst)
			if !ok {
				continue
			}
			r := &refusal{rt: rt, part: fl.part, reason: fl.reason, text: fl.text, fresh: true}
			if rt.Onlink {
				r.mac, _ = f.want.getNeigh(rt.Gw)
				r.pub, _ = f.want.getFDB(r.mac)
			}
			f.refused[dst] = r
			out = append(out, dst)
		}
	}
	return out
}

// unusedNexthops appends the nexthop objects of routes dsts no other desired route uses.
func (f *family) unusedNexthops(dsts []netip.Prefix, ids []uint32) []uint32 {
	if len(dsts) == 0 {
		return ids
	}
	gws := make(map[netip.Addr]bool, len(dsts))
	for _, dst := range dsts {
		if r, ok := f.want.getRoute(dst); ok && r.ViaNH {
			gws[r.Gw] = true
		}
	}
	if len(gws) == 0 {
		return ids
	}
	for r := range f.want.allRoutes() {
		if r.ViaNH && gws[r.Gw] && f.refused[r.Dst] == nil {
			gws[r.Gw] = false // another peer's route uses it
		}
	}
	for gw, unused := range gws {
		if id, ok := f.act.getNH(gw); ok && unused && id != 0 {
			ids = append(ids, id)
		}
	}
	return ids
}

func (f *family) refusalText(part observe.Kind, what string, err error) string {
	return fmt.Sprintf("the kernel refuses its %s %s: %v", part, what, err)
}

// settleRefusals names the newly refused peers, reports each once and lists all for the log.
func (b *Backend) settleRefusals(peers subnet.Peers) {
	unnamed := false
	for _, f := range b.fams {
		for _, r := range f.refused {
			unnamed = unnamed || r.peer == ""
		}
	}
	if unnamed {
		for l := range peers.All() {
			for _, f := range b.fams {
				sn, ok := l.FamilySubnet(f.v6)
				if !ok {
					continue
				}
				if r := f.refused[sn.Masked()]; r != nil && r.peer == "" {
					r.peer = l.Key()
				}
			}
		}
	}
	clear(b.reported)
	b.refusedProbs = b.refusedProbs[:0]
	for _, f := range b.fams {
		for dst, r := range f.refused {
			if r.peer == "" {
				r.peer = dst.String() // not found among the leases (cannot happen)
			}
			b.refusedProbs = append(b.refusedProbs, backend.Problem{Peer: r.peer, Reason: r.text})
			if !r.fresh {
				continue
			}
			r.fresh = false
			if _, dup := b.reported[r.peer]; dup {
				continue // one count per peer, whatever its families
			}
			b.reported[r.peer] = struct{}{}
			if b.obs != nil {
				b.obs.PeerProgrammingFailures(r.reason, 1)
			}
		}
	}
}
