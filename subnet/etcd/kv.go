package etcd

import (
	"context"
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
	if err := decodeAttrs(value, &l.Attrs); err != nil {
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
	rawKey    []byte       // the key as listed (name() is its string)
	lease     subnet.Lease // Attrs valid only when attrsErr is nil
	attrsErr  error
	etcdLease int64 // 0: a reservation
	modRev    int64
}

// name is the entry's etcd key.
func (e *entry) name() string { return string(e.rawKey) }

// usableOrLog reports whether the entry's value parsed; an entry whose value did not is
// logged and is no peer lease (its subnets are still taken).
func (e *entry) usableOrLog() bool {
	if e.attrsErr != nil {
		klog.InfoS("Ignoring subnet lease with a bad value", "key", e.name(), "err", e.attrsErr)
		return false
	}
	return true
}

// listPage is how many keys one range request of scan reads: the responses of a
// 20,000-lease network stay small (about 0.3 MB each) instead of one 6 MB response
// held while it is decoded.
const listPage = 1000

// scan reads all subnet keys, in pages of m.page (listPage when 0) keys, all at the
// revision of the first page, which it returns. It calls size once with the number of
// keys, then f for each: keys that do not parse are skipped; values that do not parse
// are passed (their subnets are still taken) with attrsErr set.
func (m *Manager) scan(ctx context.Context, cli *clientv3.Client, size func(int), f func(e *entry)) (int64, error) {
	page := m.page
	if page <= 0 {
		page = listPage
	}
	end := clientv3.GetPrefixRangeEnd(m.subnetsDir)
	from := m.subnetsDir
	var rev int64
	var e entry // one for all keys: f must copy what it keeps
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(int64(page))}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := cli.Get(ctx, from, opts...)
		if err != nil {
			return 0, fmt.Errorf("listing %s: %w", m.subnetsDir, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
			size(int(resp.Count))
		}
		for _, kv := range resp.Kvs {
			sn, sn6, err := keySubnets(m.subnetsDir, kv.Key)
			if err != nil {
				klog.InfoS("Ignoring bad subnet node", "key", string(kv.Key), "err", err)
				continue
			}
			e = entry{rawKey: kv.Key, lease: leaseFor(sn, sn6), etcdLease: kv.Lease, modRev: kv.ModRevision}
			if err := decodeAttrs(kv.Value, &e.lease.Attrs); err != nil {
				e.attrsErr = err
				e.lease.Attrs = subnet.LeaseAttrs{}
			}
			f(&e)
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return rev, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}
