package kube

import (
	"slices"
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/flannel-go/flannel/subnet"
)

// peerNode is what the lease watch keeps of a Node, ~150 bytes plus strings; annotations are an
// array because a map per node was half the cache at 5,000 nodes.
type peerNode struct {
	Name string
	// LeaseAnn holds the lease annotations by leaseKeys (TooLarge: only kube-subnet-manager).
	LeaseAnn [numLeaseKeys]string
	// PodCIDRs is spec.podCIDRs, or spec.podCIDR when the list is empty.
	PodCIDRs []string
	// Created is the creation time in Unix seconds; Version the resource version.
	Created, Version int64
	// TooLarge: the lease annotations together exceed subnet.MaxValueSize.
	TooLarge bool
}

// peerNode is a runtime.Object so that a list can hand the Reflector its nodes slimmed
// (peerNodeList); nothing reads its kind.
func (*peerNode) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

func (p *peerNode) DeepCopyObject() runtime.Object {
	c := *p
	c.PodCIDRs = slices.Clone(p.PodCIDRs)
	return &c
}

// peerNodeList is a node list as listNodes hands it to the Reflector.
type peerNodeList struct {
	metav1.TypeMeta
	metav1.ListMeta
	Items []*peerNode
}

func (l *peerNodeList) DeepCopyObject() runtime.Object {
	c := &peerNodeList{TypeMeta: l.TypeMeta, Items: make([]*peerNode, 0, len(l.Items))}
	l.ListMeta.DeepCopyInto(&c.ListMeta)
	for _, p := range l.Items {
		c.Items = append(c.Items, p.DeepCopyObject().(*peerNode))
	}
	return c
}

func (p *peerNode) managed() bool { return p.LeaseAnn[leaseKeyManaged] == "true" }

// sameLease reports whether two states make the same candidate lease.
func (p *peerNode) sameLease(o *peerNode) bool {
	return p.Name == o.Name && p.LeaseAnn == o.LeaseAnn && p.Created == o.Created && p.TooLarge == o.TooLarge &&
		slices.Equal(p.PodCIDRs, o.PodCIDRs)
}

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

// slimNode slims n, telling KeepLease when this node's NetworkUnavailable is not False.
func (m *Manager) slimNode(n *apiNode) *peerNode {
	if m.cfg.SetNodeNetworkUnavailable && !networkAvailable(n) && n.Name == m.cachedNodeName() {
		select {
		case m.condChanged <- struct{}{}:
		default:
		}
	}
	return m.slim(n)
}

func networkAvailable(n *apiNode) bool {
	_, status := networkCondition(n)
	return status == condFalse
}

func networkCondition(n *apiNode) (reason, status string) {
	for i := range n.Status.Conditions {
		if c := &n.Status.Conditions[i]; c.Type == condNetworkUnavailable {
			return c.Reason, c.Status
		}
	}
	return "", ""
}
