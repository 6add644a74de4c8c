package subnet

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
