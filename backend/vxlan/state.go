package vxlan

import (
	"fmt"
	"iter"
	"net/netip"
	"slices"

	"github.com/flannel-go/flannel/subnet"
)

// route is one route we want or own, reduced to what we compare and what a delete needs.
// (Fields are ordered to keep the struct small: 20,000 of them sit in each of two maps.)
type route struct {
	Dst  netip.Prefix
	Gw   netip.Addr
	Link int // output interface index
	Prio int // metric: 0 for IPv4 and 1024 (the kernel default) for IPv6 in desired routes
	// The fields marked "kernel" only describe routes read from the kernel: they are
	// zero in desired routes, and a kernel route differing in them is replaced.
	Tos    int    // kernel
	NhID   uint32 // kernel: the nexthop object id the route uses (0: none); needed to delete it
	Scope  uint8  // kernel
	Onlink bool   // RTNH_F_ONLINK
	// ViaNH: the route's next hop is a kernel nexthop object on Link with gateway Gw and
	// the onlink flag (desired: to be written so; actual: it uses the one nexthop object
	// of the family kept for Gw).
	ViaNH bool
	Extra bool // kernel: other attributes we never set (source, metrics, encap, a foreign nexthop, ...)
}

// same reports whether an actual route r is exactly the desired route d.
func (r route) same(d route) bool {
	return r.Dst == d.Dst && r.Gw == d.Gw && r.Link == d.Link && r.Onlink == d.Onlink &&
		r.Prio == d.Prio && r.ViaNH == d.ViaNH && r.Scope == 0 && r.Tos == 0 && !r.Extra
}

// replaceable reports whether replacing with the desired route w overwrites r (the
// kernel matches metric and TOS besides the destination).
func (r route) replaceable(w route) bool { return r.Prio == w.Prio && r.Tos == 0 }

// v6DefaultMetric is the metric the kernel gives an IPv6 route added without one.
const v6DefaultMetric = 1024

// fdbKey is one FDB remote: a MAC and the underlay address it is sent to.
type fdbKey struct {
	MAC hwAddr
	Dst netip.Addr
}

// ipKey is an address in a fixed-size, pointer-free form for the state maps (a
// netip.Addr holds a pointer the collector scans, and takes 24 bytes). kind is 0 for
// the zero Addr, 4 or 6; the conversion is exact both ways (zones are never used).
type ipKey struct {
	a    [16]byte
	kind uint8
}

func keyOf(a netip.Addr) ipKey {
	switch {
	case a.Is4():
		return ipKey{a.As16(), 4}
	case a.IsValid():
		return ipKey{a.As16(), 6}
	}
	return ipKey{}
}

func (k ipKey) addr() netip.Addr {
	switch k.kind {
	case 4:
		return netip.AddrFrom4([4]byte(k.a[12:]))
	case 6:
		return netip.AddrFrom16(k.a)
	}
	return netip.Addr{}
}

// pfxKey is a prefix in the same form.
type pfxKey struct {
	a    ipKey
	bits uint8
}

func pfxKeyOf(p netip.Prefix) pfxKey { return pfxKey{keyOf(p.Addr()), uint8(p.Bits())} }

func (k pfxKey) prefix() netip.Prefix { return netip.PrefixFrom(k.a.addr(), int(k.bits)) }

// rtVal is a route as the state maps store it: pointer-free, without its destination
// (the map key): 32 bytes instead of 96.
type rtVal struct {
	link  int32
	prio  uint32
	nhID  uint32
	gw    ipKey
	tos   uint8
	scope uint8
	flags uint8
}

const (
	rtOnlink = 1 << iota
	rtViaNH
	rtExtra
)

func rtValOf(r route) rtVal {
	v := rtVal{link: int32(r.Link), prio: uint32(r.Prio), nhID: r.NhID, gw: keyOf(r.Gw), tos: uint8(r.Tos), scope: r.Scope}
	if r.Onlink {
		v.flags |= rtOnlink
	}
	if r.ViaNH {
		v.flags |= rtViaNH
	}
	if r.Extra {
		v.flags |= rtExtra
	}
	return v
}

func (v rtVal) route(dst pfxKey) route {
	return route{Dst: dst.prefix(), Gw: v.gw.addr(), Link: int(v.link), Prio: int(v.prio), Tos: int(v.tos),
		NhID: v.nhID, Scope: v.scope, Onlink: v.flags&rtOnlink != 0, ViaNH: v.flags&rtViaNH != 0,
		Extra: v.flags&rtExtra != 0}
}

