package etcd

import (
	"context"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/subnet"
)

var _ subnet.AttrsUpdater = (*Manager)(nil)

// UpdateLeaseAttrs rewrites the node's existing subnet key with attrs, keeping its etcd lease.
func (m *Manager) UpdateLeaseAttrs(ctx context.Context, _ *subnet.Config, l *subnet.Lease, attrs *subnet.LeaseAttrs) (*subnet.Lease, error) {
	if l == nil || attrs == nil {
		return nil, errors.New("UpdateLeaseAttrs: nil lease or attributes")
	}
	value, cli, err := m.encodeFor(attrs)
	if err != nil {
		return nil, err
	}
	key := m.subnetKey(l.Subnet, l.IPv6Subnet)
	uctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := cli.Txn(uctx).
		If(clientv3.Compare(clientv3.Version(key), ">", 0)).
		Then(clientv3.OpPut(key, string(value), clientv3.WithIgnoreLease())).Commit()
	if err != nil {
		return nil, fmt.Errorf("updating %s: %w", key, err)
	}
	if !resp.Succeeded {
		return nil, fmt.Errorf("subnet lease %s: %w", key, subnet.ErrLeaseRevoked)
	}
	klog.InfoS("Updated the attributes of the subnet lease", "key", key, "backendType", attrs.BackendType)
	nl := *l
	nl.Attrs = *attrs
	return &nl, nil
}
