package subnet

import "context"

// AttrsUpdater is implemented by subnet managers that can replace the attributes of the
// node's acquired lease, keeping its subnets and expiration (a rotated key). The daemon
// calls it with no KeepLease running and keeps the returned lease. An error wrapping
// ErrLeaseRevoked means the lease is gone; others are retried.
type AttrsUpdater interface {
	UpdateLeaseAttrs(ctx context.Context, cfg *Config, lease *Lease, attrs *LeaseAttrs) (*Lease, error)
}
