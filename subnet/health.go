package subnet

// HealthChecker is implemented by subnet managers that can tell, without a round trip,
// whether their datastore connection is usable (e.g. the etcd client's connection
// state). Health returns nil when it is, else the reason; it must not block.
type HealthChecker interface {
	Health() error
}
