// Package etcd is the etcd v3 subnet manager. It keeps the network config and the nodes'
// subnet leases in upstream flanneld's layout, so both can share one cluster:
//
//	<prefix>/config                          network configuration JSON, no etcd lease
//	<prefix>/subnets/10.5.85.0-24            LeaseAttrs JSON, attached to an etcd lease (TTL 24 h)
//	<prefix>/subnets/10.5.85.0-24&fd00::-64  dual stack: the IPv6 subnet follows "&"
//	<prefix>/subnets/0.0.0.0-0&fd00::-64     IPv6 only
//
// A subnet key without an etcd lease is a reservation: the node it names gets that subnet
// and it is never renewed.
package etcd
