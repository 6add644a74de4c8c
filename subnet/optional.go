package subnet

import "context"

// Optional interfaces of a Manager, which the daemon and cmd/flanneld look for.

// HealthChecker is implemented by subnet managers that can tell without a round trip
// whether their datastore connection is usable. Health returns nil or why not; it does
// not block.
type HealthChecker interface {
	Health() error
}

// PublicIPSource is implemented by subnet managers whose datastore names the node's public
// addresses (Kubernetes annotations). PublicIPs returns the addresses to use given the
// flags'; it is called after GetNetworkConfig and does not block.
type PublicIPSource interface {
	PublicIPs(flagV4, flagV6 string) (v4, v6 string)
}

// ConfigWatcher is implemented by subnet managers that follow the network config while the
// daemon runs. WatchConfig calls changed with the config's text ("" when none) at the
// start and whenever it may have changed, from one goroutine, until ctx ends (returning
// nil); it retries datastore errors itself. changed must not block for long.
type ConfigWatcher interface {
	WatchConfig(ctx context.Context, changed func(text string)) error
}
