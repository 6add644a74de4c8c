// Package kube is the Kubernetes subnet manager (flanneld --kube-subnet-mgr): the node's
// subnet is its spec.podCIDR(s), assigned by the controller manager; the network
// configuration is a file (net-conf.json from the kube-flannel-cfg ConfigMap); what a node
// advertises (backend type and data, public IPs) is written to the node's annotations
// through the nodes/status subresource, with the same keys and patch shape as upstream
// flanneld, so both can run in one cluster; peers are the nodes carrying those annotations,
// listed and watched by client-go's Reflector with only what a lease needs kept of each.
//
// client-go owns the configuration (clientcmd), authentication, transport and rate
// limiting (rest) and the list and watch (tools/cache). The objects are three slim types
// of this package, decoded from protobuf by apimachinery's serializers over a scheme of
// only those and the meta/v1 types, and a node list by decodeNodeList as it streams in.
// Neither the typed clientset nor k8s.io/api is linked: they register every API type at
// start (measured at rest: 18.4 MB without client-go, 21.6 MB with rest, clientcmd and
// tools/cache, 36.3 MB with the typed clientset). The dynamic and metadata clients cost
// what the REST client costs to link, but the metadata client has no spec.podCIDRs and
// the dynamic one decodes whole Nodes from JSON into maps.
//
// Unlike etcd leases, kube leases never expire: KeepLease only reports readiness (the
// NetworkUnavailable=False condition) and waits. A deleted Node removes its lease.
package kube
