package kube

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// peerNode is what the informer caches of a Node: the name, the resource version, the
// lease annotations and the pod CIDRs. A Node object as the API server sends it is tens of
// kilobytes (images, conditions, managed fields); this is under two hundred bytes plus the
// strings. Measured at 5,000 nodes: the lease annotations as a map per node were half of
// the informer's memory, and an embedded ObjectMeta (almost 300 bytes, nearly all of it
// empty) a third of the rest; so the annotations are a fixed array (no keys per node) and
// the metadata is built on demand (GetObjectMeta) for the informer's key function.
type peerNode struct {
	Name, ResourceVersion string
	// LeaseAnn holds the values of the lease annotations, in Annotations.leaseKeys order;
	// "" when absent (peerToLease reads an absent and an empty annotation alike).
	LeaseAnn [numLeaseKeys]string
	// PodCIDRs is spec.podCIDRs, or spec.podCIDR when the list is empty.
	PodCIDRs []string
}

// DeepCopyObject implements runtime.Object.
func (p *peerNode) DeepCopyObject() runtime.Object {
	c := *p
	c.PodCIDRs = append([]string(nil), p.PodCIDRs...)
	return &c
}

// GetObjectKind implements runtime.Object (a cached peer node carries no type).
func (p *peerNode) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// GetObjectMeta implements metav1.ObjectMetaAccessor, which meta.Accessor (and so the
// informer's key function) uses: a fresh copy of the name and the resource version,
// allocated per call and not kept.
func (p *peerNode) GetObjectMeta() metav1.Object {
	return &metav1.ObjectMeta{Name: p.Name, ResourceVersion: p.ResourceVersion}
}

// managed reports whether the node is annotated by a kube subnet manager.
func (p *peerNode) managed() bool { return p.LeaseAnn[leaseKeyManaged] == "true" }

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
	p := &peerNode{Name: n.Name, ResourceVersion: n.ResourceVersion}
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
// It also tells KeepLease when this node's NetworkUnavailable condition is seen other
// than False.
func (m *Manager) slimNode(obj any) (any, error) {
	if n, ok := obj.(*corev1.Node); ok {
		if m.cfg.SetNodeNetworkUnavailable && !networkAvailable(n) && n.Name == m.cachedNodeName() {
			select {
			case m.condChanged <- struct{}{}:
			default:
			}
		}
		return m.slim(n), nil
	}
	return obj, nil
}

// networkAvailable reports whether the node's NetworkUnavailable condition is False.
func networkAvailable(n *corev1.Node) bool {
	_, status := networkCondition(n)
	return status == corev1.ConditionFalse
}

// networkCondition returns the NetworkUnavailable condition's reason and status ("" when
// the node has none).
func networkCondition(n *corev1.Node) (reason string, status corev1.ConditionStatus) {
	for i := range n.Status.Conditions {
		if c := &n.Status.Conditions[i]; c.Type == corev1.NodeNetworkUnavailable {
			return c.Reason, c.Status
		}
	}
	return "", ""
}
