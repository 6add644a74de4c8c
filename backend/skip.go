package backend

import (
	"github.com/flannel-go/flannel/pkg/logwarn"
	"github.com/flannel-go/flannel/pkg/observe"
)

// WarnSkipped warns of a sound peer lease skipped for reason; detail says how the peer differs.
func WarnSkipped(peer, reason, detail string) {
	switch reason {
	case observe.SkippedOtherVNI:
		logwarn.S("Skipping peer lease: the peer's vxlan uses another VNI; pods on the two nodes cannot reach each other until both use the same (a node applies the network config's VNI when it restarts)",
			"peer", peer, "reason", detail)
	default:
		logwarn.S("Skipping peer lease: the peer runs another backend; pods on the two nodes cannot reach each other until both run the same (a node applies the network config's backend when it restarts)",
			"peer", peer, "reason", detail)
	}
}

// ReportSkipped passes a round's skipped counts to o (may be nil), 0 for reasons not in counts.
func ReportSkipped(o observe.Observer, counts map[string]int) {
	if o == nil {
		return
	}
	for _, r := range observe.SkipReasons() {
		o.PeersSkipped(r, counts[r])
	}
}