// famState is one family's set of objects, desired or actual. Maps are keyed the way
// the kernel keys the objects: neighbours by IP, FDB entries by MAC, routes by
// destination; keys and values are pointer-free fixed-size forms (ipKey, pfxKey,
// rtVal), read and written through the methods below. The kernel can hold several FDB
// remotes for one MAC and several routes for one destination (other metric or device);
// those beyond the first seen are kept in the extra slices, which are empty in desired
// states and almost always in actual ones.
//
// Nexthop objects only appear in actual states: nh maps a gateway to the one usable
// nexthop object (on the device, onlink, nothing else) kept for it, extraNH lists the
// other nexthop objects on the device (duplicates, unusable ones), all to be deleted.
// Desired nexthops are the gateways of the desired ViaNH routes.
type famState struct {
	sized       int // the maps were made for this many entries (grown in one step)
	neigh       map[ipKey]hwAddr
	fdb         map[hwAddr]ipKey
	routes      map[pfxKey]rtVal
	nh          map[ipKey]uint32
	extraFDB    []fdbKey
	extraRoutes []route
	extraNH     []uint32
}

func newFamState() *famState {
	return &famState{
		neigh:  make(map[ipKey]hwAddr),
		fdb:    make(map[hwAddr]ipKey),
		routes: make(map[pfxKey]rtVal),
		nh:     make(map[ipKey]uint32),
	}
}

// size makes the maps hold n entries without growing step by step (each step leaves the
// old storage as garbage), when they were made smaller; it empties them.
func (s *famState) size(n int) {
	if n <= s.sized {
		return
	}
	s.neigh = make(map[ipKey]hwAddr, n)
	s.fdb = make(map[hwAddr]ipKey, n)
	s.routes = make(map[pfxKey]rtVal, n)
	s.sized = n
}

// reset empties the state, keeping the maps' storage for the next round.
func (s *famState) reset() {
	clear(s.neigh)
	clear(s.fdb)
	clear(s.routes)
	clear(s.nh)
	s.extraFDB = s.extraFDB[:0]
	s.extraRoutes = s.extraRoutes[:0]
	s.extraNH = s.extraNH[:0]
}

func (s *famState) getNeigh(ip netip.Addr) (hwAddr, bool) {
	m, ok := s.neigh[keyOf(ip)]
	return m, ok
}

func (s *famState) setNeigh(ip netip.Addr, m hwAddr) { s.neigh[keyOf(ip)] = m }

// neighs iterates over the neighbour entries.
func (s *famState) neighs() iter.Seq2[netip.Addr, hwAddr] {
	return func(yield func(netip.Addr, hwAddr) bool) {
		for k, m := range s.neigh {
			if !yield(k.addr(), m) {
				return
			}
		}
	}
}

func (s *famState) getFDB(m hwAddr) (netip.Addr, bool) {
	d, ok := s.fdb[m]
	return d.addr(), ok
}

func (s *famState) setFDB(m hwAddr, dst netip.Addr) { s.fdb[m] = keyOf(dst) }

// fdbs iterates over the first FDB remote of each MAC.
func (s *famState) fdbs() iter.Seq2[hwAddr, netip.Addr] {
	return func(yield func(hwAddr, netip.Addr) bool) {
		for m, d := range s.fdb {
			if !yield(m, d.addr()) {
				return
			}
		}
	}
}

func (s *famState) getRoute(dst netip.Prefix) (route, bool) {
	k := pfxKeyOf(dst)
	v, ok := s.routes[k]
	if !ok {
		return route{}, false
	}
	return v.route(k), true
}

func (s *famState) hasRoute(dst netip.Prefix) bool {
	_, ok := s.routes[pfxKeyOf(dst)]
	return ok
}

// setRoute stores r as the (first) route to r.Dst.
func (s *famState) setRoute(r route) { s.routes[pfxKeyOf(r.Dst)] = rtValOf(r) }

func (s *famState) delRoute(dst netip.Prefix) { delete(s.routes, pfxKeyOf(dst)) }

// allRoutes iterates over the first route of each destination.
func (s *famState) allRoutes() iter.Seq[route] {
	return func(yield func(route) bool) {
		for k, v := range s.routes {
			if !yield(v.route(k)) {
				return
			}
		}
	}
}

func (s *famState) getNH(gw netip.Addr) (uint32, bool) {
	id, ok := s.nh[keyOf(gw)]
	return id, ok
}

func (s *famState) setNH(gw netip.Addr, id uint32) { s.nh[keyOf(gw)] = id }

func (s *famState) delNH(gw netip.Addr) { delete(s.nh, keyOf(gw)) }

