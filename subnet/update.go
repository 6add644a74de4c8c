package subnet

import "context"

// AttrsUpdater is implemented by subnet managers that can change what the node's
// acquired lease advertises without giving the lease up: the subnets and the expiration
// stay, the attributes are replaced (a backend's rotated key). The daemon calls it with
// no KeepLease running for the lease, and keeps the returned lease from then on.
// UpdateLeaseAttrs returns an error wrapping ErrLeaseRevoked when the lease is gone; other
// errors are datastore problems the caller retries.
type AttrsUpdater interface {
	UpdateLeaseAttrs(ctx context.Context, cfg *Config, lease *Lease, attrs *LeaseAttrs) (*Lease, error)
}
