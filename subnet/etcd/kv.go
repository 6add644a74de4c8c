package etcd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/subnet"
)

var errBadKey = errors.New("bad subnet key")

// keySubnets extracts the name (the key below dir) and its subnets from a full etcd key.
func keySubnets(dir string, key []byte) (name string, sn, sn6 netip.Prefix, err error) {
	k := string(key)
	name, ok := strings.CutPrefix(k, dir)
	if !ok || name == "" || strings.Contains(name, "/") {
		return "", sn, sn6, fmt.Errorf("%w %q", errBadKey, k)
	}
	sn, sn6, err = subnet.ParseSubnetKey(name)
	if err != nil {
		return "", sn, sn6, fmt.Errorf("%w: %w", errBadKey, err)
	}
	if !sn.IsValid() && !sn6.IsValid() {
		return "", sn, sn6, fmt.Errorf("%w %q: no subnet", errBadKey, k)
	}
	return name, sn, sn6, nil
}

// kvCandidate makes an admission candidate of a subnet key and value (an error if the key
// names no subnet); a value over MaxValueSize is TooLarge, one that does not decode BadJSON.
func kvCandidate(dir string, key, value []byte, createRev, modRev int64) (subnet.Candidate, error) {
	name, sn, sn6, err := keySubnets(dir, key)
	if err != nil {
		return subnet.Candidate{}, err
	}
	c := subnet.Candidate{Lease: leaseFor(sn, sn6), Origin: subnet.Origin{Seniority: createRev, Version: modRev}}
	if !subnet.IsSubnetKey(name, sn, sn6) {
		c.Origin.Name = name
	}
	switch {
	case len(value) > subnet.MaxValueSize:
		c.Origin.Defect = subnet.Reject(subnet.TooLarge, "value of %d bytes, more than %d", len(value), subnet.MaxValueSize)
	default:
		if err := decodeAttrs(value, &c.Lease.Attrs); err != nil {
			c.Lease.Attrs = subnet.LeaseAttrs{}
			c.Origin.Defect = &subnet.Rejection{Reason: subnet.BadJSON, Err: err}
		}
	}
	return c, nil
}

func leaseFor(sn, sn6 netip.Prefix) subnet.Lease {
	return subnet.Lease{
		EnableIPv4: sn.IsValid(),
		EnableIPv6: sn6.IsValid(),
		Subnet:     sn,
		IPv6Subnet: sn6,
	}
}

type entry struct {
	rawKey    []byte           // the key as listed (name() is its string)
	c         subnet.Candidate // the lease (Attrs valid only without a Defect) and its origin
	etcdLease int64            // 0: a reservation
	modRev    int64
}

func (e *entry) name() string { return string(e.rawKey) }

// listPage keys per range request keep a 20,000-lease listing's responses near 0.3 MB each.
const listPage = 1000

// maxResponseBytes is the client's receive limit, bounding the values held at once.
const maxResponseBytes = 512 << 10

// scan reads all subnet keys in pages at the first page's revision (returned), calling size with
// the count, then f per key; oversized pages are read again smaller, oversized values keys-only.
func (m *Manager) scan(ctx context.Context, cli *clientv3.Client, size func(int), f func(e *entry)) (int64, error) {
	limit := m.page
	if limit <= 0 {
		limit = listPage
	}
	page := limit
	end := clientv3.GetPrefixRangeEnd(m.subnetsDir)
	from := m.subnetsDir
	var rev int64
	var e entry // one for all keys: f must copy what it keeps
	pin := func(r *clientv3.GetResponse) {
		if rev == 0 {
			rev = r.Header.Revision
			size(int(r.Count))
		}
	}
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(int64(page))}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := cli.Get(ctx, from, opts...)
		if status.Code(err) == codes.ResourceExhausted {
			if page > 1 {
				page = max(1, page/8)
				klog.V(2).InfoS("A page of the subnet listing passed the receive limit; reading smaller pages", "from", from, "keys", page, "limit", m.cfg.maxResponse)
				continue
			}
			klog.InfoS("A subnet lease value alone passes the receive limit; listing its key without it", "from", from, "limit", m.cfg.maxResponse)
			// One value alone passes the limit: read its key without it.
			opts = append(opts, clientv3.WithKeysOnly())
			resp, err = cli.Get(ctx, from, opts...)
			if err != nil {
				return 0, fmt.Errorf("listing %s: %w", m.subnetsDir, err)
			}
			pin(resp)
			if len(resp.Kvs) == 0 {
				return rev, nil
			}
			kv := resp.Kvs[0]
			if c, err := kvCandidate(m.subnetsDir, kv.Key, nil, kv.CreateRevision, kv.ModRevision); err == nil {
				c.Origin.Defect = subnet.Reject(subnet.TooLarge, "value larger than %d bytes", m.cfg.maxResponse)
				e = entry{rawKey: kv.Key, c: c, etcdLease: kv.Lease, modRev: kv.ModRevision}
				f(&e)
			}
			from = string(kv.Key) + "\x00"
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("listing %s: %w", m.subnetsDir, err)
		}
		pin(resp)
		for _, kv := range resp.Kvs {
			c, err := kvCandidate(m.subnetsDir, kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision)
			if err != nil {
				klog.InfoS("Ignoring bad subnet node", "key", string(kv.Key), "err", err)
				continue
			}
			e = entry{rawKey: kv.Key, c: c, etcdLease: kv.Lease, modRev: kv.ModRevision}
			f(&e)
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return rev, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
		page = min(limit, 2*page)
	}
}