// nhs iterates over the kept nexthop objects by gateway.
func (s *famState) nhs() iter.Seq2[netip.Addr, uint32] {
	return func(yield func(netip.Addr, uint32) bool) {
		for k, id := range s.nh {
			if !yield(k.addr(), id) {
				return
			}
		}
	}
}

// addFDB records an actual FDB remote.
func (s *famState) addFDB(mac hwAddr, dst netip.Addr) {
	if _, dup := s.fdb[mac]; dup {
		s.extraFDB = append(s.extraFDB, fdbKey{mac, dst})
		return
	}
	s.fdb[mac] = keyOf(dst)
}

// addRoute records an actual route.
func (s *famState) addRoute(r route) {
	k := pfxKeyOf(r.Dst)
	if _, dup := s.routes[k]; dup {
		s.extraRoutes = append(s.extraRoutes, r)
		return
	}
	s.routes[k] = rtValOf(r)
}

// famParams is what the desired state of one family depends on besides the leases.
type famParams struct {
	V6      bool
	Dev     int          // index of our vxlan device for this family
	Ext     int          // index of the external interface (direct routes)
	Network netip.Prefix // the family's flannel network
	Own     netip.Prefix // our own lease's subnet of this family (skipped among peers)
	Direct  bool         // DirectRouting
	// Nexthops: onlink peer routes use kernel nexthop objects (IPv4 on kernels that
	// have them; see routeViaNexthop in kernel.go).
	Nexthops bool
	// IsDirect says whether a peer's public address is reachable on the external
	// interface without a gateway. Only consulted when Direct is set.
	IsDirect func(netip.Addr) bool
}

// problem is a peer lease that cannot be programmed, for logging.
type problem struct {
	Peer   string // the lease's subnet key
	Reason string
}

// desiredFamily computes the neighbour, FDB and route sets one family needs for the
// peer leases, into out (which it resets). It is a pure function of its inputs.
// Leases of other backends, without this family, or with unusable data are skipped and
// reported in the returned problems (appended to probs).
func desiredFamily(p famParams, peers []subnet.Lease, out *famState, probs []problem) []problem {
	out.size(len(peers))
	out.reset()
	fam, prio := "IPv4", 0
	if p.V6 {
		fam, prio = "IPv6", v6DefaultMetric
	}
	for i := range peers {
		l := &peers[i]
		if l.Attrs.BackendType != "vxlan" {
			// reported by both families; the caller logs each distinct problem once
			probs = append(probs, problem{l.Key(), fmt.Sprintf("backend type %q is not vxlan", l.Attrs.BackendType)})
			continue
		}
		sn, pub, data := l.Subnet, l.Attrs.PublicIP, l.Attrs.BackendData
		if p.V6 {
			sn, pub, data = l.IPv6Subnet, l.Attrs.PublicIPv6, l.Attrs.BackendV6Data
		}
		if !sn.IsValid() || sn.Addr().Is4() == p.V6 {
			probs = append(probs, problem{l.Key(), "no " + fam + " subnet"})
			continue
		}
		sn = sn.Masked()
		if sn == p.Own {
			continue // our own lease
		}
		if !p.Network.Contains(sn.Addr()) || sn.Bits() < p.Network.Bits() {
			probs = append(probs, problem{l.Key(), fmt.Sprintf("%s subnet %s is outside the network %s", fam, sn, p.Network)})
			continue
		}
		if !pub.IsValid() || pub.Is4() == p.V6 || pub.IsUnspecified() {
			probs = append(probs, problem{l.Key(), "no " + fam + " public address"})
			continue
		}
		bd, err := parseBackendData(data)
		if err != nil {
			probs = append(probs, problem{l.Key(), fam + ": " + err.Error()})
			continue
		}
		if out.hasRoute(sn) {
			probs = append(probs, problem{l.Key(), fmt.Sprintf("%s subnet %s is leased twice; using the first lease", fam, sn)})
			continue
		}
		if p.Direct && p.IsDirect != nil && p.IsDirect(pub) {
			out.setRoute(route{Dst: sn, Gw: pub, Link: p.Ext, Prio: prio})
			continue
		}
		if other, dup := out.getFDB(bd.MAC); dup && other != pub {
			probs = append(probs, problem{l.Key(), fmt.Sprintf("VtepMAC %s is also used by the peer at %s; skipped", bd.MAC, other)})
			continue
		}
		gw := sn.Addr()
		out.setNeigh(gw, bd.MAC)
		out.setFDB(bd.MAC, pub)
		out.setRoute(route{Dst: sn, Gw: gw, Link: p.Dev, Onlink: true, Prio: prio, ViaNH: p.Nexthops})
	}
	return probs
}

