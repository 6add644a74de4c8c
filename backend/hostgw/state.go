package hostgw

import (
	"fmt"
	"net/netip"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

// route is a route we want or own, reduced to what we compare and what a delete needs.
type route struct {
	Dst  netip.Prefix
	Gw   netip.Addr
	Link int    // output interface index
	Prio int    // metric: 0 for IPv4 and 1024 (the kernel default) for IPv6 in desired routes
	Peer string // the lease a desired route serves (empty in actual routes)
	// read from the kernel only: a difference here makes a replace
	Onlink bool
	Scope  uint8
	Tos    int
	Extra  bool // other attributes we never set (source, metrics, encap, ...)
}

func (r route) same(d route) bool {
	return r.Dst == d.Dst && r.Gw == d.Gw && r.Link == d.Link && r.Prio == d.Prio &&
		!r.Onlink && r.Scope == 0 && r.Tos == 0 && !r.Extra
}

// v6DefaultMetric is the metric the kernel gives an IPv6 route added without one.
const v6DefaultMetric = 1024

type params struct {
	V6      bool
	Ext     int          // external interface index
	Network netip.Prefix // the family's flannel network
	Own     netip.Prefix // our own lease's subnet of this family (never a peer)
}

// desired fills out (cleared) with one family's peer routes, appending unusable leases to probs.
func desired(p params, peers subnet.Peers, out map[netip.Prefix]route, probs []backend.Problem) []backend.Problem {
	clear(out)
	fam, prio := "IPv4", 0
	if p.V6 {
		fam, prio = "IPv6", v6DefaultMetric
	}
	for l := range peers.All() {
		if l.Attrs.BackendType != BackendType {
			probs = append(probs, backend.Problem{Peer: l.Key(), Reason: fmt.Sprintf("backend type %q is not %s", l.Attrs.BackendType, BackendType),
				Skip: observe.SkippedOtherBackend})
			continue
		}
		sn, pub := l.Subnet, l.Attrs.PublicIP
		if p.V6 {
			sn, pub = l.IPv6Subnet, l.Attrs.PublicIPv6
		}
		if !sn.IsValid() || sn.Addr().Is4() == p.V6 {
			probs = append(probs, backend.Problem{Peer: l.Key(), Reason: "no " + fam + " subnet"})
			continue
		}
		sn = sn.Masked()
		if sn == p.Own {
			continue
		}
		if !p.Network.Contains(sn.Addr()) || sn.Bits() < p.Network.Bits() {
			probs = append(probs, backend.Problem{Peer: l.Key(), Reason: fmt.Sprintf("%s subnet %s is outside the network %s", fam, sn, p.Network)})
			continue
		}
		if !pub.IsValid() || pub.Is4() == p.V6 || pub.IsUnspecified() {
			probs = append(probs, backend.Problem{Peer: l.Key(), Reason: "no " + fam + " public address"})
			continue
		}
		if _, dup := out[sn]; dup {
			probs = append(probs, backend.Problem{Peer: l.Key(), Reason: fmt.Sprintf("%s subnet %s is leased twice; using the first lease", fam, sn)})
			continue
		}
		out[sn] = route{Dst: sn, Gw: pub, Link: p.Ext, Prio: prio, Peer: l.Key()}
	}
	return probs
}

// ops turns the actual routes into the desired ones: deletes first, then replaces.
type ops struct {
	del []route
	set []route
}

// diff fills out with the ops turning act into want, deleting routes a replace would not overwrite.
func diff(want map[netip.Prefix]route, act []route, out *ops) {
	out.del = out.del[:0]
	out.set = out.set[:0]
	ok := make(map[netip.Prefix]bool, len(want))
	for _, r := range act {
		w, wanted := want[r.Dst]
		switch {
		case !wanted:
			out.del = append(out.del, r)
		case !ok[r.Dst] && r.same(w):
			ok[r.Dst] = true
		case r.Prio == w.Prio && r.Tos == 0 && !ok[r.Dst]:
			// overwritten by the replace, unless an exact copy is also present
		default:
			out.del = append(out.del, r)
		}
	}
	// A replaceable route to a destination that also has an exact copy must go.
	for _, r := range act {
		if w, wanted := want[r.Dst]; wanted && ok[r.Dst] && !r.same(w) && r.Prio == w.Prio && r.Tos == 0 {
			out.del = append(out.del, r)
		}
	}
	for dst, w := range want {
		if !ok[dst] {
			out.set = append(out.set, w)
		}
	}
}
