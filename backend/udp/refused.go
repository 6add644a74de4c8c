package udp

import (
	"fmt"
	"net/netip"
	"syscall"

	"github.com/flannel-go/flannel/backend"
)

// The udp backend writes no per-peer kernel objects: the kernel refuses a peer per
// datagram, when sendmmsg refuses its address. The send path drops that datagram, marks
// the peer and keeps trying it; Reconcile reports each round with a refusal to the
// Observer and logs a refusal once while it lasts (until the lease changes or goes, or a
// resync period passes without one).

// refusal is a peer whose datagrams the kernel refused.
type refusal struct {
	dst    netip.AddrPort
	text   string // the problem in words, for the log
	marked bool   // refused again since the last resync
}

// collectRefusals reads and clears the refusal marks of the table used until now (old),
// reports each refused peer, keeps refusals of peers cur still has at the same address,
// and lists them for the log. On a resync round (retry) stale refusals are forgotten.
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
