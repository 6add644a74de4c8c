package kube

import (
	"context"
	"errors"
	"fmt"

	"github.com/flannel-go/flannel/subnet"
)

var _ subnet.AttrsUpdater = (*Manager)(nil)

// UpdateLeaseAttrs patches the differing annotations; pod CIDRs that no longer match are an error.
func (m *Manager) UpdateLeaseAttrs(ctx context.Context, cfg *subnet.Config, l *subnet.Lease, attrs *subnet.LeaseAttrs) (*subnet.Lease, error) {
	if l == nil || attrs == nil || cfg == nil {
		return nil, errors.New("UpdateLeaseAttrs: nil config, lease or attributes")
	}
	nl, err := m.AcquireLease(ctx, cfg, attrs)
	if err != nil {
		return nil, err
	}
	if nl.Subnet != l.Subnet || nl.IPv6Subnet != l.IPv6Subnet {
		return nil, &subnet.PermanentError{Err: fmt.Errorf("the node's pod CIDRs changed from %s to %s while flanneld ran", l.Key(), nl.Key())}
	}
	return nl, nil
}
