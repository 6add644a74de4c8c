// Package backend is the seam between the daemon and the data-plane backends: construct
// (no kernel access), Prepare devices, Start for the lease, then Reconcile on lease events,
// resyncs and the kernel changes WatchFilter selects.
package backend

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/flannel-go/flannel/pkg/claim"
	"github.com/flannel-go/flannel/pkg/configkeys"
	"github.com/flannel-go/flannel/pkg/kernelwatch"
	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

// ExternalInterface is the node's underlay interface and addresses.
type ExternalInterface struct {
	Iface       *net.Interface
	IfaceAddr   netip.Addr // IPv4 address on Iface (zero if none)
	IfaceV6Addr netip.Addr // IPv6 address on Iface (zero if none)
	ExtAddr     netip.Addr // IPv4 address peers use to reach us (--public-ip or IfaceAddr)
	ExtV6Addr   netip.Addr // IPv6 address peers use to reach us
}

// Constructor builds a backend for a config without touching the kernel, so it may be retried.
type Constructor func(ext *ExternalInterface, cfg *subnet.Config) (Backend, error)

// ConfigChecker checks the config's Backend object (nil when absent) without the node; it
// returns the keys that have no effect and every problem found, joined.
type ConfigChecker func(raw json.RawMessage) ([]configkeys.Warning, error)

// LeftoverRemover removes what an earlier run of one backend type left on the node, now that
// the node runs another type: devices (the names that run recorded, possibly none) and what
// the type installs outside them. prev is that run's lease; what is already gone is no error.
type LeftoverRemover func(prev *subnet.Lease, devices []string) error

// Backend sets up a node for one network.
type Backend interface {
	// Prepare creates or adopts the devices and returns the lease attributes to advertise;
	// prev (this node's previous lease, or nil) keeps advertised values such as a VTEP MAC.
	Prepare(ctx context.Context, prev *subnet.Lease) (*subnet.LeaseAttrs, error)
	// Start configures the node for the acquired lease and returns the running network.
	Start(ctx context.Context, lease *subnet.Lease) (Network, error)
}

// Claimer is implemented by a backend owning named devices or UDP ports; Claims lists them
// as configured, without touching the kernel, so the daemon can refuse a clashing instance.
type Claimer interface {
	Claims() claim.Set
}

// Network is a backend configured for this node's lease.
type Network interface {
	// MTU is the MTU pods should use (written to subnet.env as FLANNEL_MTU).
	MTU() int
	// Devices names the links this network owns; the daemon records them for RemoveDevices.
	Devices() []string
	// RemoveDevices deletes links an earlier run recorded that Devices no longer names; a
	// link already gone is not an error. It is called once, after Start.
	RemoveDevices(names []string) error
	// Reconcile converges the kernel state it owns to the peer leases (own lease excluded);
	// calls never overlap. A peer the kernel refuses (RefusalReason) is skipped, logged once,
	// observed and retried on lease change or Invalidate, never left with a route but not
	// its dependencies; an error is a failure beyond one peer. peers is ordered by subnet
	// key, has zero Expiration and is valid only during the call: keep nothing of it.
	Reconcile(ctx context.Context, peers subnet.Peers) error
	// WatchFilter selects the kernel objects Reconcile owns or depends on (everything on its
	// devices is its own); changes trigger a round. It is called once, after Start.
	WatchFilter() kernelwatch.Filter
}

// Watcher is implemented by a Network polling for changes the kernel does not notify. Watch
// runs in its own goroutine until ctx ends; kick asks for a round and advertise publishes
// new lease attributes; neither blocks, and only the latest attributes count.
type Watcher interface {
	Watch(ctx context.Context, kick func(), advertise func(subnet.LeaseAttrs))
}

// Describer is implemented by a Network with a readiness check: not ready while Health
// fails, Describe shown beside it. Neither blocks.
type Describer interface {
	Describe() string
	Health() error
}

// Invalidator is implemented by a Network caching what earlier rounds learnt; Invalidate
// makes the next round re-read the kernel and retry refused peers (before each resync).
type Invalidator interface {
	Invalidate()
}

// Settler is implemented by a Network that knows, without reading the kernel in full, that
// nothing but its own writes changed its objects since its last successful round. When Settled
// holds and the peers are unchanged, the daemon skips the round a kernel change asked for.
type Settler interface {
	Settled() bool
}

// DriftReader is implemented by backends that can tell how the kernel differs from own's
// attributes and peers (may hold own), changing nothing, without Prepare, beside running rounds.
type DriftReader interface {
	Drift(ctx context.Context, own *subnet.Lease, peers subnet.Peers) (Drift, error)
}

// Drift is what a Reconcile round would write and delete; both empty when converged.
type Drift struct {
	Missing []Object // required but absent or in another form: to be written
	Stale   []Object // owned but unexplained or in the way: to be deleted
}

// Strings renders Missing and Stale (Object.String), each sorted.
func (d Drift) Strings() (missing, stale []string) {
	strs := func(objs []Object) []string {
		out := make([]string, 0, len(objs))
		for _, o := range objs {
			out = append(out, o.String())
		}
		slices.Sort(out)
		return out
	}
	return strs(d.Missing), strs(d.Stale)
}

// Converged reports whether nothing is missing and nothing is stale.
func (d Drift) Converged() bool { return len(d.Missing) == 0 && len(d.Stale) == 0 }

// Object is one kernel object as Drift reports it; fields foreign to its Kind are zero.
type Object struct {
	Kind    observe.Kind
	Device  string       // the link it is on; for a device, its name
	Dst     netip.Prefix // route destination; address with its prefix length
	Gateway netip.Addr   // route or nexthop gateway
	IP      netip.Addr   // neighbour address; FDB remote (the peer's public address)
	MAC     net.HardwareAddr
	ID      uint32 // nexthop object id (stale nexthops)
	Detail  string // what differs when it exists in another form: "mtu 1400, want 1450"
}

// String renders the object in the words of ip(8) and bridge(8).
func (o Object) String() string {
	var b strings.Builder
	b.WriteString(string(o.Kind))
	switch o.Kind {
	case observe.Device:
		b.WriteString(" " + o.Device)
	case observe.Route, observe.Address:
		fmt.Fprintf(&b, " %s", o.Dst)
	case observe.Neigh:
		fmt.Fprintf(&b, " %s", o.IP)
	case observe.FDB:
		fmt.Fprintf(&b, " %s dst %s", o.MAC, o.IP)
	case observe.Nexthop:
		if o.ID != 0 {
			fmt.Fprintf(&b, " id %d", o.ID)
		}
	}
	if o.Gateway.IsValid() {
		fmt.Fprintf(&b, " via %s", o.Gateway)
	}
	if o.Kind == observe.Neigh && len(o.MAC) > 0 {
		fmt.Fprintf(&b, " lladdr %s", o.MAC)
	}
	if o.Kind != observe.Device && o.Device != "" {
		b.WriteString(" dev " + o.Device)
	}
	if o.Detail != "" {
		b.WriteString(" (" + o.Detail + ")")
	}
	return b.String()
}
