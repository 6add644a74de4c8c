package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

// podCIDRHint is what an operator must do when a node has no (usable) pod CIDR.
const podCIDRHint = "the controller manager assigns spec.podCIDR when it runs with --allocate-node-cidrs=true and --cluster-cidr set to the flannel Network"

// AcquireLease makes the node's pod CIDR(s) this node's lease and advertises attrs in the
// node's annotations (a strategic-merge patch on nodes/<name>/status, as upstream), only
// when they differ from what the node already carries.
func (m *Manager) AcquireLease(ctx context.Context, cfg *subnet.Config, attrs *subnet.LeaseAttrs) (*subnet.Lease, error) {
	name, err := m.NodeName(ctx)
	if err != nil {
		return nil, err
	}
	n, err := m.getNode(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("timeout contacting kube-api, failed to patch node %q. Error: %w", name, err)
	}
	if n.Spec.PodCIDR == "" && len(n.Spec.PodCIDRs) == 0 {
		// Retried: the controller manager may not have got to this node yet.
		return nil, fmt.Errorf("node %q pod cidr not assigned: %s", name, podCIDRHint)
	}
	// A node's pod CIDRs cannot change once assigned, so a mismatch with the network
	// config is permanent for this config: the daemon exits and the restart re-reads it.
	v4, v6, err := podCIDRs(n)
	if err != nil {
		return nil, &subnet.PermanentError{Err: err}
	}
	if err := checkPodCIDRs(name, cfg, v4, v6); err != nil {
		return nil, &subnet.PermanentError{Err: err}
	}
	want := m.desiredAnnotations(n, cfg, attrs)
	if diff := annotationDiff(n.Annotations, want); len(diff) > 0 {
		if err := m.patchAnnotations(ctx, name, diff); err != nil {
			return nil, err
		}
		klog.InfoS("Annotated node", "node", name, "annotations", want)
	}
	l := &subnet.Lease{EnableIPv4: cfg.EnableIPv4, EnableIPv6: cfg.EnableIPv6, Attrs: *attrs}
	if cfg.EnableIPv4 {
		l.Subnet = v4
	}
	if cfg.EnableIPv6 {
		l.IPv6Subnet = v6
	}
	switch attrs.BackendType {
	case "vxlan", "host-gw", "wireguard":
	default: // as upstream: other backends are IPv4 only
		l.EnableIPv6, l.IPv6Subnet = false, netip.Prefix{}
	}
	return l, nil
}

// checkPodCIDRs verifies that the node's pod CIDRs fit the network config.
func checkPodCIDRs(name string, cfg *subnet.Config, v4, v6 netip.Prefix) error {
	if cfg.EnableIPv4 {
		if !v4.IsValid() {
			return fmt.Errorf("node %q has no IPv4 pod CIDR but the network config enables IPv4: %s", name, podCIDRHint)
		}
		if !cfg.Network.Contains(v4.Addr()) || v4.Bits() < cfg.Network.Bits() {
			return fmt.Errorf("subnet %q specified in the flannel net config doesn't contain %q PodCIDR of the %q node: "+
				"make the controller manager's --cluster-cidr and the net-conf.json Network agree", cfg.Network, v4, name)
		}
	}
	if cfg.EnableIPv6 {
		if !v6.IsValid() {
			return fmt.Errorf("node %q has no IPv6 pod CIDR but the network config enables IPv6: %s", name, podCIDRHint)
		}
		if !cfg.IPv6Network.Contains(v6.Addr()) || v6.Bits() < cfg.IPv6Network.Bits() {
			return fmt.Errorf("subnet %q specified in the flannel net config doesn't contain %q IPv6 PodCIDR of the %q node: "+
				"make the controller manager's --cluster-cidr and the net-conf.json IPv6Network agree", cfg.IPv6Network, v6, name)
		}
	}
	return nil
}

// desiredAnnotations are the annotation values this node must carry for attrs.
func (m *Manager) desiredAnnotations(n *apiNode, cfg *subnet.Config, attrs *subnet.LeaseAttrs) map[string]string {
	have := n.Annotations
	want := map[string]string{
		m.ann.SubnetKubeManaged: "true",
		m.ann.BackendType:       attrs.BackendType,
	}
	dataOrNull := func(raw json.RawMessage) string {
		if len(raw) == 0 {
			return "null"
		}
		return string(raw)
	}
	if cfg.EnableIPv4 && attrs.PublicIP.IsValid() {
		want[m.ann.BackendData] = dataOrNull(attrs.BackendData)
		want[m.ann.PublicIP] = m.overwrite(have, m.ann.PublicIPOverwrite, attrs.PublicIP, false)
	}
	if cfg.EnableIPv6 && attrs.PublicIPv6.IsValid() {
		want[m.ann.BackendV6Data] = dataOrNull(attrs.BackendV6Data)
		want[m.ann.PublicIPv6] = m.overwrite(have, m.ann.PublicIPv6Overwrite, attrs.PublicIPv6, true)
	}
	return want
}

