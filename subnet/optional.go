package subnet

import "context"

// Optional interfaces of a Manager, which the daemon and cmd/flanneld look for.

// HealthChecker is implemented by subnet managers that can tell, without a round trip,
// whether their datastore connection is usable (e.g. the etcd client's connection
// state). Health returns nil when it is, else the reason; it must not block.
type HealthChecker interface {
	Health() error
}

// PublicIPSource is implemented by subnet managers whose datastore can name the node's
// public addresses (the Kubernetes manager: the node-public-ip annotations). PublicIPs
// returns the addresses to use given those of --public-ip and --public-ipv6; it is
// called after GetNetworkConfig and must not block.
type PublicIPSource interface {
	PublicIPs(flagV4, flagV6 string) (v4, v6 string)
}

// ConfigWatcher is implemented by subnet managers that can follow the network config
// while the daemon runs (the etcd manager watches <prefix>/config; the Kubernetes manager
// re-reads the net-conf file). WatchConfig calls changed with the config's text ("" when
// there is none) once at the start and then whenever it may have changed (possibly with
// the same text again), from one goroutine, until ctx ends; it retries datastore errors
// itself and returns nil when ctx ends. changed must not block for long.
type ConfigWatcher interface {
	WatchConfig(ctx context.Context, changed func(text string)) error
}
