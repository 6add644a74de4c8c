// Package etcd is the etcd v3 subnet manager: it keeps flannel's network configuration
// and the nodes' subnet leases in etcd, in the layout upstream flanneld uses, so both can
// share one cluster.
//
// Layout under the prefix (default "/coreos.com/network", joined with path.Join so a
// trailing slash is harmless):
//
//	<prefix>/config                          network configuration JSON, no etcd lease
//	<prefix>/subnets/10.5.85.0-24            LeaseAttrs JSON, attached to an etcd lease (TTL 24 h)
//	<prefix>/subnets/10.5.85.0-24&fd00::-64  dual stack: the IPv6 subnet follows "&"
//	<prefix>/subnets/0.0.0.0-0&fd00::-64     IPv6 only
//
// A subnet key without an etcd lease is a reservation: the node whose public IP it names
// gets that subnet and the key is rewritten without a lease, so it stays a reservation
// and is never renewed.
//
// Allocation lists the leases, reuses the node's own lease (matched by public IP, or by
// public IPv6 address in IPv6-only mode), else the previous subnet from subnet.env, else a
// random free subnet, and creates the key with a compare-and-swap transaction; a lost race
// is retried. Renewal rewrites the key with a freshly granted etcd lease before it expires.
// Peers are watched as a snapshot followed by events; after a compaction a new snapshot
// is sent.
package etcd
