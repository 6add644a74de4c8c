// Package backend is the seam between the daemon and the data-plane backends
// (vxlan, host-gw, udp, ...). Each backend lives in its own folder and is wired in by
// cmd/flanneld through a literal map of constructors; nothing registers itself.
//
// The life of a backend, driven by the daemon:
//
//  1. Constructor(ext, cfg) parses the backend's own config keys (cfg.Backend) and checks
//     they can work on this node. It changes nothing in the kernel. The devices and
//     ports it will take (Claimer) are compared with those of the other instances on
//     the node before anything else happens.
//  2. Backend.Prepare creates or adopts the devices the backend needs and returns the
//     attributes to advertise in the lease (e.g. vxlan's VtepMAC). A backend that cannot
//     set up its devices fails here, before any lease is written.
//  3. The daemon acquires the lease with those attributes and calls Backend.Start, which
//     configures the node side for the lease (addresses, own routes) and returns a Network.
//  4. The daemon calls Network.Reconcile with the current peer lease set (a subnet.Peers,
//     the daemon's own compact storage) whenever it may have changed (lease events,
//     periodic resync). Reconcile converges kernel state to what the leases demand and
//     removes what it owns that no lease explains.
//  5. The daemon also watches the kernel objects Network.WatchFilter names (netlink
//     notifications, pkg/kernelwatch) and calls Reconcile when someone else changed
//     them, so deleted or altered state is restored within a second.
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

// Constructor builds a backend for a network config. It must not touch the kernel, so
// the daemon may call it again (with a corrected config) after it failed.
type Constructor func(ext *ExternalInterface, cfg *subnet.Config) (Backend, error)

// ConfigChecker checks a backend's own keys (the network config's Backend object, nil
// when absent) by themselves, without the rest of the config or the node, so that their
// problems are reported together with those of the rest of the config. It returns the
// keys that have no effect (unknown ones with the key they probably misspell) and every
// problem of the keys it knows, joined. The Constructor checks the same again, and what
// depends on the node.
type ConfigChecker func(raw json.RawMessage) ([]configkeys.Warning, error)

// Backend sets up a node for one network.
type Backend interface {
	// Prepare creates or adopts the backend's devices and returns the lease attributes
	// to advertise. prev is this node's previous lease when known (it lets a backend
	// keep advertised values such as a VTEP MAC stable), else nil. It may block on
	// netlink; it honours ctx cancellation between kernel calls.
	Prepare(ctx context.Context, prev *subnet.Lease) (*subnet.LeaseAttrs, error)
	// Start configures the node for the acquired lease and returns the running network.
	Start(ctx context.Context, lease *subnet.Lease) (Network, error)
}

// Claimer is implemented by every backend that creates or adopts devices by name or
// listens on UDP ports, itself or through kernel devices (vxlan, udp). Claims lists them
// as the config asks for them, after defaults, before Prepare: the daemon refuses to
// start when another instance in the network namespace claims any of them, so that two
// instances never share a device or a port. It does not touch the kernel and does not
// block. A backend that claims nothing (host-gw) need not implement it.
type Claimer interface {
	Claims() claim.Set
}

// Network is a backend configured for this node's lease.
type Network interface {
	// MTU is the MTU pods should use (written to subnet.env as FLANNEL_MTU).
	MTU() int
	// Devices names the links this network owns (e.g. "flannel.1"). The daemon records
	// them so that a later run with another config removes only its own old devices.
	Devices() []string
	// RemoveDevices deletes the named links, in the network namespace the backend
	// configures: the daemon passes the devices an earlier run recorded that Devices no
	// longer names (flannel.1 after the VNI changed to 2, flannel0 after a switch from
	// udp). A link already gone is not an error. It is called once, after Start.
	RemoveDevices(names []string) error
	// Reconcile converges the kernel state the backend owns to what the given peer
	// leases (the node's own lease excluded) require: it reads the actual state from
	// the kernel, computes the difference and applies it. It is called from one
	// goroutine at a time, and is safe to call repeatedly with the same leases (a no-op
	// when nothing drifted).
	//
	// A peer whose objects the kernel refuses (RefusalReason) is not an error: the
	// backend skips it, programs the others, logs it once while the refusal lasts and
	// reports it to its Observer (PeerProgrammingFailures). It does not try the peer again
	// until the peer's lease changes or Invalidate is called, and a route of the peer
	// never stays without the objects it depends on. An error means that something not
	// one peer's failed (our device, its address, our own routes, a kernel dump, the
	// netlink socket, a reply lost): the daemon retries with back-off and reports the
	// node as not converged meanwhile.
	//
	// peers is the daemon's lease set itself, ordered by subnet key, not a copy: it is
	// valid and unchanged only for the duration of the call. Reconcile iterates it
	// (peers.All or peers.At, which materialise each lease by value without allocating)
	// and must not keep peers, or anything pointing into it such as a lease's
	// BackendData, once it returns: copy what it needs to keep. The leases' Expiration
	// is zero.
	Reconcile(ctx context.Context, peers subnet.Peers) error
	// WatchFilter names the kernel objects Reconcile owns or depends on: its devices
	// (and everything on them), links whose state matters (the external interface),
	// and the networks whose main-table routes it owns. The daemon calls it once after
	// Start and calls Reconcile soon after a change to any of them; a backend must
	// therefore also own (and reconcile) everything the filter selects on its devices.
	// It does not block.
	WatchFilter() kernelwatch.Filter
}

