// Package kube is the Kubernetes subnet manager (flanneld --kube-subnet-mgr): the node's
// subnet is its spec.podCIDR(s), assigned by the controller manager; the network
// configuration is a file (net-conf.json from the kube-flannel-cfg ConfigMap); what a node
// advertises (backend type and data, public IPs) is written to the node's annotations
// through the nodes/status subresource, with the same keys and patch shape as upstream
// flanneld, so both can run in one cluster; peers are the nodes carrying those annotations,
// listed and watched (listWatch) with only what a lease needs kept of each. The API is
// reached through pkg/kubeapi, not client-go, whose type registries cost megabytes at rest.
//
// Unlike etcd leases, kube leases never expire: KeepLease only reports readiness (the
// NetworkUnavailable=False condition) and waits. A deleted Node removes its lease.
package kube