// neighOp is a neighbour (ARP/NDP) entry to set or delete.
type neighOp struct {
	IP  netip.Addr
	MAC hwAddr
}

// ops is the minimal list of changes that turns an actual family state into the desired
// one. Apply order: route deletes, FDB deletes, neighbour deletes, then neighbour sets,
// FDB sets, nexthop object creations, route sets, and nexthop object deletes last, so
// that a route never points at a gateway the kernel would have to resolve by ARP, and
// no nexthop object goes while a route we keep still uses it.
type ops struct {
	delRoutes []route
	delFDB    []fdbKey
	delNeigh  []neighOp
	setNeigh  []neighOp
	setFDB    []fdbKey
	addNH     []netip.Addr // gateways needing a nexthop object
	setRoutes []pfxKey     // destinations whose desired route (in src) is to be written
	delNH     []uint32

	nhGw map[ipKey]struct{} // scratch: gateways of desired ViaNH routes
	src  *famState          // the desired state diff was computed for
}

// setRoute returns the route setRoutes[i] is to write.
func (o *ops) setRoute(i int) route {
	k := o.setRoutes[i]
	return o.src.routes[k].route(k)
}

func (o *ops) reset() {
	o.delRoutes = o.delRoutes[:0]
	o.delFDB = o.delFDB[:0]
	o.delNeigh = o.delNeigh[:0]
	o.setNeigh = o.setNeigh[:0]
	o.setFDB = o.setFDB[:0]
	o.addNH = o.addNH[:0]
	o.setRoutes = o.setRoutes[:0]
	o.delNH = o.delNH[:0]
}

// shrink drops the storage of lists that grew large (a first round of a big network),
// so that it is not kept for the small rounds that follow.
func (o *ops) shrink() {
	dropIfLarge(&o.delRoutes)
	dropIfLarge(&o.delFDB)
	dropIfLarge(&o.delNeigh)
	dropIfLarge(&o.setNeigh)
	dropIfLarge(&o.setFDB)
	dropIfLarge(&o.addNH)
	dropIfLarge(&o.setRoutes)
	dropIfLarge(&o.delNH)
}

// dropIfLarge forgets the storage of a list whose capacity grew beyond 1024 entries.
func dropIfLarge[T any](s *[]T) {
	if cap(*s) > 1024 {
		*s = nil
	}
}

func (o *ops) len() int {
	return len(o.delRoutes) + len(o.delFDB) + len(o.delNeigh) + len(o.setNeigh) + len(o.setFDB) + len(o.setRoutes) +
		len(o.addNH) + len(o.delNH)
}

func (o *ops) empty() bool {
	return len(o.delRoutes)+len(o.delFDB)+len(o.delNeigh)+len(o.setNeigh)+len(o.setFDB)+len(o.setRoutes)+
		len(o.addNH)+len(o.delNH) == 0
}

