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

const podCIDRHint = "the controller manager assigns spec.podCIDR when it runs with --allocate-node-cidrs=true and --cluster-cidr set to the flannel Network"

// AcquireLease makes the node's pod CIDR(s) its lease and writes attrs into its annotations.
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
	// Pod CIDRs never change once assigned: a mismatch with the config is permanent.
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

// overwrite is the public address to advertise: the overwrite annotation if usable for the
// family (peers reject a lease with an unusable one), else the detected address.
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

// annotationDiff returns the annotations of want that have lacks or holds differently.
func annotationDiff(have, want map[string]string) map[string]string {
	diff := map[string]string{}
	for k, v := range want {
		if got, ok := have[k]; !ok || got != v {
			diff[k] = v
		}
	}
	return diff
}

// patchAnnotations sends a strategic merge patch to nodes/<name>/status, as upstream.
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

// KeepLease sets NetworkUnavailable=False (FlannelIsUp) when configured, retrying until it
// succeeds, and again when others change it (backoff 1 s to 5 min) while the lease watch
// runs, until ctx ends. Kube leases do not expire: it never returns ErrLeaseRevoked.
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

// keepSettingAvailable retries setting the condition until it succeeds (true) or ctx ends.
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
