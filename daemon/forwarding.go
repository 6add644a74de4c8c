package daemon

import (
	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/pkg/forwarding"
	"github.com/flannel-go/flannel/pkg/logwarn"
	"github.com/flannel-go/flannel/subnet"
)

// forwardingOff returns the needed forwarding settings that read "0" (unreadable: logged only).
func forwardingOff(cfg *subnet.Config, read func(name string) (string, error)) []string {
	var off []string
	for _, s := range forwarding.Read(cfg.EnableIPv4, cfg.EnableIPv6, read) {
		switch {
		case s.Err != nil:
			klog.V(2).InfoS("Cannot read a forwarding setting", "sysctl", s.Name, "err", s.Err)
		case s.Off():
			off = append(off, s.Name)
		}
	}
	return off
}

// warnForwardingOff warns once per needed forwarding setting that is off; as upstream, sets none.
func warnForwardingOff(cfg *subnet.Config, read func(name string) (string, error)) {
	if read == nil {
		return
	}
	for _, name := range forwardingOff(cfg, read) {
		logwarn.S("IP forwarding is off, so pods on this node cannot talk to pods on other nodes; flanneld does not change it: turn it on, and keep the setting in /etc/sysctl.d/",
			"sysctl", name, "value", 0, "run", "sysctl -w "+name+"=1")
	}
}
