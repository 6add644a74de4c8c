package udp

import (
	"fmt"
	"net/netip"
	"syscall"

	"github.com/flannel-go/flannel/backend"
)

// refusal is a peer whose datagrams sendmmsg refused; the send path marks it and keeps
// trying, and the log shows it until its lease changes or a resync period passes without one.
type refusal struct {
	dst    netip.AddrPort
	text   string // the problem in words, for the log
	marked bool   // refused again since the last resync
}

// collectRefusals clears and reports old's refusal marks and returns the refusals of peers
// cur still has at the same address, forgetting stale ones on a resync round (retry).
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

// Invalidate starts a new resync period for the refusal log (backend.Invalidator).
func (b *Backend) Invalidate() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.retry = true
}
