package kube

import (
	"slices"
	"strconv"

	"github.com/flannel-go/flannel/subnet"
)

// peerNode is what the lease watch keeps of a Node: the name, the lease annotations and
// the pod CIDRs, and what the admission rule needs of its origin (the creation time and
// the resource version it last changed in). A Node object as the API server sends it is
// tens of kilobytes (images, conditions, managed fields); this is about a hundred and
// fifty bytes plus the strings. Measured at 5,000 nodes: the lease annotations as a map
// per node were half of the cache's memory, so they are a fixed array (no keys per node).
type peerNode struct {
	Name string
	// LeaseAnn holds the values of the lease annotations, in Annotations.leaseKeys order;
	// "" when absent (peerCandidate reads an absent and an empty annotation alike).
	// When TooLarge, only the kube-subnet-manager one is kept.
	LeaseAnn [numLeaseKeys]string
	// PodCIDRs is spec.podCIDRs, or spec.podCIDR when the list is empty.
	PodCIDRs []string
	// Created is the creation time in Unix seconds; Version the resource version.
	Created, Version int64
	// TooLarge: the lease annotations together are larger than subnet.MaxValueSize;
	// their values are not kept.
	TooLarge bool
}

// managed reports whether the node is annotated by a kube subnet manager.
func (p *peerNode) managed() bool { return p.LeaseAnn[leaseKeyManaged] == "true" }

// sameLease reports whether two states of a node make the same candidate lease (the
// resource version aside).
func (p *peerNode) sameLease(o *peerNode) bool {
	return p.Name == o.Name && p.LeaseAnn == o.LeaseAnn && p.Created == o.Created && p.TooLarge == o.TooLarge &&
		slices.Equal(p.PodCIDRs, o.PodCIDRs)
}

// slim reduces a Node to a peerNode.
func (m *Manager) slim(n *apiNode) *peerNode { return slimWith(m.ann, n) }

func slimWith(ann Annotations, n *apiNode) *peerNode {
	p := &peerNode{Name: n.Name, Created: n.CreationTimestamp.Unix(), TooLarge: n.leaseTooLarge}
	p.Version, _ = strconv.ParseInt(n.ResourceVersion, 10, 64)
	size := 0
	for i, k := range ann.leaseKeys() {
		p.LeaseAnn[i] = n.Annotations[k]
		size += len(p.LeaseAnn[i])
	}
	if p.TooLarge || size > subnet.MaxValueSize {
		p.TooLarge = true
		managed := p.LeaseAnn[leaseKeyManaged]
		p.LeaseAnn = [numLeaseKeys]string{}
		if len(managed) <= len("true") {
			p.LeaseAnn[leaseKeyManaged] = managed
		}
	}
	switch {
	case len(n.Spec.PodCIDRs) > 0:
		p.PodCIDRs = n.Spec.PodCIDRs
	case n.Spec.PodCIDR != "":
		p.PodCIDRs = []string{n.Spec.PodCIDR}
	}
	return p
}

// slimNode reduces a Node from the watch to a peerNode. It also tells KeepLease when this
// node's NetworkUnavailable condition is seen other than False.
func (m *Manager) slimNode(n *apiNode) *peerNode {
	if m.cfg.SetNodeNetworkUnavailable && !networkAvailable(n) && n.Name == m.cachedNodeName() {
		select {
		case m.condChanged <- struct{}{}:
		default:
		}
	}
	return m.slim(n)
}

// networkAvailable reports whether the node's NetworkUnavailable condition is False.
func networkAvailable(n *apiNode) bool {
	_, status := networkCondition(n)
	return status == condFalse
}

// networkCondition returns the NetworkUnavailable condition's reason and status ("" when
// the node has none).
func networkCondition(n *apiNode) (reason, status string) {
	for i := range n.Status.Conditions {
		if c := &n.Status.Conditions[i]; c.Type == condNetworkUnavailable {
			return c.Reason, c.Status
		}
	}
	return "", ""
}
