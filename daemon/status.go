package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/flannel-go/flannel/pkg/claim"
	"github.com/flannel-go/flannel/pkg/control"
	"github.com/flannel-go/flannel/pkg/healthz"
	"github.com/flannel-go/flannel/subnet"
)

// Status is what the control socket reports of the daemon: cmd/flanneld sets identity and
// options, Run the rest. Safe for concurrent use; a nil *Status does nothing.
type Status struct {
	base control.Status

	mu      sync.Mutex
	phase   string
	cfg     *subnet.Config
	lease   *subnet.Lease
	devices []string
	claims  *claim.Set
	claimed time.Time
	ready   *healthz.Readiness
	queries chan peerQuery  // the reconcile loop's; nil before it runs
	done    <-chan struct{} // closed when the reconcile loop has ended
}

// peerQuery asks the reconcile loop for the peers; it answers on reply (buffered).
type peerQuery struct {
	reply chan control.Peers
}

// NewStatus makes a Status from base, whose Instance and Config.Options the caller fills.
func NewStatus(base control.Status) *Status {
	return &Status{base: base, phase: control.PhaseStarting}
}

func (s *Status) update(f func(s *Status)) {
	if s == nil {
		return
	}
	s.mu.Lock()
	f(s)
	s.mu.Unlock()
}

func (s *Status) setReadiness(r *healthz.Readiness) { s.update(func(s *Status) { s.ready = r }) }
func (s *Status) setPhase(p string)                 { s.update(func(s *Status) { s.phase = p }) }
func (s *Status) setConfig(c *subnet.Config)        { s.update(func(s *Status) { s.cfg = c }) }

func (s *Status) setClaims(c claim.Set, at time.Time) {
	s.update(func(s *Status) { s.claims, s.claimed = &c, at })
}

// socket is the control socket's name ("" on a nil *Status).
func (s *Status) socket() string {
	if s == nil {
		return ""
	}
	return s.base.Instance.Socket
}

func (s *Status) setLease(l *subnet.Lease, devices []string) {
	s.update(func(s *Status) {
		cp := *l
		s.lease, s.devices = &cp, slices.Clone(devices)
	})
}

// serveQueries routes Get's peer queries to q, answered by the reconcile loop until done closes.
func (s *Status) serveQueries(q chan peerQuery, done <-chan struct{}) {
	s.update(func(s *Status) { s.queries, s.done = q, done })
}

var errNoAnswer = errors.New("the reconcile loop did not answer in time (a long round?)")

// Get gathers the status, with the peers from the reconcile loop, returning when ctx ends.
func (s *Status) Get(ctx context.Context) (*control.Status, error) {
	s.mu.Lock()
	st := s.base
	st.Instance.Phase = s.phase
	st.Instance.Locks = slices.Clone(st.Instance.Locks)
	cfg, lease, ready, queries, done := s.cfg, s.lease, s.ready, s.queries, s.done
	st.Instance.Devices = slices.Clone(s.devices)
	st.Instance.Claims, st.Instance.ClaimedAt = s.claims, s.claimed
	s.mu.Unlock()

	if cfg != nil {
		if cfg.EnableIPv4 {
			st.Instance.Network = cfg.Network
		}
		if cfg.EnableIPv6 {
			st.Instance.IPv6Network = cfg.IPv6Network
		}
		st.Instance.BackendType = cfg.BackendType
		st.Instance.Backend = cfg.Backend
		network, err := json.Marshal(cfg)
		if err != nil {
			return nil, fmt.Errorf("encoding the network config: %w", err)
		}
		st.Config.Network = network
	}
	if lease != nil {
		l := controlLease(lease)
		st.Lease = &l
	}
	st.Readiness = readinessOf(ready)
	st.Peers = control.Peers{Admitted: []control.Lease{}, Rejected: []control.Rejected{}}
	if queries == nil {
		return &st, nil // no peers yet
	}
	q := peerQuery{reply: make(chan control.Peers, 1)}
	select {
	case queries <- q:
	case <-done:
		return &st, nil // stopping: no peers any more
	case <-ctx.Done():
		return nil, errNoAnswer
	}
	select {
	case st.Peers = <-q.reply:
	case <-ctx.Done():
		return nil, errNoAnswer
	}
	return &st, nil
}

// readinessOf evaluates every check (nil: none yet: not ready).
func readinessOf(r *healthz.Readiness) control.Readiness {
	out := control.Readiness{Checks: []control.Check{}}
	if r == nil {
		return out
	}
	out.Ready = true
	for _, c := range r.Checks() {
		cc := control.Check{Name: c.Name, OK: c.Err == nil, Note: c.Note}
		if c.Err != nil {
			cc.Reason = c.Err.Error()
			out.Ready = false
		}
		out.Checks = append(out.Checks, cc)
	}
	return out
}

// peersOf lists the admitted peers and rejected leases; called between reconcile rounds.
func peersOf(set *subnet.Admitter) control.Peers {
	p := control.Peers{Synced: set.Synced(), Admitted: []control.Lease{}, Rejected: []control.Rejected{}}
	peers := set.Peers()
	p.Admitted = make([]control.Lease, 0, peers.Len())
	for l := range peers.All() {
		p.Admitted = append(p.Admitted, controlLease(&l))
	}
	for _, r := range set.Rejected() {
		cr := control.Rejected{Key: r.Name, Reason: string(r.Reason)}
		if r.Lease != nil {
			l := controlLease(r.Lease)
			cr.Lease = &l
		}
		p.Rejected = append(p.Rejected, cr)
	}
	return p
}

func controlLease(l *subnet.Lease) control.Lease {
	out := control.Lease{
		Key:           l.Key(),
		PublicIP:      l.Attrs.PublicIP,
		PublicIPv6:    l.Attrs.PublicIPv6,
		BackendType:   l.Attrs.BackendType,
		BackendData:   validJSON(l.Attrs.BackendData),
		BackendV6Data: validJSON(l.Attrs.BackendV6Data),
		Expiration:    l.Expiration,
	}
	if l.EnableIPv4 || l.Subnet.IsValid() && l.Subnet.Bits() > 0 {
		out.Subnet = l.Subnet
	}
	if l.IPv6Subnet.IsValid() {
		out.IPv6Subnet = l.IPv6Subnet
	}
	return out
}

// validJSON is raw if it is JSON, else its text as a JSON string, so a status always encodes.
func validJSON(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 || json.Valid(raw) {
		return raw
	}
	s, _ := json.Marshal(string(raw))
	return s
}
