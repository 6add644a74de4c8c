package backend

import (
	"errors"
	"syscall"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/pkg/observe"
)

// RefusalReason returns the observe.Refused* reason when err, the kernel's answer to one
// peer's object or datagram, refuses that peer, or "" when the failure is not the peer's.
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

// Problem is a peer lease (Peer: its subnet key) a backend does not program; Skip holds an
// observe.Skipped* reason for a sound lease this node cannot reach, a counted warning.
type Problem struct {
	Peer   string
	Reason string
	Skip   string
}

// ProblemLog logs each distinct problem once while it persists, again if it recurs. The
// zero value is ready; it is not safe for concurrent use.
type ProblemLog struct {
	logged, seen map[string]struct{}
}

// Round logs the round's new problems and returns the peers skipped per Skip reason.
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
