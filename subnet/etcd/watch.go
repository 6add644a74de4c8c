package etcd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

// WatchLeases sends a snapshot, then a batch per watch response; a broken watch reopens after
// the last event delivered (backoff 100 ms to 1 s), a compaction brings a new snapshot.
func (m *Manager) WatchLeases(ctx context.Context, out chan<- subnet.WatchResult) error {
	delay := retryDelay{min: 100 * time.Millisecond, max: time.Second}
	resync := true
	var next int64
	var connDone chan struct{} // the connection watch, once started
	defer func() {
		if connDone != nil {
			<-connDone
		}
	}()
	for ctx.Err() == nil {
		cli, err := m.client()
		if errors.Is(err, errClosed) {
			return err
		}
		if err != nil {
			m.observer().DatastoreError(observe.Connect, err)
			klog.V(1).ErrorS(err, "Cannot reach etcd to watch subnet leases") // the daemon states outages
			sleepCtx(ctx, delay.next())
			continue
		}
		if connDone == nil {
			connDone = make(chan struct{})
			go func() {
				defer close(connDone)
				m.watchConnection(ctx, cli)
			}()
		}
		if resync {
			leases, rev, err := m.snapshot(ctx, cli)
			if err != nil {
				err = m.explain(ctx, err)
				if ctx.Err() == nil {
					m.observer().DatastoreError(observe.List, err)
					klog.V(1).ErrorS(err, "Listing subnet leases failed") // the daemon states outages
				}
				sleepCtx(ctx, delay.next())
				continue
			}
			if !send(ctx, out, subnet.WatchResult{Snapshot: leases}) {
				return nil
			}
			m.observer().WatchLive(observe.LeasesWatch)
			next, resync = rev+1, false
		}
		if m.beforeWatch != nil {
			m.beforeWatch(next)
		}
		var progressed bool
		resync, progressed, err = m.watchFrom(ctx, cli, &next, out)
		if ctx.Err() != nil {
			return nil
		}
		if progressed {
			delay.reset()
		}
		if resync {
			if !errors.Is(err, errTooLarge) { // the watch is live, it only skipped a response
				m.observer().WatchRestarted(observe.LeasesWatch, errors.New("events may have been lost; listing again"))
			}
			continue
		}
		if err != nil {
			err = m.explain(ctx, err)
			m.observer().DatastoreError(observe.Watch, err)
		}
		m.observer().WatchRestarted(observe.LeasesWatch, err)
		d := delay.next()
		klog.V(1).InfoS("Subnet lease watch ended; watching again", "err", err, "revision", next, "after", d)
		sleepCtx(ctx, d)
	}
	return nil
}

func (m *Manager) prime(leases []subnet.Candidate, rev int64) {
	m.mu.Lock()
	m.primed = &listing{leases: leases, rev: rev}
	m.mu.Unlock()
}

func (m *Manager) takePrimed() *listing {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.primed
	m.primed = nil
	return p
}

// snapshot lists the leases for a WatchResult (never nil), all but this node's own.
func (m *Manager) snapshot(ctx context.Context, cli *clientv3.Client) ([]subnet.Candidate, int64, error) {
	if p := m.takePrimed(); p != nil {
		// AcquireLease's listing: watching from its revision + 1 misses nothing, saving a listing.
		return p.leases, p.rev, nil
	}
	lctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	var leases []subnet.Candidate
	own := m.ownKey()
	rev, err := m.scan(lctx, cli, func(n int) { leases = make([]subnet.Candidate, 0, n) }, func(e *entry) {
		if string(e.rawKey) != own {
			leases = append(leases, e.c)
		}
	})
	if err != nil {
		return nil, 0, err
	}
	return leases, rev, nil // not nil: scan calls size before it succeeds
}

