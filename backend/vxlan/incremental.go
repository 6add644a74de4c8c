package vxlan

import (
	"encoding/binary"
	"hash/maphash"
	"net/netip"

	"github.com/flannel-go/flannel/subnet"
)

// A round that changes a few peers among many need not compute and diff the whole desired
// state (about 35 ms at 20,000 peers). When the kernel cache holds what the last round
// left and that round's peers were all plain, usable IPv4 leases of one size, a round
// compares each lease's print with the last round's and writes only the touched subnets'
// objects. Anything else, including a MAC moving between peers, takes the full round.

// prints are one round's leases in order: the subnet address in the high 32 bits, a hash
// of the rest in the low 32 (a change it misses waits for the periodic full round).
type prints []uint64

// incState is what incremental rounds keep between rounds.
type incState struct {
	seed     maphash.Seed
	last     prints   // the last round's, when ok
	next     prints   // this round's, being built
	ok       bool     // last describes the peers of a round the kernel cache holds
	touched  []uint32 // the subnet addresses this round rewrites
	bits     int      // their length
	newMACs  map[hwAddr]struct{}
	rounds   int // incremental rounds run (tests)
	fallback int // rounds that started incrementally and fell back (tests)
}

// printOf is l's print for the IPv4 family, false when l has no IPv4 subnet of bits.
func (s *incState) printOf(l *subnet.Lease, bits int) (uint64, bool) {
	sn := l.Subnet
	if !sn.IsValid() || !sn.Addr().Is4() || sn.Bits() != bits {
		return 0, false
	}
	var h maphash.Hash
	h.SetSeed(s.seed)
	h.Write(l.Attrs.PublicIP.AsSlice())
	h.WriteString(l.Attrs.BackendType)
	h.WriteByte(0)
	h.Write(l.Attrs.BackendData)
	a := sn.Masked().Addr().As4()
	return uint64(binary.BigEndian.Uint32(a[:]))<<32 | h.Sum64()&0xffffffff, true
}

// deltaConfig reports whether the configuration is the one incremental rounds handle: one
// IPv4 family without DirectRouting.
func (b *Backend) deltaConfig() bool {
	return len(b.fams) == 1 && !b.fams[0].v6 && !b.vc.DirectRouting
}

// incremental reports whether this round may try the incremental path: the cache holds the
// last round's state, nothing waits for a retry, and the configuration is the simple one.
func (b *Backend) incremental(full, retry bool) bool {
	if full || retry || !b.inc.ok || !b.deltaConfig() || len(b.refusedProbs) > 0 {
		return false
	}
	f := b.fams[0]
	if len(f.refused) > 0 {
		return false
	}
	if k, ok := f.act.(*keyedState[v4Key]); !ok || len(k.extraFDB)+len(k.extraRoutes)+len(k.extraNH) > 0 {
		return false
	}
	return true
}

// deltaRound fills f.want with the desired objects of the leases changed since the last
// round and f.ops with what turns the kernel's into them; false: take the full round.
func (b *Backend) deltaRound(f *family, p *famParams, peers subnet.Peers) bool {
	s := &b.inc
	s.next, s.touched = s.next[:0], s.touched[:0]
	clear(s.newMACs)
	f.want.reset()
	bits := p.Own.Bits()
	s.bits = bits
	limit := peers.Len()/2 + 64 // beyond, the full round costs less
	i := 0
	touch := func(key uint64) bool {
		s.touched = append(s.touched, uint32(key>>32))
		return len(s.touched) <= limit
	}
	var probs []problem
	for l := range peers.All() {
		v, ok := s.appendPrint(&l, bits)
		if !ok {
			return false
		}
		for i < len(s.last) && s.last[i]>>32 < v>>32 {
			if !touch(s.last[i]) {
				return false
			}
			i++
		}
		if i < len(s.last) && s.last[i]>>32 == v>>32 {
			i++
			if s.last[i-1] == v {
				continue
			}
		}
		if !touch(v) {
			return false
		}
		if probs = desirePeer(p, &l, f.want, probs); len(probs) > 0 {
			return false
		}
		gw := s.dst(s.touched[len(s.touched)-1]).Addr()
		if mac, ok := f.want.getNeigh(gw); ok {
			// a MAC the kernel holds for another subnet, or twice among the new: full round
			if _, dup := s.newMACs[mac]; dup {
				return false
			}
			s.newMACs[mac] = struct{}{}
			if _, held := f.act.getFDB(mac); held {
				if old, ok := f.act.getNeigh(gw); !ok || old != mac {
					return false
				}
			}
		}
	}
	for ; i < len(s.last); i++ {
		if !touch(s.last[i]) {
			return false
		}
	}
	deltaOps(f, s)
	return true
}