// Watcher is implemented by a Network that learns of changes by looking for itself:
// state the kernel raises no notification about (the peers of a WireGuard device, which
// wg(8) changes over generic netlink or a UAPI socket) and new values to advertise (a
// replaced key file). The daemon runs Watch once, after Start, in a goroutine of its
// own; Watch returns when ctx ends.
//
// kick asks for a Reconcile round soon; advertise hands up the lease attributes the
// node must advertise from now on (the daemon rewrites the node's lease with them,
// keeping its subnets, and records them in its state file). Neither blocks; kicks fold
// into one, and of attributes advertised faster than the daemon writes them only the
// latest are written.
type Watcher interface {
	Watch(ctx context.Context, kick func(), advertise func(subnet.LeaseAttrs))
}

// Describer is implemented by a Network with something to say about how it runs that
// its config does not (the wireguard backend: kernel or userspace WireGuard). The daemon
// adds a readiness check named after the backend type, which fails while Health returns
// an error, and shows Describe beside it in the verbose readiness output. Both are
// cheap and do not block.
type Describer interface {
	Describe() string
	Health() error
}

// Invalidator is implemented by a Network whose Reconcile keeps what it learnt in
// earlier rounds: that the kernel still holds what it last wrote, so it need not read it
// back (the vxlan backend, from its own change subscription), and which peers the kernel
// refused, so they are not tried again every round. Invalidate makes the next Reconcile
// start afresh: it reads everything and tries every refused peer again. The daemon calls
// it before each periodic safety-net round.
type Invalidator interface {
	Invalidate()
}

// DriftReader is implemented by backends that can tell, without changing anything, how
// the kernel differs from what a lease set requires: the read-only half of a Reconcile
// round. Drift needs no Prepare and no Start: it may be called on a Backend straight
// from its Constructor (what a diagnose command has: the network config, the node's own
// lease and the peer leases), as well as on a running one, whose rounds it does not
// disturb. own is the node's lease (subnets and advertised attributes, such as a VTEP
// MAC, which the node's devices must carry); peers may include it, as in Reconcile.
// Drift blocks on netlink dumps and honours ctx between them.
type DriftReader interface {
	Drift(ctx context.Context, own *subnet.Lease, peers subnet.Peers) (Drift, error)
}

// Drift is how the kernel differs from what the leases require: what a Reconcile round
// would write and delete. Both are empty when the kernel has converged.
type Drift struct {
	// Missing are objects the leases require that the kernel lacks or holds in another
	// form (a route with another gateway, a device with another MTU): to be written.
	Missing []Object
	// Stale are objects the backend owns that no lease explains, or that stand in the
	// way of a required one: to be deleted.
	Stale []Object
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

// Object is one kernel object as Drift reports it; fields that do not apply to its Kind
// are zero.
type Object struct {
	Kind    observe.Kind
	Device  string       // the link it is on; for a device, its name
	Dst     netip.Prefix // route destination; address with its prefix length
	Gateway netip.Addr   // route or nexthop gateway
	IP      netip.Addr   // neighbour address; FDB remote (the peer's public address)
	MAC     net.HardwareAddr
	ID      uint32 // nexthop object id (stale nexthops)
	// Detail says what differs when the object exists in another form, e.g.
	// "mtu 1400, want 1450".
	Detail string
}

// String renders the object in the words of ip(8) and bridge(8), e.g.
// "route 10.5.2.0/24 via 10.5.2.0 dev flannel.1".
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
