// Package backend is the seam between the daemon and the data-plane backends
// (vxlan, host-gw, udp, ...). Each backend lives in its own folder and is wired in by
// cmd/flanneld through a literal map of constructors; nothing registers itself.
//
// The life of a backend, driven by the daemon:
//
//  1. Constructor(ext, cfg) parses the backend's own config keys (cfg.Backend) and checks
//     they can work on this node. It changes nothing in the kernel.
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
	"net"
	"net/netip"

	"github.com/flannel-go/flannel/pkg/kernelwatch"
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

// Constructor builds a backend for a network config. It must not touch the kernel.
type Constructor func(ext *ExternalInterface, cfg *subnet.Config) (Backend, error)

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
	// when nothing drifted). An error means some change failed; the daemon retries.
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

// Invalidator is implemented by a Network whose Reconcile may skip reading the kernel
// back when it knows the kernel still holds what it last wrote (the vxlan backend, from
// its own change subscription). Invalidate makes the next Reconcile read everything; the
// daemon calls it before each periodic safety-net round.
type Invalidator interface {
	Invalidate()
}