// dst is the subnet of a touched address.
func (s *incState) dst(a uint32) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}), s.bits)
}

// deltaOps fills f.ops with the writes that turn the kernel's objects of the touched subnets
// into f.want's, as diff would for them.
func deltaOps(f *family, s *incState) {
	o := &f.ops
	o.reset()
	o.src = f.want
	for _, a := range s.touched {
		dst := s.dst(a)
		gw := dst.Addr()
		old, had := f.act.getRoute(dst)
		w, want := f.want.getRoute(dst)
		switch {
		case want && had && old.same(w):
		case want && had && !old.replaceable(w):
			o.delRoutes = append(o.delRoutes, old)
			o.setRoutes = append(o.setRoutes, pfxKey[ipKey]{a: keyOf(gw), bits: uint8(dst.Bits())})
		case want:
			o.setRoutes = append(o.setRoutes, pfxKey[ipKey]{a: keyOf(gw), bits: uint8(dst.Bits())})
		case had:
			o.delRoutes = append(o.delRoutes, old)
		}
		oldMAC, hadMAC := f.act.getNeigh(gw)
		mac, wantMAC := f.want.getNeigh(gw)
		switch {
		case wantMAC && (!hadMAC || oldMAC != mac):
			o.setNeigh = append(o.setNeigh, neighOp{gw, mac})
		case !wantMAC && hadMAC:
			o.delNeigh = append(o.delNeigh, neighOp{gw, oldMAC})
		}
		if wantMAC {
			pub, _ := f.want.getFDB(mac)
			if have, ok := f.act.getFDB(mac); !ok || have != pub {
				o.setFDB = append(o.setFDB, fdbKey{mac, pub})
			}
		}
		if hadMAC && (!wantMAC || oldMAC != mac) {
			if have, ok := f.act.getFDB(oldMAC); ok {
				o.delFDB = append(o.delFDB, fdbKey{oldMAC, have})
			}
		}
		id, haveNH := f.act.getNH(gw)
		switch wantNH := want && w.ViaNH; {
		case wantNH && !haveNH:
			o.addNH = append(o.addNH, gw)
		case !wantNH && haveNH:
			o.delNH = append(o.delNH, id)
		}
	}
}

// promoteDelta makes the kernel cache hold what a successful incremental round wrote; apply
// has recorded the nexthops it added, nothing else.
func promoteDelta(f *family, s *incState) {
	for _, a := range s.touched {
		dst := s.dst(a)
		gw := dst.Addr()
		w, want := f.want.getRoute(dst)
		if want && w.ViaNH {
			w.NhID, _ = f.act.getNH(gw)
		}
		if want {
			f.act.setRoute(w)
		} else {
			f.act.delRoute(dst)
		}
		oldMAC, hadMAC := f.act.getNeigh(gw)
		mac, wantMAC := f.want.getNeigh(gw)
		if hadMAC && (!wantMAC || oldMAC != mac) {
			f.act.delFDB(oldMAC)
		}
		if wantMAC {
			pub, _ := f.want.getFDB(mac)
			f.act.setNeigh(gw, mac)
			f.act.setFDB(mac, pub)
		} else {
			f.act.delNeigh(gw)
		}
		if !want || !w.ViaNH {
			f.act.delNH(gw)
		}
	}
}

// notePrints fills next with the peers' prints after a full round; false when they do not
// all qualify.
func (s *incState) notePrints(peers subnet.Peers, bits int) bool {
	s.next = s.next[:0]
	for l := range peers.All() {
		if _, ok := s.appendPrint(&l, bits); !ok {
			return false
		}
	}
	return true
}

// appendPrint appends l's print to next and returns it; false when l has no print or its
// subnet does not follow the last one's in address order.
func (s *incState) appendPrint(l *subnet.Lease, bits int) (uint64, bool) {
	v, ok := s.printOf(l, bits)
	if !ok || len(s.next) > 0 && s.next[len(s.next)-1]>>32 >= v>>32 {
		return 0, false
	}
	s.next = append(s.next, v)
	return v, true
}

// qualifies reports whether a full round's desired state lets the next round be
// incremental: no unusable lease and no VTEP MAC shared by two subnets.
func qualifies(f *family, probs []problem) bool {
	k, ok := f.want.(*keyedState[v4Key])
	return ok && len(probs) == 0 && len(k.fdb) == len(k.neigh)
}
