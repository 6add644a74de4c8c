package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/subnet"
)

var errBadKey = errors.New("bad subnet key")

// keySubnets extracts the subnets from a full etcd key below dir ("<prefix>/subnets/").
func keySubnets(dir string, key []byte) (sn, sn6 netip.Prefix, err error) {
	k := string(key)
	name, ok := strings.CutPrefix(k, dir)
	if !ok || name == "" || strings.Contains(name, "/") {
		return sn, sn6, fmt.Errorf("%w %q", errBadKey, k)
	}
	sn, sn6, err = subnet.ParseSubnetKey(name)
	if err != nil {
		return sn, sn6, fmt.Errorf("%w: %w", errBadKey, err)
	}
	if !sn.IsValid() && !sn6.IsValid() {
		return sn, sn6, fmt.Errorf("%w %q: no subnet", errBadKey, k)
	}
	return sn, sn6, nil
}

// kvToLease turns a subnet key and its value into a Lease. Expiration stays zero: peers'
// lease TTLs are not looked up.
func kvToLease(dir string, key, value []byte) (subnet.Lease, error) {
	sn, sn6, err := keySubnets(dir, key)
	if err != nil {
		return subnet.Lease{}, err
	}
	l := leaseFor(sn, sn6)
	if err := json.Unmarshal(value, &l.Attrs); err != nil {
		return subnet.Lease{}, fmt.Errorf("bad lease value at %s: %w", key, err)
	}
	return l, nil
}

func leaseFor(sn, sn6 netip.Prefix) subnet.Lease {
	return subnet.Lease{
		EnableIPv4: sn.IsValid(),
		EnableIPv6: sn6.IsValid(),
		Subnet:     sn,
		IPv6Subnet: sn6,
	}
}

// entry is one subnet key as listed from etcd.
type entry struct {
	key       string
	lease     subnet.Lease // Attrs valid only when attrsErr is nil
	attrsErr  error
	etcdLease int64 // 0: a reservation
	modRev    int64
}

// list reads all subnet keys. Keys that do not parse are skipped; values that do not
// parse are kept (their subnets are still taken) with attrsErr set.
func (m *Manager) list(ctx context.Context, cli *clientv3.Client) ([]entry, int64, error) {
	resp, err := cli.Get(ctx, m.subnetsDir, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("listing %s: %w", m.subnetsDir, err)
	}
	entries := make([]entry, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		sn, sn6, err := keySubnets(m.subnetsDir, kv.Key)
		if err != nil {
			klog.InfoS("Ignoring bad subnet node", "key", string(kv.Key), "err", err)
			continue
		}
		e := entry{key: string(kv.Key), lease: leaseFor(sn, sn6), etcdLease: kv.Lease, modRev: kv.ModRevision}
		if err := json.Unmarshal(kv.Value, &e.lease.Attrs); err != nil {
			e.attrsErr = err
			e.lease.Attrs = subnet.LeaseAttrs{}
		}
		entries = append(entries, e)
	}
	return entries, resp.Header.Revision, nil
}
