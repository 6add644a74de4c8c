// Package daemon runs flanneld's life cycle: config, external interface, backend,
// lease, subnet file, then the reconcile loop and lease keeping until the context ends.
package daemon

import "time"

// Config is what the daemon itself reads of flanneld's settings; the rest arrives in Deps.
type Config struct {
	// SubnetFile is where the subnet file is written; the state file sits beside it.
	SubnetFile string
	// IPMasq is written to the subnet file (FLANNEL_IPMASQ).
	IPMasq bool
	// HealthzAddr is the host:port /healthz, /readyz and /metrics listen on ("": none).
	HealthzAddr string
	// RenewMargin is how long before expiry the lease is renewed (0: 60 minutes).
	RenewMargin time.Duration
}
