package udp

import (
	"fmt"
	"net/netip"
	"syscall"

	"github.com/flannel-go/flannel/backend"
)

// The udp backend writes no per-peer kernel objects: the kernel's refusals for one peer
// come per datagram, when sendmmsg refuses its address (no route to it: "network is
// unreachable"; a broadcast address: "permission denied"). The send path drops that
// datagram, sends the rest of the batch and marks the peer (peer.refused); every
// datagram to the peer is tried again, so the peer works as soon as the kernel can reach
// it. Reconcile collects the marks: each round in which a peer was refused reports it
// once to the Observer, and the refusal is logged once while it lasts: until the peer's
// lease changes or goes, or a resync period (Invalidate to Invalidate) passes without
// a refused datagram.

// refusal is a peer whose datagrams the kernel refused.
type refusal struct {
	dst    netip.AddrPort
	text   string // the problem in words, for the log
	marked bool   // refused again since the last resync
}

// collectRefusals reads and clears the refusal marks of the table the send path used
// until now (old), reports each refused peer once, keeps refusals of peers that cur
// still has with the same address, and lists them for the log. On a resync round
// (retry) refusals not seen again since the previous one are forgotten.
func (b *Backend) collectRefusals(old, cur *table, retry bool) []backend.Problem {
	if old != nil {
		for _, p := range old.peers {
			errno := syscall.Errno(p.refused.Swap(0))
			if errno == 0 {
				continue
			}
			reason := backend.RefusalReason(errno)
			if reason == "" {
				continue
			}
			if b.obs != nil {
				b.obs.PeerProgrammingFailures(reason, 1)
			}
			b.refused[p.Key] = &refusal{dst: p.Dst, marked: true,
				text: fmt.Sprintf("the kernel refuses datagrams to %s: %v", p.Dst, errno)}
		}
	}
	live := make(map[string]netip.AddrPort, len(b.refused))
	if len(b.refused) > 0 && cur != nil {
		for _, p := range cur.peers {
			if _, ok := b.refused[p.Key]; ok {
				live[p.Key] = p.Dst
			}
		}
	}
	var probs []backend.Problem
	for key, r := range b.refused {
		if dst, ok := live[key]; !ok || dst != r.dst || (retry && !r.marked) {
			delete(b.refused, key)
			continue
		}
		if retry {
			r.marked = false
		}
		probs = append(probs, backend.Problem{Peer: key, Reason: r.text})
	}
	return probs
}

// Invalidate starts a new resync period for the refusal log (backend.Invalidator); the
// daemon calls it before its periodic resync.
func (b *Backend) Invalidate() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.retry = true
}
