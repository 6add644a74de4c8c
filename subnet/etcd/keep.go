package etcd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

var errKeyGone = errors.New("subnet key is gone")

// KeepLease renews the lease at Expiration − RenewMargin with a fresh etcd lease (backoff 1 s
// to 1 min), adopting another writer's lease on the key; a reservation is never renewed. It
// returns nil when ctx ends and subnet.ErrLeaseRevoked once the key is deleted or expires.
func (m *Manager) KeepLease(ctx context.Context, l *subnet.Lease) error {
	if l == nil {
		return errors.New("KeepLease: nil lease")
	}
	value, err := l.Attrs.MarshalJSON()
	if err != nil {
		return fmt.Errorf("encoding lease attributes: %w", err)
	}
	k := &keeper{m: m, lease: l, key: m.subnetKey(l.Subnet, l.IPv6Subnet), value: value, exp: l.Expiration}
	return k.run(ctx)
}

type keeper struct {
	m     *Manager
	lease *subnet.Lease
	key   string
	value []byte

	exp     time.Time // zero: a reservation, never renewed
	leaseID int64     // the etcd lease the key is known to be attached to (0: unknown or none)
}

func (k *keeper) run(ctx context.Context) error {
	watchDelay := retryDelay{min: 100 * time.Millisecond, max: time.Second}
	renewDelay := retryDelay{min: time.Second, max: time.Minute}

	var (
		wch     clientv3.WatchChan
		wcancel = func() {}
		resyncC <-chan time.Time
		renewC  <-chan time.Time
	)
	defer func() { wcancel() }()

	arm := func() {
		renewC = nil
		k.m.observer().LeaseExpiration(k.exp)
		if k.exp.IsZero() {
			klog.InfoS("Subnet lease is a reservation (no TTL); not renewing it", "subnet", describe(k.lease))
			return
		}
		d := max(0, time.Until(k.exp.Add(-k.m.cfg.RenewMargin)))
		klog.InfoS(fmt.Sprintf("Waiting for %s to renew lease", d))
		renewC = time.After(d)
	}
	restartWatch := func(reason error) {
		wcancel()
		wch, wcancel = nil, func() {}
		d := watchDelay.next()
		if ctx.Err() == nil {
			k.m.observer().DatastoreError(observe.KeepLease, reason)
			k.m.observer().WatchRestarted(observe.OwnLeaseWatch, reason)
			klog.V(1).InfoS("Watch of own subnet lease interrupted; syncing again", "err", reason, "after", d)
		}
		resyncC = time.After(d)
	}

	arm() // from the expiration AcquireLease reported; corrected by the first sync
	resyncNow := make(chan time.Time, 1)
	resyncNow <- time.Now()
	resyncC = resyncNow
	for {
		select {
		case <-ctx.Done():
			return nil

		case <-resyncC:
			resyncC = nil
			oldExp := k.exp
			rev, err := k.sync(ctx)
			if errors.Is(err, errKeyGone) {
				return k.revoked()
			}
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				restartWatch(err)
				continue
			}
			if !k.exp.Equal(oldExp) {
				arm()
			}
			wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
			cli, err := k.m.client()
			if err != nil {
				cancel()
				restartWatch(err)
				continue
			}
			wch, wcancel = cli.Watch(wctx, k.key, clientv3.WithRev(rev+1)), cancel
			k.m.observer().WatchLive(observe.OwnLeaseWatch)

		case wr, ok := <-wch:
			if !ok {
				restartWatch(errors.New("watch channel closed"))
				continue
			}
			if err := wr.Err(); err != nil {
				restartWatch(err)
				continue
			}
			watchDelay.reset()
			k.m.observer().WatchLive(observe.OwnLeaseWatch)
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.DELETE {
					return k.revoked()
				}
				changed, err := k.adopt(ctx, ev.Kv)
				if err != nil {
					restartWatch(err)
					break
				}
				if changed {
					klog.InfoS("Own subnet lease was rewritten; adopting its expiration", "subnet", describe(k.lease), "expiration", k.exp)
					arm()
				}
			}

		case <-renewC:
			renewC = nil
			err := k.renew(ctx)
			switch {
			case errors.Is(err, errKeyGone):
				return k.revoked()
			case err != nil:
				if ctx.Err() != nil {
					return nil
				}
				d := renewDelay.next()
				k.m.observer().DatastoreError(observe.Renew, err)
				klog.ErrorS(err, fmt.Sprintf("Error renewing lease (trying again in %s)", d))
				renewC = time.After(d)
			default:
				renewDelay.reset()
				klog.InfoS(fmt.Sprintf("Lease renewed, new expiration: %s", k.exp))
				arm()
			}
		}
	}
}

func (k *keeper) revoked() error {
	klog.InfoS("Lease has been revoked", "subnet", describe(k.lease), "key", k.key)
	return fmt.Errorf("subnet lease %s: %w", k.key, subnet.ErrLeaseRevoked)
}

func (k *keeper) sync(ctx context.Context) (int64, error) {
	cli, err := k.m.client()
	if err != nil {
		return 0, err
	}
	gctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := cli.Get(gctx, k.key)
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", k.key, k.m.explain(ctx, err))
	}
	if len(resp.Kvs) == 0 {
		return 0, errKeyGone
	}
	if _, err := k.adopt(ctx, resp.Kvs[0]); err != nil {
		return 0, err
	}
	return resp.Header.Revision, nil
}

// adopt takes over the expiration of the key's etcd lease, reporting whether it changed.
func (k *keeper) adopt(ctx context.Context, kv *mvccpb.KeyValue) (bool, error) {
	if kv.Lease == 0 {
		changed := !k.exp.IsZero()
		k.exp, k.leaseID = time.Time{}, 0
		return changed, nil
	}
	if kv.Lease == k.leaseID {
		return false, nil // our own renewal
	}
	cli, err := k.m.client()
	if err != nil {
		return false, err
	}
	tctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	start := time.Now()
	ttl, err := cli.TimeToLive(tctx, clientv3.LeaseID(kv.Lease))
	if err != nil {
		return false, fmt.Errorf("reading TTL of etcd lease %x: %w", kv.Lease, k.m.explain(ctx, err))
	}
	if ttl.TTL <= 0 {
		// The etcd lease is gone already; etcd is about to delete the key.
		return false, nil
	}
	k.leaseID = kv.Lease
	exp := start.Add(time.Duration(ttl.TTL) * time.Second)
	// TimeToLive has whole seconds: within that, keep the precise expiration already known.
	if !k.exp.IsZero() && exp.Before(k.exp.Add(time.Second)) && k.exp.Before(exp.Add(2*time.Second)) {
		return false, nil
	}
	k.exp = exp
	return true, nil
}

func (k *keeper) renew(ctx context.Context) error {
	cli, err := k.m.client()
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	start := time.Now()
	g, err := cli.Grant(rctx, k.m.ttlSeconds())
	if err != nil {
		return fmt.Errorf("granting etcd lease: %w", k.m.explain(ctx, err))
	}
	resp, err := cli.Txn(rctx).
		If(clientv3.Compare(clientv3.Version(k.key), ">", 0)).
		Then(clientv3.OpPut(k.key, string(k.value), clientv3.WithLease(g.ID))).Commit()
	if err != nil || !resp.Succeeded {
		revoke(cli, g.ID)
		if err != nil {
			return fmt.Errorf("renewing %s: %w", k.key, k.m.explain(ctx, err))
		}
		return errKeyGone
	}
	k.leaseID = int64(g.ID)
	k.exp = start.Add(time.Duration(g.TTL) * time.Second)
	return nil
}