// overwrite is the public address to advertise: the overwrite annotation's value when
// it is set and a usable address of the family (what the peers' admission rule accepts,
// subnet.CheckPublicIP), else the detected one: advertising an unusable address would
// make every peer reject this node's lease.
func (m *Manager) overwrite(have map[string]string, key string, detected netip.Addr, v6 bool) string {
	ow := have[key]
	if ow == "" {
		return detected.String()
	}
	ip, err := netip.ParseAddr(ow)
	if err == nil {
		err = subnet.CheckPublicIP(ip, v6)
	}
	if err != nil {
		klog.ErrorS(err, "Ignoring the node's public IP overwrite annotation: not a usable address; advertising the detected one",
			"annotation", key, "value", ow, "publicIP", detected)
		return detected.String()
	}
	return ow
}

// annotationDiff returns the annotations of want that have lacks or holds with another
// value.
func annotationDiff(have, want map[string]string) map[string]string {
	diff := map[string]string{}
	for k, v := range want {
		if got, ok := have[k]; !ok || got != v {
			diff[k] = v
		}
	}
	return diff
}

// patchAnnotations sends annotations as a strategic merge patch of the node's metadata
// (with the changed annotations only, it is the patch a two-way diff between the node
// as read and the node with them applied comes to, which is what upstream sends), to
// the status subresource (what the flannel ClusterRole allows: nodes/status patch).
func (m *Manager) patchAnnotations(ctx context.Context, name string, annotations map[string]string) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": annotations}})
	if err != nil {
		return fmt.Errorf("failed to create patch for node %q: %w", name, err)
	}
	if err := m.cs.patchNodeStatus(ctx, name, patch); err != nil {
		return m.withHint(fmt.Errorf("failed to patch node %q: %w", name, err))
	}
	return nil
}

// KeepLease reports this node's network as up (NetworkUnavailable=False, reason
// FlannelIsUp) when configured to, retrying until it succeeds, then waits for ctx. While
// the lease watch runs, a NetworkUnavailable condition that someone else turns to True
// (or removes) is set back to False; repeated changes are answered more and more slowly
// (1 s doubling to 5 min) rather than fought. Kube leases do not expire, so it never
// returns ErrLeaseRevoked.
func (m *Manager) KeepLease(ctx context.Context, lease *subnet.Lease) error {
	if !m.cfg.SetNodeNetworkUnavailable {
		<-ctx.Done()
		return nil
	}
	if !m.keepSettingAvailable(ctx) {
		return nil
	}
	var delay time.Duration
	var last time.Time // when we last set the condition back
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-m.condChanged:
		}
		name, err := m.NodeName(ctx)
		if err != nil {
			continue
		}
		gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		n, err := m.cs.getNode(gctx, name)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				err = m.withHint(err)
				m.observer().DatastoreError(observe.KeepLease, err)
				klog.ErrorS(err, "Cannot read the node to check its NetworkUnavailable condition", "node", name)
			}
			continue // the next change of the node signals again
		}
		if networkAvailable(n) {
			continue // an older event, already set back
		}
		if time.Since(last) < max(time.Minute, 2*delay) {
			delay = min(2*delay, 5*time.Minute) // changed again soon after we set it
		} else {
			delay = time.Second
		}
		reason, status := networkCondition(n)
		klog.InfoS("Someone else changed the node's NetworkUnavailable condition; setting it back to False",
			"node", name, "status", status, "reason", reason, "in", delay)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		if !m.keepSettingAvailable(ctx) {
			return nil
		}
		last = time.Now()
	}
}

// keepSettingAvailable sets the condition, retrying with back-off until it succeeds
// (true) or ctx ends (false).
func (m *Manager) keepSettingAvailable(ctx context.Context) bool {
	wait := time.Second
	for {
		err := m.setNetworkAvailable(ctx)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		m.observer().DatastoreError(observe.KeepLease, err)
		klog.ErrorS(err, "Failed to set the node's NetworkUnavailable condition; retrying", "retryIn", wait)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

func (m *Manager) setNetworkAvailable(ctx context.Context) error {
	name, err := m.NodeName(ctx)
	if err != nil {
		return err
	}
	now := time.Now().UTC().Format(time.RFC3339) // a metav1.Time: seconds, UTC
	cond := nodeCondition{
		Type:               condNetworkUnavailable,
		Status:             condFalse,
		Reason:             "FlannelIsUp",
		Message:            "Flannel is running on this node",
		LastHeartbeatTime:  now,
		LastTransitionTime: now,
	}
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []nodeCondition{cond}}})
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := m.cs.patchNodeStatus(pctx, name, patch); err != nil {
		return m.withHint(fmt.Errorf("failed to set NetworkUnavailable=False on node %q: %w", name, err))
	}
	klog.InfoS("Set node condition", "node", name, "type", "NetworkUnavailable", "status", "False", "reason", "FlannelIsUp")
	return nil
}
