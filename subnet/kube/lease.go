package kube

import (
	"encoding/json"
	"fmt"
	"net/netip"

	"github.com/flannel-go/flannel/subnet"
)

// podCIDRs returns the node's IPv4 and IPv6 pod CIDRs (zero when absent) from
// spec.podCIDRs, or spec.podCIDR when the list is empty.
func podCIDRs(n *apiNode) (v4, v6 netip.Prefix, err error) {
	list := n.Spec.PodCIDRs
	if len(list) == 0 && n.Spec.PodCIDR != "" {
		list = []string{n.Spec.PodCIDR}
	}
	return parsePodCIDRs(n.Name, list)
}

// parsePodCIDRs is podCIDRs for node name with the pod CIDR list.
func parsePodCIDRs(name string, list []string) (v4, v6 netip.Prefix, err error) {
	if len(list) > 2 {
		return v4, v6, fmt.Errorf("node %q pod cidrs should be IPv4/IPv6 only or dualstack", name)
	}
	for _, s := range list {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("node %q: invalid pod CIDR %q: %w", name, s, err)
		}
		p = p.Masked()
		if p.Addr().Is4() {
			if !v4.IsValid() {
				v4 = p
			}
		} else if !v6.IsValid() {
			v6 = p
		}
	}
	return v4, v6, nil
}

// nodeToLease builds a peer's lease from its node. It fails (saying why) when the node is
// not a flannel peer for this config: not annotated by a kube subnet manager, or missing
// what an enabled family needs.
func nodeToLease(n *apiNode, ann Annotations, cfg *subnet.Config) (subnet.Lease, error) {
	return peerToLease(slimWith(ann, n), ann, cfg)
}

// peerToLease is nodeToLease for the informer's peer node.
func peerToLease(p *peerNode, ann Annotations, cfg *subnet.Config) (subnet.Lease, error) {
	a := &p.LeaseAnn
	if a[leaseKeyManaged] != "true" {
		return subnet.Lease{}, fmt.Errorf("node %q is not managed by a flannel kube subnet manager", p.Name)
	}
	v4, v6, err := parsePodCIDRs(p.Name, p.PodCIDRs)
	if err != nil {
		return subnet.Lease{}, err
	}
	l := subnet.Lease{EnableIPv4: cfg.EnableIPv4, EnableIPv6: cfg.EnableIPv6}
	l.Attrs.BackendType = a[leaseKeyBackendType]
	if cfg.EnableIPv4 {
		ip, err := netip.ParseAddr(a[leaseKeyPublicIP])
		if err != nil || !ip.Is4() {
			return subnet.Lease{}, fmt.Errorf("node %q: invalid %s annotation %q", p.Name, ann.PublicIP, a[leaseKeyPublicIP])
		}
		if !v4.IsValid() {
			return subnet.Lease{}, fmt.Errorf("node %q: missing IPv4 address on n.Spec.PodCIDRs", p.Name)
		}
		l.Subnet = v4
		l.Attrs.PublicIP = ip
		l.Attrs.BackendData = rawData(a[leaseKeyBackendData])
	}
	if cfg.EnableIPv6 {
		ip, err := netip.ParseAddr(a[leaseKeyPublicIPv6])
		if err != nil || !ip.Is6() || ip.Is4In6() {
			return subnet.Lease{}, fmt.Errorf("node %q: invalid %s annotation %q", p.Name, ann.PublicIPv6, a[leaseKeyPublicIPv6])
		}
		if !v6.IsValid() {
			return subnet.Lease{}, fmt.Errorf("node %q: missing IPv6 address on n.Spec.PodCIDRs", p.Name)
		}
		l.IPv6Subnet = v6
		l.Attrs.PublicIPv6 = ip
		l.Attrs.BackendV6Data = rawData(a[leaseKeyBackendV6Data])
	}
	return l, nil
}

// rawData turns an annotation into BackendData: absent, "null" or invalid JSON -> nil.
func rawData(s string) json.RawMessage {
	if s == "" || s == "null" || !json.Valid([]byte(s)) {
		return nil
	}
	return json.RawMessage(s)
}
