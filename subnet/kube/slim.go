package kube

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// peerNode is what the informer caches of a Node: the name, the resource version, the
// lease annotations and the pod CIDRs. A Node object as the API server sends it is tens of
// kilobytes (images, conditions, managed fields); this is a few hundred bytes.
type peerNode struct {
	metav1.TypeMeta
	metav1.ObjectMeta
	// PodCIDRs is spec.podCIDRs, or spec.podCIDR when the list is empty.
	PodCIDRs []string
}

// DeepCopyObject implements runtime.Object.
func (p *peerNode) DeepCopyObject() runtime.Object {
	c := &peerNode{TypeMeta: p.TypeMeta, PodCIDRs: append([]string(nil), p.PodCIDRs...)}
	p.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
	return c
}

// node is the peer as a Node carrying only what nodeToLease reads.
func (p *peerNode) node() *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Annotations: p.Annotations}, Spec: corev1.NodeSpec{PodCIDRs: p.PodCIDRs}}
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
	for _, k := range ann.leaseKeys() {
		if v, ok := n.Annotations[k]; ok {
			if p.Annotations == nil {
				p.Annotations = make(map[string]string, 6)
			}
			p.Annotations[k] = v
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

// slimNode is the informer's cache transform (Node -> peerNode; anything else unchanged).
func (m *Manager) slimNode(obj any) (any, error) {
	if n, ok := obj.(*corev1.Node); ok {
		return m.slim(n), nil
	}
	return obj, nil
}
