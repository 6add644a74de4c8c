// Package kube is the Kubernetes subnet manager (--kube-subnet-mgr): a node's subnet is its
// pod CIDR(s), the config is net-conf.json, and what a node advertises goes into its
// annotations with upstream's keys and patch shape; leases never expire. Slim types decoded
// from protobuf replace k8s.io/api, whose type registry costs ~15 MB at rest.
package kube