// watchFrom watches the subnet keys from *next, advancing it past each delivered event; resync
// means events may be lost (compaction, revision went back), progressed that a response came.
func (m *Manager) watchFrom(ctx context.Context, cli *clientv3.Client, next *int64, out chan<- subnet.WatchResult) (resync, progressed bool, err error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	// Its own gRPC stream: a response refused for size ends only this one, not KeepLease's.
	w := clientv3.NewWatcher(cli)
	defer w.Close()
	wch := w.Watch(wctx, m.subnetsDir, clientv3.WithPrefix(), clientv3.WithRev(*next), clientv3.WithProgressNotify(),
		clientv3.WithCreatedNotify())
	for resp := range wch {
		if resp.CompactRevision != 0 || errors.Is(resp.Err(), rpctypes.ErrCompacted) {
			klog.InfoS("etcd history was compacted past our watch revision; listing subnet leases again", "revision", *next, "compacted", resp.CompactRevision)
			return true, progressed, nil
		}
		if err := resp.Err(); err != nil {
			if status.Code(err) == codes.ResourceExhausted {
				klog.InfoS("A subnet lease watch response passed the receive limit and was not read; listing subnet leases again",
					"limit", m.cfg.maxResponse, "revision", *next)
				return true, progressed, errTooLarge
			}
			return false, progressed, err
		}
		progressed = true
		m.observer().WatchLive(observe.LeasesWatch)
		if resp.IsProgressNotify() {
			// A revision below what we saw means etcd's data went back (restore, wipe): events lost.
			if resp.Header.Revision+1 < *next {
				klog.InfoS("etcd revision went backwards; listing subnet leases again", "revision", resp.Header.Revision, "seen", *next-1)
				return true, progressed, nil
			}
			continue
		}
		evs := make([]subnet.Event, 0, len(resp.Events))
		own := m.ownKey()
		for _, ev := range resp.Events {
			*next = max(*next, ev.Kv.ModRevision+1)
			if string(ev.Kv.Key) == own {
				continue // KeepLease watches it
			}
			if e, ok := m.toEvent(ev); ok {
				evs = append(evs, e)
			}
		}
		if len(evs) > 0 && !send(ctx, out, subnet.WatchResult{Events: evs}) {
			return false, progressed, ctx.Err()
		}
	}
	if ctx.Err() != nil {
		return false, progressed, ctx.Err()
	}
	return false, progressed, errors.New("watch channel closed")
}

// toEvent converts an etcd event, skipping keys that name no subnet; bad values carry a Defect.
func (m *Manager) toEvent(ev *clientv3.Event) (subnet.Event, bool) {
	if ev.Type == clientv3.EventTypeDelete {
		name, sn, sn6, err := keySubnets(m.subnetsDir, ev.Kv.Key)
		if err != nil {
			klog.InfoS("Ignoring bad subnet node", "key", string(ev.Kv.Key), "err", err)
			return subnet.Event{}, false
		}
		e := subnet.Event{Type: subnet.EventRemoved, Lease: leaseFor(sn, sn6)}
		if !subnet.IsSubnetKey(name, sn, sn6) {
			e.Origin.Name = name
		}
		return e, true
	}
	c, err := kvCandidate(m.subnetsDir, ev.Kv.Key, ev.Kv.Value, ev.Kv.CreateRevision, ev.Kv.ModRevision)
	if err != nil {
		klog.InfoS("Ignoring bad subnet node", "key", string(ev.Kv.Key), "err", err)
		return subnet.Event{}, false
	}
	return subnet.Event{Type: subnet.EventAdded, Lease: c.Lease, Origin: c.Origin}, true
}

var errTooLarge = errors.New("watch response larger than the receive limit")

func send(ctx context.Context, out chan<- subnet.WatchResult, r subnet.WatchResult) bool {
	select {
	case out <- r:
		return true
	case <-ctx.Done():
		return false
	}
}

func describe(l *subnet.Lease) string {
	return fmt.Sprintf("%s %s", fmtV4(l.Subnet), fmtV6(l.IPv6Subnet))
}
