package subnet

import "context"

// AttrsUpdater is a Manager that replaces the node's lease attributes, keeping its subnets
// and expiry, while no KeepLease runs. ErrLeaseRevoked means the lease is gone.
type AttrsUpdater interface {
	UpdateLeaseAttrs(ctx context.Context, cfg *Config, lease *Lease, attrs *LeaseAttrs) (*Lease, error)
}
