package vxlan

import (
	"fmt"
	"iter"
	"net/netip"
	"slices"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

// route is a route we want or own, reduced to what we compare and delete by; "kernel"
// fields are zero in desired routes, so a kernel route differing in them is replaced.
type route struct {
	Dst    netip.Prefix
	Gw     netip.Addr
	Link   int    // output interface index
	Prio   int    // metric: 0 for IPv4 and 1024 (the kernel default) for IPv6 in desired routes
	Tos    int    // kernel
	NhID   uint32 // kernel: the nexthop object id the route uses (0: none); needed to delete it
	Scope  uint8  // kernel
	Onlink bool   // RTNH_F_ONLINK
	ViaNH  bool   // the next hop is the family's nexthop object for Gw (on Link, onlink)
	Extra  bool   // kernel: other attributes we never set (source, metrics, encap, a foreign nexthop, ...)
}

func (r route) same(d route) bool {
	return r.Dst == d.Dst && r.Gw == d.Gw && r.Link == d.Link && r.Onlink == d.Onlink &&
		r.Prio == d.Prio && r.ViaNH == d.ViaNH && r.Scope == 0 && r.Tos == 0 && !r.Extra
}

// replaceable: a replace with w overwrites r (the kernel matches metric and TOS too).
func (r route) replaceable(w route) bool { return r.Prio == w.Prio && r.Tos == 0 }

// v6DefaultMetric is the metric the kernel gives an IPv6 route added without one.
const v6DefaultMetric = 1024

type fdbKey struct {
	MAC hwAddr
	Dst netip.Addr
}

// ipKey is a pointer-free address the collector need not scan (kind 0: zero Addr, 4 or 6).
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

func v6KeyOf(a netip.Addr) (ipKey, bool) { return keyOf(a), true }

// v4Key keys the IPv4 states, halving their heap against ipKey (BenchmarkStateHeap20k); it
// holds neither "no address" (rtVal has a flag) nor IPv6.
type v4Key [4]byte

func v4KeyOf(a netip.Addr) (v4Key, bool) {
	if !a.Is4() {
		return v4Key{}, false
	}
	return a.As4(), true
}

func (k v4Key) addr() netip.Addr { return netip.AddrFrom4(k) }

type addrKey interface {
	comparable
	addr() netip.Addr
}

type pfxKey[K addrKey] struct {
	a    K
	bits uint8
	// pad (always zero) makes an IPv4 key 8 bytes, which maps hash and compare as one word.
	pad [3]byte
}

func (k pfxKey[K]) prefix() netip.Prefix { return netip.PrefixFrom(k.a.addr(), int(k.bits)) }

// rtVal is a stored route without its destination, pointer-free; without rtGw the gateway
// is the zero Addr, not 0.0.0.0.
type rtVal[K addrKey] struct {
	link  int32
	prio  uint32
	nhID  uint32
	gw    K
	tos   uint8
	scope uint8
	flags uint8
}

const (
	rtOnlink = 1 << iota
	rtViaNH
	rtExtra
	rtGw
)

func (v rtVal[K]) route(dst pfxKey[K]) route {
	r := route{Dst: dst.prefix(), Link: int(v.link), Prio: int(v.prio), Tos: int(v.tos),
		NhID: v.nhID, Scope: v.scope, Onlink: v.flags&rtOnlink != 0, ViaNH: v.flags&rtViaNH != 0,
		Extra: v.flags&rtExtra != 0}
	if v.flags&rtGw != 0 {
		r.Gw = v.gw.addr()
	}
	return r
}

// famState is one family's desired or actual objects (a keyedState diff and promote use directly).
type famState interface {
	size(n int)
	sizeNexthops(n int)
	reset()
	getNeigh(ip netip.Addr) (hwAddr, bool)
	setNeigh(ip netip.Addr, m hwAddr)
	delNeigh(ip netip.Addr)
	neighs() iter.Seq2[netip.Addr, hwAddr]
	getFDB(m hwAddr) (netip.Addr, bool)
	setFDB(m hwAddr, dst netip.Addr)
	delFDB(m hwAddr)
	fdbs() iter.Seq2[hwAddr, netip.Addr]
	getRoute(dst netip.Prefix) (route, bool)
	hasRoute(dst netip.Prefix) bool
	setRoute(r route)
	delRoute(dst netip.Prefix)
	allRoutes() iter.Seq[route]
	getNH(gw netip.Addr) (uint32, bool)
	setNH(gw netip.Addr, id uint32)
	delNH(gw netip.Addr)
	// kernel reads (actual states)
	resetNexthops()
	addNexthop(gw netip.Addr, id uint32, usable bool)
	nexthopGw(id uint32) (netip.Addr, bool)
	resetRoutes()
	addRoute(r route)
	resetNeighs()
	resetFDB()
	addFDB(mac hwAddr, dst netip.Addr)
}

func newFamState(v6 bool) famState {
	if v6 {
		return newKeyedState(v6KeyOf)
	}
	return newKeyedState(v4KeyOf)
}

// keyedState keys objects as the kernel does (neighbours by IP, FDB by MAC, routes by
// destination), the first of each; further ones and foreign-family ones go to the extra
// slices for diff to delete. Nexthop objects appear only in actual states.
type keyedState[K addrKey] struct {
	key         func(netip.Addr) (K, bool) // K of an address, false when it has none
	sized       int                        // neigh, fdb and routes were made for this many entries (grown in one step)
	nhSized     int                        // nh and nhByID were made for this many entries
	neigh       map[K]hwAddr
	fdb         map[hwAddr]K
	routes      map[pfxKey[K]]rtVal[K]
	nh          map[K]uint32
	nhByID      map[uint32]K
	extraFDB    []fdbKey
	extraRoutes []route
	extraNH     []uint32
}

func newKeyedState[K addrKey](key func(netip.Addr) (K, bool)) *keyedState[K] {
	return &keyedState[K]{
		key:    key,
		neigh:  make(map[K]hwAddr),
		fdb:    make(map[hwAddr]K),
		routes: make(map[pfxKey[K]]rtVal[K]),
		nh:     make(map[K]uint32),
		nhByID: make(map[uint32]K),
	}
}

func (s *keyedState[K]) pfxKey(p netip.Prefix) (pfxKey[K], bool) {
	k, ok := s.key(p.Addr())
	return pfxKey[K]{a: k, bits: uint8(p.Bits())}, ok
}

func (s *keyedState[K]) rtVal(r route) (rtVal[K], bool) {
	v := rtVal[K]{link: int32(r.Link), prio: uint32(r.Prio), nhID: r.NhID, tos: uint8(r.Tos), scope: r.Scope}
	if r.Gw.IsValid() {
		gw, ok := s.key(r.Gw)
		if !ok {
			return v, false
		}
		v.gw = gw
		v.flags |= rtGw
	}
	if r.Onlink {
		v.flags |= rtOnlink
	}
	if r.ViaNH {
		v.flags |= rtViaNH
	}
	if r.Extra {
		v.flags |= rtExtra
	}
	return v, true
}

// size remakes the neighbour, FDB and route maps for n entries when made for fewer (growth
// leaves garbage). The nexthop maps are sizeNexthops': only actual states fill them.
func (s *keyedState[K]) size(n int) {
	if n <= s.sized {
		return
	}
	s.neigh = make(map[K]hwAddr, n)
	s.fdb = make(map[hwAddr]K, n)
	s.routes = make(map[pfxKey[K]]rtVal[K], n)
	s.sized = n
}

// sizeNexthops remakes the nexthop maps for n entries when made for fewer.
func (s *keyedState[K]) sizeNexthops(n int) {
	if n <= s.nhSized {
		return
	}
	s.nh = make(map[K]uint32, n)
	s.nhByID = make(map[uint32]K, n)
	s.nhSized = n
}

func (s *keyedState[K]) reset() {
	s.resetNeighs()
	s.resetFDB()
	s.resetRoutes()
	s.resetNexthops()
}

func (s *keyedState[K]) getNeigh(ip netip.Addr) (hwAddr, bool) {
	k, ok := s.key(ip)
	if !ok {
		return hwAddr{}, false
	}
	m, ok := s.neigh[k]
	return m, ok
}

func (s *keyedState[K]) setNeigh(ip netip.Addr, m hwAddr) {
	if k, ok := s.key(ip); ok {
		s.neigh[k] = m
	}
}

func (s *keyedState[K]) delNeigh(ip netip.Addr) {
	if k, ok := s.key(ip); ok {
		delete(s.neigh, k)
	}
}

func (s *keyedState[K]) resetNeighs() { clear(s.neigh) }

func (s *keyedState[K]) neighs() iter.Seq2[netip.Addr, hwAddr] {
	return func(yield func(netip.Addr, hwAddr) bool) {
		for k, m := range s.neigh {
			if !yield(k.addr(), m) {
				return
			}
		}
	}
}

func (s *keyedState[K]) getFDB(m hwAddr) (netip.Addr, bool) {
	d, ok := s.fdb[m]
	if !ok {
		return netip.Addr{}, false
	}
	return d.addr(), true
}

func (s *keyedState[K]) setFDB(m hwAddr, dst netip.Addr) {
	if k, ok := s.key(dst); ok {
		s.fdb[m] = k
	}
}

func (s *keyedState[K]) delFDB(m hwAddr) { delete(s.fdb, m) }

func (s *keyedState[K]) resetFDB() {
	clear(s.fdb)
	s.extraFDB = s.extraFDB[:0]
}

func (s *keyedState[K]) fdbs() iter.Seq2[hwAddr, netip.Addr] {
	return func(yield func(hwAddr, netip.Addr) bool) {
		for m, d := range s.fdb {
			if !yield(m, d.addr()) {
				return
			}
		}
	}
}

func (s *keyedState[K]) getRoute(dst netip.Prefix) (route, bool) {
	k, ok := s.pfxKey(dst)
	if !ok {
		return route{}, false
	}
	v, ok := s.routes[k]
	if !ok {
		return route{}, false
	}
	return v.route(k), true
}

func (s *keyedState[K]) hasRoute(dst netip.Prefix) bool {
	k, ok := s.pfxKey(dst)
	if !ok {
		return false
	}
	_, ok = s.routes[k]
	return ok
}

func (s *keyedState[K]) setRoute(r route) {
	k, ok := s.pfxKey(r.Dst)
	v, vok := s.rtVal(r)
	if ok && vok {
		s.routes[k] = v
	}
}

func (s *keyedState[K]) delRoute(dst netip.Prefix) {
	if k, ok := s.pfxKey(dst); ok {
		delete(s.routes, k)
	}
}

func (s *keyedState[K]) resetRoutes() {
	clear(s.routes)
	s.extraRoutes = s.extraRoutes[:0]
}

func (s *keyedState[K]) allRoutes() iter.Seq[route] {
	return func(yield func(route) bool) {
		for k, v := range s.routes {
			if !yield(v.route(k)) {
				return
			}
		}
	}
}

func (s *keyedState[K]) getNH(gw netip.Addr) (uint32, bool) {
	k, ok := s.key(gw)
	if !ok {
		return 0, false
	}
	id, ok := s.nh[k]
	return id, ok
}

func (s *keyedState[K]) setNH(gw netip.Addr, id uint32) {
	if k, ok := s.key(gw); ok {
		s.nh[k] = id
	}
}

func (s *keyedState[K]) delNH(gw netip.Addr) {
	if k, ok := s.key(gw); ok {
		delete(s.nh, k)
	}
}

func (s *keyedState[K]) resetNexthops() {
	clear(s.nh)
	clear(s.nhByID)
	s.extraNH = s.extraNH[:0]
}

// addNexthop keeps the first usable nexthop object for gw; others are to be deleted.
func (s *keyedState[K]) addNexthop(gw netip.Addr, id uint32, usable bool) {
	if k, ok := s.key(gw); ok && usable && gw.IsValid() {
		if _, dup := s.nh[k]; !dup {
			s.nh[k] = id
			s.nhByID[id] = k
			return
		}
	}
	s.extraNH = append(s.extraNH, id)
}

func (s *keyedState[K]) nexthopGw(id uint32) (netip.Addr, bool) {
	k, ok := s.nhByID[id]
	if !ok {
		return netip.Addr{}, false
	}
	return k.addr(), true
}

func (s *keyedState[K]) addFDB(mac hwAddr, dst netip.Addr) {
	k, ok := s.key(dst)
	if _, dup := s.fdb[mac]; dup || !ok || !dst.IsValid() {
		s.extraFDB = append(s.extraFDB, fdbKey{mac, dst})
		return
	}
	s.fdb[mac] = k
}

func (s *keyedState[K]) addRoute(r route) {
	k, ok := s.pfxKey(r.Dst)
	v, vok := s.rtVal(r)
	if _, dup := s.routes[k]; dup || !ok || !vok {
		s.extraRoutes = append(s.extraRoutes, r)
		return
	}
	s.routes[k] = v
}

type famParams struct {
	V6      bool
	VNI     int          // ours: peers advertising another are skipped
	Dev     int          // index of our vxlan device for this family
	Ext     int          // index of the external interface (direct routes)
	Network netip.Prefix // the family's flannel network
	Own     netip.Prefix // our own lease's subnet of this family (skipped among peers)
	Direct  bool         // DirectRouting
	// onlink routes use nexthop objects: n plain ones cost n² to insert, as the kernel
	// hashes their next hops without the gateway
	Nexthops bool
	IsDirect func(netip.Addr) bool // the address is on-link on the external interface
}

type problem = backend.Problem

// desiredFamily fills out (reset) with one family's objects for the peers, appending
// unusable leases to probs.
func desiredFamily(p famParams, peers subnet.Peers, out famState, probs []problem) []problem {
	out.size(peers.Len())
	out.reset()
	for l := range peers.All() {
		probs = desirePeer(&p, &l, out, probs)
	}
	return probs
}

// desirePeer adds peer l's objects of one family to out, unless l is our own lease or
// unusable (appended to probs) or loses to a lease already in out.
func desirePeer(p *famParams, l *subnet.Lease, out famState, probs []problem) []problem {
	fam, prio := "IPv4", 0
	if p.V6 {
		fam, prio = "IPv6", v6DefaultMetric
	}
	if l.Attrs.BackendType != "vxlan" {
		return append(probs, problem{Peer: l.Key(), Reason: fmt.Sprintf("backend type %q is not vxlan", l.Attrs.BackendType),
			Skip: observe.SkippedOtherBackend})
	}
	sn, pub, data := l.Subnet, l.Attrs.PublicIP, l.Attrs.BackendData
	if p.V6 {
		sn, pub, data = l.IPv6Subnet, l.Attrs.PublicIPv6, l.Attrs.BackendV6Data
	}
	if !sn.IsValid() || sn.Addr().Is4() == p.V6 {
		return append(probs, problem{Peer: l.Key(), Reason: "no " + fam + " subnet"})
	}
	sn = sn.Masked()
	if sn == p.Own {
		return probs // our own lease
	}
	if !p.Network.Contains(sn.Addr()) || sn.Bits() < p.Network.Bits() {
		return append(probs, problem{Peer: l.Key(), Reason: fmt.Sprintf("%s subnet %s is outside the network %s", fam, sn, p.Network)})
	}
	if !pub.IsValid() || pub.Is4() == p.V6 || pub.IsUnspecified() {
		return append(probs, problem{Peer: l.Key(), Reason: "no " + fam + " public address"})
	}
	bd, err := parseBackendData(data)
	if err != nil {
		return append(probs, problem{Peer: l.Key(), Reason: fam + ": " + err.Error()})
	}
	if bd.VNI != 0 && bd.VNI != p.VNI {
		// VNI 0, as in v0.10 leases, is ours
		return append(probs, problem{Peer: l.Key(), Reason: fmt.Sprintf("VNI %d, ours is %d", bd.VNI, p.VNI),
			Skip: observe.SkippedOtherVNI})
	}
	if out.hasRoute(sn) {
		return append(probs, problem{Peer: l.Key(), Reason: fmt.Sprintf("%s subnet %s is leased twice; using the first lease", fam, sn)})
	}
	if p.Direct && p.IsDirect != nil && p.IsDirect(pub) {
		out.setRoute(route{Dst: sn, Gw: pub, Link: p.Ext, Prio: prio})
		return probs
	}
	if other, dup := out.getFDB(bd.MAC); dup && other != pub {
		return append(probs, problem{Peer: l.Key(), Reason: fmt.Sprintf("VtepMAC %s is also used by the peer at %s; skipped", bd.MAC, other)})
	}
	gw := sn.Addr()
	out.setNeigh(gw, bd.MAC)
	out.setFDB(bd.MAC, pub)
	out.setRoute(route{Dst: sn, Gw: gw, Link: p.Dev, Onlink: true, Prio: prio, ViaNH: p.Nexthops})
	return probs
}

type neighOp struct {
	IP  netip.Addr
	MAC hwAddr
}

// ops turns an actual family state into the desired one, applied in field order (delNH
// last), so a route never needs an ARP for its gateway nor loses its nexthop object.
type ops struct {
	delRoutes []route
	delFDB    []fdbKey
	delNeigh  []neighOp
	setNeigh  []neighOp
	setFDB    []fdbKey
	addNH     []netip.Addr    // gateways needing a nexthop object
	setRoutes []pfxKey[ipKey] // destinations whose desired route (in src) is to be written
	delNH     []uint32
	// our routes to refused peers and the nexthops only they use (filled by apply)
	delRefused   []route
	delRefusedNH []uint32

	nhGw any      // diff's scratch map[K]struct{} of ViaNH gateways; promote reads it too
	src  famState // the desired state diff was computed for
}

func (o *ops) setRoute(i int) route {
	r, _ := o.src.getRoute(o.setRoutes[i].prefix())
	return r
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
	o.delRefused = o.delRefused[:0]
	o.delRefusedNH = o.delRefusedNH[:0]
}

// shrink drops lists a big first round grew, so small rounds do not keep them.
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

func dropIfLarge[T any](s *[]T) {
	if cap(*s) > 1024 {
		*s = nil
	}
}

func (o *ops) len() int {
	return len(o.delRoutes) + len(o.delFDB) + len(o.delNeigh) + len(o.setNeigh) + len(o.setFDB) + len(o.setRoutes) +
		len(o.addNH) + len(o.delNH)
}

func (o *ops) empty() bool { return o.len() == 0 }

// diff fills out (reset) with the ops turning act into want, of the same family; an object
// a replace cannot overwrite (second FDB remote, another metric) is deleted.
func diff(want, act famState, out *ops) {
	switch w := want.(type) {
	case *keyedState[v4Key]:
		diffKeyed(w, act.(*keyedState[v4Key]), out)
	case *keyedState[ipKey]:
		diffKeyed(w, act.(*keyedState[ipKey]), out)
	default:
		panic(fmt.Sprintf("vxlan: diff of a %T", want))
	}
}

func diffKeyed[K addrKey](want, act *keyedState[K], out *ops) {
	out.reset()
	out.src = want
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

	var extraFor map[hwAddr]int // MAC -> number of extra remotes, built only when needed
	var extraHit map[hwAddr]bool
	if len(act.extraFDB) > 0 {
		extraFor = make(map[hwAddr]int)
		extraHit = make(map[hwAddr]bool)
		for _, e := range act.extraFDB {
			extraFor[e.MAC]++
			if d, ok := want.fdb[e.MAC]; ok && d.addr() == e.Dst {
				extraHit[e.MAC] = true
			} else {
				out.delFDB = append(out.delFDB, e)
			}
		}
	}
	for mac, dstK := range want.fdb {
		haveK, ok := act.fdb[mac]
		dst, have := dstK.addr(), netip.Addr{}
		if ok {
			have = haveK.addr()
		}
		switch {
		case ok && haveK == dstK:
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
				out.setRoutes = append(out.setRoutes, wideKey(dstK))
			default:
				out.setRoutes = append(out.setRoutes, wideKey(dstK))
			}
			continue
		}
		// several routes to dst: keep an exact one, else the one a replace overwrites
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
			out.setRoutes = append(out.setRoutes, wideKey(dstK))
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

	nhGw, _ := out.nhGw.(map[K]struct{})
	if nhGw == nil {
		nhGw = make(map[K]struct{})
		out.nhGw = nhGw
	}
	clear(nhGw)
	for _, w := range want.routes {
		if w.flags&rtViaNH == 0 {
			continue
		}
		if _, dup := nhGw[w.gw]; dup {
			continue
		}
		nhGw[w.gw] = struct{}{}
		if _, ok := act.nh[w.gw]; !ok {
			out.addNH = append(out.addNH, w.gw.addr())
		}
	}
	for gw, id := range act.nh {
		if _, ok := nhGw[gw]; !ok {
			out.delNH = append(out.delNH, id)
		}
	}
	out.delNH = append(out.delNH, act.extraNH...)
}

func wideKey[K addrKey](k pfxKey[K]) pfxKey[ipKey] {
	return pfxKey[ipKey]{a: keyOf(k.a.addr()), bits: k.bits}
}
