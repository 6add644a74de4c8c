package diagnose

import (
	"errors"

	"github.com/flannel-go/flannel/subnet"
)

// judge sets Rejected on the peer leases admission keeps out: the running daemon's
// judgement when it has one (the kernel was programmed from it), else Deps.Admission
// applied as a daemon starting now would; without a rule nothing is marked.
func (s *State) judge(own *subnet.Lease, ls []Lease) {
	why := map[string]*subnet.Rejection{}
	switch {
	case s.daemon != nil && s.daemon.Peers.Synced:
		for _, r := range s.daemon.Peers.Rejected {
			why[r.Key] = &subnet.Rejection{Reason: subnet.Reason(r.Reason)}
		}
	case s.Deps.Admission != nil && s.cfg != nil:
		a := subnet.NewAdmitter(subnet.NewRule(s.cfg, *s.Deps.Admission), own, nil)
		snap := make([]subnet.Candidate, 0, len(ls))
		for i := range ls {
			if !ls[i].Own {
				snap = append(snap, subnet.Candidate{Lease: ls[i].Lease, Origin: ls[i].Origin})
			}
		}
		a.Apply(subnet.WatchResult{Snapshot: snap})
		for _, r := range a.Rejected() {
			why[r.Name] = &subnet.Rejection{Reason: r.Reason}
			if r.Detail != "" {
				why[r.Name].Err = errors.New(r.Detail)
			}
		}
	default:
		return
	}
	for i := range ls {
		if !ls[i].Own {
			ls[i].Rejected = why[ls[i].Name]
		}
	}
}
