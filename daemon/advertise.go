package daemon

import (
	"context"
	"errors"
	"time"

	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

// attrsBox holds the latest attributes a backend advertised for the lease keeper; put never blocks.
type attrsBox struct{ c chan subnet.LeaseAttrs }

func newAttrsBox() *attrsBox { return &attrsBox{c: make(chan subnet.LeaseAttrs, 1)} }

func (b *attrsBox) put(a subnet.LeaseAttrs) {
	for {
		select {
		case b.c <- a:
			return
		default:
		}
		select {
		case <-b.c: // drop the older value
		default:
		}
	}
}

// keepLease runs KeepLease until ctx ends (nil) or it fails, pausing it to write each new
// attributes from adv (updateLease) and telling updated the new lease.
func keepLease(ctx context.Context, sm subnet.Manager, cfg *subnet.Config, lease *subnet.Lease, adv <-chan subnet.LeaseAttrs,
	updated func(*subnet.Lease), obs observe.Observer, tm timings) error {
	up, canUpdate := sm.(subnet.AttrsUpdater)
	for {
		kctx, kcancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func(l *subnet.Lease) { done <- sm.KeepLease(kctx, l) }(lease)
		var attrs subnet.LeaseAttrs
		select {
		case err := <-done:
			kcancel()
			return err
		case attrs = <-adv:
		}
		kcancel()
		if err := <-done; err != nil {
			return err
		}
		if !canUpdate {
			klog.ErrorS(nil, "The backend's advertised attributes changed, but this subnet manager cannot rewrite the lease; restart flanneld to advertise them",
				"manager", sm.Name())
			continue
		}
		nl, err := updateLease(ctx, up, cfg, lease, &attrs, obs, tm)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		lease = nl
		updated(nl)
	}
}

// updateLease writes attrs, retrying with backoff until done, ErrLeaseRevoked or a permanent error.
func updateLease(ctx context.Context, up subnet.AttrsUpdater, cfg *subnet.Config, lease *subnet.Lease, attrs *subnet.LeaseAttrs,
	obs observe.Observer, tm timings) (*subnet.Lease, error) {
	wait := tm.acquireRetry
	for {
		actx, cancel := context.WithTimeout(ctx, 6*attemptTimeout)
		nl, err := up.UpdateLeaseAttrs(actx, cfg, lease, attrs)
		timedOut := actx.Err() != nil
		cancel()
		if err == nil {
			klog.InfoS("Advertised new lease attributes", "subnet", lease.Subnet, "ipv6Subnet", lease.IPv6Subnet, "backendType", attrs.BackendType)
			return nl, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if errors.Is(err, subnet.ErrLeaseRevoked) || subnet.IsPermanent(err) {
			return nil, err
		}
		if !timedOut {
			obs.DatastoreError(observe.Acquire, err)
		}
		klog.ErrorS(err, "Failed to advertise new lease attributes; retrying", "retryIn", wait)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, tm.acquireMax)
	}
}
