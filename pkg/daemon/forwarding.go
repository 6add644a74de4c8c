package daemon

import (
	"strings"

	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/pkg/logwarn"
	"github.com/flannel-go/flannel/subnet"
)

// The kernel settings that let this node forward pod traffic, by family.
const (
	sysctlIPv4Forward = "net.ipv4.ip_forward"
	sysctlIPv6Forward = "net.ipv6.conf.all.forwarding"
)

// forwardingOff returns the forwarding settings the network config's families need that
// read "0". A setting that cannot be read is logged at -v=2 and not reported.
func forwardingOff(cfg *subnet.Config, read func(name string) (string, error)) []string {
	var names, off []string
	if cfg.EnableIPv4 {
		names = append(names, sysctlIPv4Forward)
	}
	if cfg.EnableIPv6 {
		names = append(names, sysctlIPv6Forward)
	}
	for _, name := range names {
		v, err := read(name)
		if err != nil {
			klog.V(2).InfoS("Cannot read a forwarding setting", "sysctl", name, "err", err)
			continue
		}
		if strings.TrimSpace(v) == "0" {
			off = append(off, name)
		}
	}
	return off
}

// warnForwardingOff warns once about each forwarding setting the network needs that is
// off. The daemon never changes them (as upstream); the warning says what to set.
func warnForwardingOff(cfg *subnet.Config, read func(name string) (string, error)) {
	if read == nil {
		return
	}
	for _, name := range forwardingOff(cfg, read) {
		logwarn.S("IP forwarding is off, so pods on this node cannot talk to pods on other nodes; flanneld does not change it: turn it on, and keep the setting in /etc/sysctl.d/",
			"sysctl", name, "value", 0, "run", "sysctl -w "+name+"=1")
	}
}
