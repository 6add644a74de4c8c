package backend

import (
	"errors"
	"syscall"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/pkg/observe"
)

// RefusalReason tells whether err, the kernel's answer to a request that programs one
// peer's object (a route, neighbour, FDB entry or nexthop object, or a datagram sent to
// the peer), refuses that peer: the values its lease leads to, or a foreign object in
// their way. It returns the reason (observe.RefusedUnreachable, RefusedExists or
// RefusedInvalid), or "" for an error that is not the peer's: a lost reply, a failed
// socket, no memory, no permission, our own device gone. A backend skips a refused peer
// and programs the others; the other errors fail the round.
func RefusalReason(err error) string {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return ""
	}
	switch errno {
	case unix.ENETUNREACH, unix.EHOSTUNREACH:
		return observe.RefusedUnreachable
	case unix.EEXIST:
		return observe.RefusedExists
	case unix.EINVAL, unix.EOPNOTSUPP, unix.EAFNOSUPPORT, unix.ERANGE, unix.EADDRNOTAVAIL, unix.EACCES:
		return observe.RefusedInvalid
	}
	return ""
}

// Problem is a peer lease a backend does not program, for logging: Peer is the lease's
// subnet key, Reason says why in words.
type Problem struct {
	Peer   string
	Reason string
	// Skip is set (observe.SkippedOtherBackend, SkippedOtherVNI) for a sound lease of a
	// peer this node cannot carry traffic with: a warning, counted.
	Skip string
}

// ProblemLog logs each distinct problem (peer and reason) once while it persists. A
// backend hands it the problems of every round: one that was not in the previous round
// is logged, one that went away is forgotten, so a recurrence is logged again. The zero
// ProblemLog is ready; it is not safe for concurrent use.
type ProblemLog struct {
	logged, seen map[string]struct{}
}

// Round logs the new problems of a round: the leases the backend skipped (unusable for
// it) at info level, or as warnings for those of another backend or VNI (WarnSkipped),
// and the peers the kernel refused as errors. It returns, per skip reason, how many
// peers the round skipped for it, for ReportSkipped.
func (l *ProblemLog) Round(skipped, refused []Problem) map[string]int {
	if l.logged == nil {
		l.logged, l.seen = make(map[string]struct{}), make(map[string]struct{})
	}
	clear(l.seen)
	note := func(p Problem, kind string) bool {
		k := kind + p.Peer + "\x00" + p.Reason
		if _, dup := l.seen[k]; dup {
			return false
		}
		l.seen[k] = struct{}{}
		_, old := l.logged[k]
		return !old
	}
	var counts map[string]int
	for _, p := range skipped {
		fresh := note(p, "s")
		if p.Skip != "" {
			if _, dup := l.seen["n"+p.Skip+"\x00"+p.Peer]; !dup {
				l.seen["n"+p.Skip+"\x00"+p.Peer] = struct{}{}
				if counts == nil {
					counts = make(map[string]int)
				}
				counts[p.Skip]++
			}
		}
		switch {
		case !fresh:
		case p.Skip != "":
			WarnSkipped(p.Peer, p.Skip, p.Reason)
		default:
			klog.InfoS("Skipping peer lease", "peer", p.Peer, "reason", p.Reason)
		}
	}
	for _, p := range refused {
		if note(p, "r") {
			klog.ErrorS(nil, "Kernel refused peer; skipping it, the other peers are programmed", "peer", p.Peer, "reason", p.Reason)
		}
	}
	l.logged, l.seen = l.seen, l.logged
	return counts
}
