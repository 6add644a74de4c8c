// Package etcd is the etcd v3 subnet manager. It keeps the config at <prefix>/config and each
// lease at <prefix>/subnets/<subnet key> in upstream flanneld's layout and JSON, so both can
// share one cluster; a subnet key without an etcd lease is a reservation, never renewed.
package etcd
