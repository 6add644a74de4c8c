// Package daemon runs flanneld's life cycle: config, external interface, backend,
// lease, subnet file, then the reconcile loop and lease keeping until the context ends.
package daemon

import "time"

// Options are flanneld's settings after flag and FLANNELD_* environment parsing.
// Field names follow the upstream flags (see Documentation/configuration.md).
type Options struct {
	EtcdEndpoints             []string // --etcd-endpoints, split on ","
	EtcdPrefix                string   // --etcd-prefix
	EtcdKeyfile               string
	EtcdCertfile              string
	EtcdCAFile                string
	EtcdUsername              string
	EtcdPassword              string   // never logged
	Iface                     []string // --iface (repeatable): names or IPs
	IfaceRegex                []string // --iface-regex (repeatable)
	IfaceCanReach             string
	SubnetFile                string
	PublicIP                  string
	PublicIPv6                string
	SubnetLeaseRenewMargin    time.Duration // --subnet-lease-renew-margin (minutes on the command line)
	IPMasq                    bool
	IPMasqFullyRandomDisable  bool
	KubeSubnetMgr             bool
	KubeAPIURL                string
	KubeAnnotationPrefix      string
	KubeConfigFile            string
	KubeExecPluginAllowlist   []string // --kube-exec-plugin-allowlist (flannel-go only), split on ","
	HealthzIP                 string
	HealthzPort               int
	IPTablesResync            time.Duration // --iptables-resync (seconds on the command line)
	IPTablesForwardRules      bool
	IPBlackholeRoute          bool
	NetConfigPath             string
	SetNodeNetworkUnavailable bool
}

// LogSafe returns a copy fit for logging: the etcd password is masked.
func (o Options) LogSafe() Options {
	if o.EtcdPassword != "" {
		o.EtcdPassword = "<redacted>"
	}
	return o
}
