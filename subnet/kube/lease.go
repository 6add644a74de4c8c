package kube

import (
	"encoding/json"
	"fmt"
	"net/netip"

	"github.com/flannel-go/flannel/subnet"
)

// podCIDRs returns the node's IPv4 and IPv6 pod CIDRs from spec.podCIDRs, else spec.podCIDR.
func podCIDRs(n *apiNode) (v4, v6 netip.Prefix, err error) {
	list := n.Spec.PodCIDRs
	if len(list) == 0 && n.Spec.PodCIDR != "" {
		list = []string{n.Spec.PodCIDR}
	}
	return parsePodCIDRs(n.Name, list)
}

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

func nodeCandidate(n *apiNode, ann Annotations, cfg *subnet.Config) subnet.Candidate {
	return peerCandidate(slimWith(ann, n), cfg)
}

// peerCandidate builds a peer node's candidate (creation time as seniority); what cannot be
// read is its Defect: TooLarge, not one pod CIDR per family, BadPublicIP, BadJSON.
func peerCandidate(p *peerNode, cfg *subnet.Config) subnet.Candidate {
	c := subnet.Candidate{Origin: subnet.Origin{Name: p.Name, Seniority: p.Created, Version: p.Version}}
	l := &c.Lease
	a := &p.LeaseAnn
	l.EnableIPv4, l.EnableIPv6 = cfg.EnableIPv4, cfg.EnableIPv6
	if p.TooLarge {
		c.Origin.Defect = subnet.Reject(subnet.TooLarge, "node %q: flannel annotations larger than %d bytes together", p.Name, subnet.MaxValueSize)
		return c
	}
	v4, v6, err := parsePodCIDRs(p.Name, p.PodCIDRs)
	if err != nil {
		c.Origin.Defect = &subnet.Rejection{Reason: subnet.OutsideNetwork, Err: err}
		return c
	}
	if cfg.EnableIPv4 {
		l.Subnet = v4
	}
	if cfg.EnableIPv6 {
		l.IPv6Subnet = v6
	}
	l.Attrs.BackendType = subnet.InternBackendType(a[leaseKeyBackendType])
	for _, f := range [...]struct {
		on       bool
		v6       bool
		sn       netip.Prefix
		ip, data string
	}{
		{cfg.EnableIPv4, false, v4, a[leaseKeyPublicIP], a[leaseKeyBackendData]},
		{cfg.EnableIPv6, true, v6, a[leaseKeyPublicIPv6], a[leaseKeyBackendV6Data]},
	} {
		if !f.on {
			continue
		}
		fam := "IPv4"
		if f.v6 {
			fam = "IPv6"
		}
		if !f.sn.IsValid() {
			c.Origin.Defect = subnet.Reject(subnet.OutsideNetwork, "node %q: no %s pod CIDR", p.Name, fam)
			return c
		}
		ip, err := netip.ParseAddr(f.ip)
		if err != nil || ip.Is4() == f.v6 || ip.Is4In6() {
			c.Origin.Defect = subnet.Reject(subnet.BadPublicIP, "node %q: public %s address annotation %q", p.Name, fam, f.ip)
			return c
		}
		var raw json.RawMessage
		if f.data != "" && f.data != "null" {
			if !json.Valid([]byte(f.data)) {
				c.Origin.Defect = subnet.Reject(subnet.BadJSON, "node %q: %s backend data is not JSON", p.Name, fam)
				return c
			}
			raw = json.RawMessage(f.data)
		}
		if f.v6 {
			l.Attrs.PublicIPv6, l.Attrs.BackendV6Data = ip, raw
		} else {
			l.Attrs.PublicIP, l.Attrs.BackendData = ip, raw
		}
	}
	return c
}

// rawData turns an annotation into BackendData: absent, "null" or invalid JSON -> nil.
func rawData(s string) json.RawMessage {
	if s == "" || s == "null" || !json.Valid([]byte(s)) {
		return nil
	}
	return json.RawMessage(s)
}
