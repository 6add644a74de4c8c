package backend

import (
	"errors"
	"syscall"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/pkg/observe"
)

// RefusalReason tells whether err, the kernel's answer to programming one peer's object (a
// route, neighbour, FDB entry, nexthop, or a datagram sent to it), refuses that peer. It
// returns the reason (observe.RefusedUnreachable, RefusedExists, RefusedInvalid), or "" for
// an error that is not the peer's (a lost reply, a failed socket, our own device gone).
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

// Problem is a peer lease a backend does not program, for logging; Peer is its subnet key.
type Problem struct {
	Peer   string
	Reason string
	// Skip is set (observe.SkippedOtherBackend, SkippedOtherVNI) for a sound lease this
	// node cannot carry traffic with: a counted warning.
	Skip string
}

// ProblemLog logs each distinct problem (peer and reason) once while it persists; one that
// goes away and recurs is logged again. The zero ProblemLog is ready; it is not safe for
// concurrent use.
type ProblemLog struct {
	logged, seen map[string]struct{}
}

// Round logs the round's new problems: skipped leases at info level (warnings for another
// backend or VNI), refused peers as errors. It returns the number of peers skipped per skip
// reason, for ReportSkipped.
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
