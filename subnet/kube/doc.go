// Package kube is the Kubernetes subnet manager (flanneld --kube-subnet-mgr): the node's
// subnet is its spec.podCIDR(s); the network config is a file (net-conf.json); what a node
// advertises goes into its annotations via nodes/status, with upstream's keys and patch
// shape, so both run in one cluster. Peers are the annotated nodes, listed and watched by
// client-go's Reflector, keeping only what a lease needs.
//
// Neither the typed clientset nor k8s.io/api is linked, as they register every API type at
// start (measured at rest: 21.6 MB with the REST client, 36.3 MB with the clientset); three
// slim types are decoded from protobuf instead.
//
// Kube leases never expire: KeepLease only reports readiness (NetworkUnavailable=False).
package kube
