package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flannel-go/flannel/subnet"
)

// Read-only inspection for diagnose and leases: nothing here writes (an access review asks).

// Server is the API server's URL, without credentials.
func (m *Manager) Server() string { return m.server }

// ServerVersion asks the API server for its version ("v1.37.2").
func (m *Manager) ServerVersion(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	raw, err := m.cs.rest.Get().AbsPath("/version").Do(ctx).Raw()
	if err != nil {
		return "", m.withHint(err)
	}
	var v struct {
		GitVersion string `json:"gitVersion"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", fmt.Errorf("decoding /version: %w", err)
	}
	return v.GitVersion, nil
}

// NodeInfo is what the inspection reads of a node.
type NodeInfo struct {
	Name     string
	PodCIDRs []netip.Prefix
	// Managed says the node carries a kube subnet manager's annotations.
	Managed bool
	// Candidate is the node's lease as the admission rule takes it (Origin.Defect: why none).
	subnet.Candidate
	// The public address annotations (invalid when absent or unparsable).
	PublicIPOverwrite, PublicIPv6Overwrite netip.Addr
	NodePublicIP, NodePublicIPv6           netip.Addr
}

// InspectNode reads one node with every annotation, as the daemon reads its own; found: it exists.
func (m *Manager) InspectNode(ctx context.Context, name string, cfg *subnet.Config) (info NodeInfo, found bool, err error) {
	n, err := m.cs.getNode(ctx, name)
	switch {
	case apierrors.IsNotFound(err):
		return NodeInfo{}, false, nil
	case err != nil:
		return NodeInfo{}, false, m.withHint(err)
	}
	return m.nodeInfo(n, cfg), true, nil
}

func (m *Manager) nodeInfo(n *apiNode, cfg *subnet.Config) NodeInfo {
	info := NodeInfo{Name: n.Name, Candidate: nodeCandidate(n, m.ann, cfg)}
	v4, v6, _ := podCIDRs(n)
	for _, p := range []netip.Prefix{v4, v6} {
		if p.IsValid() {
			info.PodCIDRs = append(info.PodCIDRs, p)
		}
	}
	a := n.Annotations
	info.Managed = a[m.ann.SubnetKubeManaged] == "true"
	parse := func(key string, v6 bool) netip.Addr {
		ip, err := netip.ParseAddr(a[key])
		if err != nil || ip.Is6() != v6 || ip.Is4In6() {
			return netip.Addr{}
		}
		return ip
	}
	info.PublicIPOverwrite, info.PublicIPv6Overwrite = parse(m.ann.PublicIPOverwrite, false), parse(m.ann.PublicIPv6Overwrite, true)
	info.NodePublicIP, info.NodePublicIPv6 = parse(m.ann.NodePublicIP, false), parse(m.ann.NodePublicIPv6, true)
	return info
}

// InspectNodes lists every node with the lease it makes, for cfg's families.
func (m *Manager) InspectNodes(ctx context.Context, cfg *subnet.Config) ([]NodeInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, listTimeout)
	defer cancel()
	l, err := m.cs.list(ctx, metav1.ListOptions{}, m.keep)
	if err != nil {
		return nil, m.withHint(err)
	}
	out := make([]NodeInfo, 0, len(l.Items))
	for _, n := range l.Items {
		out = append(out, m.nodeInfo(n, cfg))
	}
	return out, nil
}

// Access is one permission a SelfSubjectAccessReview asks about.
type Access struct {
	Verb, Resource, Subresource, Namespace, Name string
}

// selfSubjectAccessReview is the little of authorization.k8s.io/v1 we need.
type selfSubjectAccessReview struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Spec       struct {
		ResourceAttributes struct {
			Namespace   string `json:"namespace,omitempty"`
			Verb        string `json:"verb"`
			Resource    string `json:"resource"`
			Subresource string `json:"subresource,omitempty"`
			Name        string `json:"name,omitempty"`
		} `json:"resourceAttributes"`
	} `json:"spec"`
	Status struct {
		Allowed bool   `json:"allowed"`
		Denied  bool   `json:"denied"`
		Reason  string `json:"reason"`
	} `json:"status"`
}

// Allowed asks whether these credentials may do a; reason is the authorizer's when not.
func (m *Manager) Allowed(ctx context.Context, a Access) (allowed bool, reason string, err error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	var q selfSubjectAccessReview
	q.APIVersion, q.Kind = "authorization.k8s.io/v1", "SelfSubjectAccessReview"
	r := &q.Spec.ResourceAttributes
	r.Verb, r.Resource, r.Subresource, r.Namespace, r.Name = a.Verb, a.Resource, a.Subresource, a.Namespace, a.Name
	body, err := json.Marshal(q)
	if err != nil {
		return false, "", err
	}
	raw, err := m.cs.rest.Post().AbsPath("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews").
		SetHeader("Content-Type", "application/json").SetHeader("Accept", "application/json").Body(body).Do(ctx).Raw()
	if err != nil {
		return false, "", m.withHint(err)
	}
	var ans selfSubjectAccessReview
	if err := json.Unmarshal(raw, &ans); err != nil {
		return false, "", fmt.Errorf("decoding the SelfSubjectAccessReview: %w", err)
	}
	return ans.Status.Allowed && !ans.Status.Denied, ans.Status.Reason, nil
}

// NetConfigText reads --net-config-path.
func (m *Manager) NetConfigText() (path, text string, err error) {
	data, err := os.ReadFile(m.cfg.NetConfigPath)
	return m.cfg.NetConfigPath, string(data), err
}
