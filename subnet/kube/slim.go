package kube

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// peerNode is what the informer caches of a Node: the name, the resource version, the
// lease annotations and the pod CIDRs. A Node object as the API server sends it is tens of
// kilobytes (images, conditions, managed fields); this is a few hundred bytes. The lease
// annotations are a fixed array rather than a map, and the keys are not stored per node:
// at 5,000 nodes a map per node was half of the informer's memory.
type peerNode struct {
	metav1.TypeMeta
	// ObjectMeta holds the name and the resource version only (the informer's key and
	// the reflector's bookkeeping need them); its Annotations stay nil.
	metav1.ObjectMeta
	// LeaseAnn holds the values of the lease annotations, in Annotations.leaseKeys order;
	// "" when absent (nodeToLease reads an absent and an empty annotation alike).
	LeaseAnn [numLeaseKeys]string
	// PodCIDRs is spec.podCIDRs, or spec.podCIDR when the list is empty.
	PodCIDRs []string
}

// DeepCopyObject implements runtime.Object.
func (p *peerNode) DeepCopyObject() runtime.Object {
	c := &peerNode{TypeMeta: p.TypeMeta, LeaseAnn: p.LeaseAnn, PodCIDRs: append([]string(nil), p.PodCIDRs...)}
	p.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
	return c
}

// managed reports whether the node is annotated by a kube subnet manager.
func (p *peerNode) managed() bool { return p.LeaseAnn[leaseKeyManaged] == "true" }

// node is the peer as a Node carrying only what nodeToLease reads (built when needed, not
// kept).
func (p *peerNode) node(ann Annotations) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: p.Name}, Spec: corev1.NodeSpec{PodCIDRs: p.PodCIDRs}}
	for i, k := range ann.leaseKeys() {
		if v := p.LeaseAnn[i]; v != "" {
			if n.Annotations == nil {
				n.Annotations = make(map[string]string, numLeaseKeys)
			}
			n.Annotations[k] = v
		}
	}
	return n
}

// peerNodeList is the informer's list result (see listSlim).
type peerNodeList struct {
	metav1.TypeMeta
	metav1.ListMeta
	Items []*peerNode
}

// DeepCopyObject implements runtime.Object.
func (l *peerNodeList) DeepCopyObject() runtime.Object {
	c := &peerNodeList{TypeMeta: l.TypeMeta}
	l.ListMeta.DeepCopyInto(&c.ListMeta)
	for _, p := range l.Items {
		c.Items = append(c.Items, p.DeepCopyObject().(*peerNode))
	}
	return c
}

// slim reduces a Node to a peerNode.
func (m *Manager) slim(n *corev1.Node) *peerNode { return slimWith(m.ann, n) }

func slimWith(ann Annotations, n *corev1.Node) *peerNode {
	p := &peerNode{ObjectMeta: metav1.ObjectMeta{Name: n.Name, ResourceVersion: n.ResourceVersion}}
	for i, k := range ann.leaseKeys() {
		p.LeaseAnn[i] = n.Annotations[k]
	}
	switch {
	case len(n.Spec.PodCIDRs) > 0:
		p.PodCIDRs = n.Spec.PodCIDRs
	case n.Spec.PodCIDR != "":
		p.PodCIDRs = []string{n.Spec.PodCIDR}
	}
	return p
}

// slimNode is the informer's cache transform (Node -> peerNode; anything else unchanged).
func (m *Manager) slimNode(obj any) (any, error) {
	if n, ok := obj.(*corev1.Node); ok {
		return m.slim(n), nil
	}
	return obj, nil
}