// diff computes the operations that turn act into want, into out (which it resets). It
// is a pure function. Sets are replace operations (create or overwrite), so an entry
// whose value changed costs one request; a kernel object that shares a key with a
// wanted one but cannot be overwritten in place (a second FDB remote for a MAC, a second
// route to a destination) is deleted.
func diff(want, act *famState, out *ops) {
	out.reset()
	out.src = want
	// Room for the usual case (additions when want is larger, removals when smaller) in
	// one allocation, rather than by doubling.
	if add := len(want.routes) - len(act.routes); add > 0 {
		out.setNeigh = slices.Grow(out.setNeigh, add)
		out.setFDB = slices.Grow(out.setFDB, add)
		out.setRoutes = slices.Grow(out.setRoutes, add)
		out.addNH = slices.Grow(out.addNH, add)
	} else if del := -add; del > 0 {
		out.delNeigh = slices.Grow(out.delNeigh, del)
		out.delFDB = slices.Grow(out.delFDB, del)
		out.delRoutes = slices.Grow(out.delRoutes, del)
		out.delNH = slices.Grow(out.delNH, del)
	}

	// Neighbours: keyed by IP, one per IP per device.
	for ip, mac := range want.neigh {
		if have, ok := act.neigh[ip]; !ok || have != mac {
			out.setNeigh = append(out.setNeigh, neighOp{ip.addr(), mac})
		}
	}
	for ip, mac := range act.neigh {
		if _, ok := want.neigh[ip]; !ok {
			out.delNeigh = append(out.delNeigh, neighOp{ip.addr(), mac})
		}
	}

	// FDB: keyed by MAC; extra remotes are rare, so they are handled by a linear pass.
	var extraFor map[hwAddr]int // MAC -> number of extra remotes, built only when needed
	var extraHit map[hwAddr]bool
	if len(act.extraFDB) > 0 {
		extraFor = make(map[hwAddr]int)
		extraHit = make(map[hwAddr]bool)
		for _, e := range act.extraFDB {
			extraFor[e.MAC]++
			if d, ok := want.fdb[e.MAC]; ok && d == keyOf(e.Dst) {
				extraHit[e.MAC] = true
			} else {
				out.delFDB = append(out.delFDB, e)
			}
		}
	}
	for mac, dstK := range want.fdb {
		haveK, ok := act.fdb[mac]
		dst, have := dstK.addr(), haveK.addr()
		switch {
		case ok && haveK == dstK:
			// present
		case extraHit[mac]:
			// present as a further remote: drop the first one
			out.delFDB = append(out.delFDB, fdbKey{mac, have})
		case ok && extraFor[mac] > 0:
			// several wrong remotes: all go (above and here), then a fresh one
			out.delFDB = append(out.delFDB, fdbKey{mac, have})
			out.setFDB = append(out.setFDB, fdbKey{mac, dst})
		default:
			// missing, or one remote with another address: replaced in place
			out.setFDB = append(out.setFDB, fdbKey{mac, dst})
		}
	}
	for mac, have := range act.fdb {
		if _, ok := want.fdb[mac]; !ok {
			out.delFDB = append(out.delFDB, fdbKey{mac, have.addr()})
		}
	}

	// Routes: keyed by destination.
	var extraByDst map[netip.Prefix][]int // dst -> indexes into act.extraRoutes
	if len(act.extraRoutes) > 0 {
		extraByDst = make(map[netip.Prefix][]int)
		for i, r := range act.extraRoutes {
			extraByDst[r.Dst] = append(extraByDst[r.Dst], i)
		}
	}
	for dstK, wv := range want.routes {
		w := wv.route(dstK)
		hv, ok := act.routes[dstK]
		var have route
		if ok {
			have = hv.route(dstK)
		}
		extras := extraByDst[w.Dst]
		if len(extras) == 0 {
			switch {
			case ok && have.same(w):
			case ok && !have.replaceable(w):
				// a replace would not hit a route with another metric: delete it
				out.delRoutes = append(out.delRoutes, have)
				out.setRoutes = append(out.setRoutes, dstK)
			default:
				out.setRoutes = append(out.setRoutes, dstK)
			}
			continue
		}
		// Several routes to dst: keep one that is exactly right, or the one a replace
		// overwrites (metric 0); delete the rest.
		keep := -2 // -1: the first route; i >= 0: extra i; -2: none
		if ok && have.same(w) {
			keep = -1
		}
		for _, i := range extras {
			if keep == -2 && act.extraRoutes[i].same(w) {
				keep = i
			}
		}
		replace := false
		if keep == -2 {
			replace = true
			if ok && have.replaceable(w) {
				keep = -1
			} else {
				for _, i := range extras {
					if keep == -2 && act.extraRoutes[i].replaceable(w) {
						keep = i
					}
				}
			}
		}
		if ok && keep != -1 {
			out.delRoutes = append(out.delRoutes, have)
		}
		for _, i := range extras {
			if i != keep {
				out.delRoutes = append(out.delRoutes, act.extraRoutes[i])
			}
		}
		if replace {
			out.setRoutes = append(out.setRoutes, dstK)
		}
	}
	for dstK, have := range act.routes {
		if _, ok := want.routes[dstK]; ok {
			continue
		}
		out.delRoutes = append(out.delRoutes, have.route(dstK))
	}
	for _, r := range act.extraRoutes {
		if !want.hasRoute(r.Dst) {
			out.delRoutes = append(out.delRoutes, r)
		}
	}

	// Nexthop objects: one per gateway of a ViaNH route; the rest goes (after the
	// route replacements that move routes off them).
	if out.nhGw == nil {
		out.nhGw = make(map[ipKey]struct{})
	}
	clear(out.nhGw)
	for _, w := range want.routes {
		if w.flags&rtViaNH == 0 {
			continue
		}
		if _, dup := out.nhGw[w.gw]; dup {
			continue
		}
		out.nhGw[w.gw] = struct{}{}
		if _, ok := act.nh[w.gw]; !ok {
			out.addNH = append(out.addNH, w.gw.addr())
		}
	}
	for gw, id := range act.nh {
		if _, ok := out.nhGw[gw]; !ok {
			out.delNH = append(out.delNH, id)
		}
	}
	out.delNH = append(out.delNH, act.extraNH...)
}
