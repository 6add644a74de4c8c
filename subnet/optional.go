package subnet

import "context"

// HealthChecker is a Manager that tells, without blocking, whether its datastore is usable.
type HealthChecker interface {
	Health() error
}

// PublicIPSource is a Manager whose datastore names the node's public addresses; PublicIPs
// returns those to use given the flags', after GetNetworkConfig, without blocking.
type PublicIPSource interface {
	PublicIPs(flagV4, flagV6 string) (v4, v6 string)
}

// ConfigWatcher is a Manager that follows the network config: WatchConfig calls changed with
// its text ("" when none) at start and on each possible change, from one goroutine, until
// ctx ends; it retries errors itself. changed must not block for long.
type ConfigWatcher interface {
	WatchConfig(ctx context.Context, changed func(text string)) error
}
