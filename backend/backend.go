// Package backend is the seam between the daemon and the data-plane backends (vxlan,
// host-gw, udp, wireguard). Each backend lives in its own folder; cmd/flanneld wires them in
// through a literal map of constructors.
//
// The daemon drives a backend so: the Constructor parses and checks the config without
// touching the kernel; Prepare creates or adopts devices and returns the lease attributes;
// Start configures the node for the acquired lease; Reconcile converges the kernel to the
// peer leases on lease events, on resync and on kernel changes WatchFilter selects.
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

// ConfigChecker checks a backend's own keys (the config's Backend object, nil when absent)
// alone, so their problems are reported with the rest of the config's. It returns the keys
// that have no effect (unknown ones with the key they probably misspell) and every problem
// found, joined. The Constructor checks them again, with what depends on the node.
type ConfigChecker func(raw json.RawMessage) ([]configkeys.Warning, error)

// Backend sets up a node for one network.
type Backend interface {
	// Prepare creates or adopts the backend's devices and returns the lease attributes to
	// advertise. prev is this node's previous lease, or nil; it lets a backend keep
	// advertised values (a VTEP MAC) stable. It honours ctx between kernel calls.
	Prepare(ctx context.Context, prev *subnet.Lease) (*subnet.LeaseAttrs, error)
	// Start configures the node for the acquired lease and returns the running network.
	Start(ctx context.Context, lease *subnet.Lease) (Network, error)
}

// Claimer is implemented by a backend that creates or adopts devices by name or listens on
// UDP ports. Claims lists them as configured, after defaults; the daemon refuses to start
// when another instance in the network namespace claims any of them. It does not touch
// the kernel or block.
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
	// RemoveDevices deletes the named links in the backend's network namespace: those an
	// earlier run recorded that Devices no longer names (flannel.1 after a VNI change). A
	// link already gone is not an error. It is called once, after Start.
	RemoveDevices(names []string) error
	// Reconcile converges the kernel state the backend owns to what the peer leases (the
	// node's own excluded) require, reading the kernel and applying the difference. It is
	// called from one goroutine at a time and is a no-op when nothing drifted.
	//
	// A peer whose objects the kernel refuses (RefusalReason) is not an error: the backend
	// skips it, logs it once while the refusal lasts, reports it to its Observer and tries
	// it again only when its lease changes or on Invalidate; a peer's route never stays
	// without the objects it depends on. An error means something beyond one peer failed;
	// the daemon retries with back-off and reports the node as not converged.
	//
	// peers is the daemon's own lease set, ordered by subnet key and valid only during the
	// call: Reconcile must not keep it or anything pointing into it (a lease's
	// BackendData). The leases' Expiration is zero.
	Reconcile(ctx context.Context, peers subnet.Peers) error
	// WatchFilter names the kernel objects Reconcile owns or depends on: its devices and
	// all on them, links whose state matters, networks whose main-table routes it owns.
	// The daemon reconciles soon after any change to them, so a backend must own everything
	// the filter selects on its devices. It is called once, after Start, and does not block.
	WatchFilter() kernelwatch.Filter
}

// Watcher is implemented by a Network that polls for changes the kernel does not notify
// (WireGuard peers changed by wg(8), a replaced key file). The daemon runs Watch once after
// Start in its own goroutine; it returns when ctx ends. kick asks for a Reconcile round
// soon; advertise hands up new lease attributes, which the daemon writes to the lease and
// its state file. Neither blocks; kicks fold into one and only the latest attributes count.
type Watcher interface {
	Watch(ctx context.Context, kick func(), advertise func(subnet.LeaseAttrs))
}

// Describer is implemented by a Network with something to say about how it runs (kernel or
// userspace WireGuard). The daemon adds a readiness check named after the backend type
// that fails while Health returns an error, with Describe beside it. Neither blocks.
type Describer interface {
	Describe() string
	Health() error
}

// Invalidator is implemented by a Network whose Reconcile trusts what earlier rounds learnt
// (kernel state it wrote, peers the kernel refused). Invalidate makes the next round read
// everything and retry every refused peer; the daemon calls it before each periodic resync.
type Invalidator interface {
	Invalidate()
}

// DriftReader is implemented by backends that can tell, changing nothing, how the kernel
// differs from what a lease set requires. Drift needs no Prepare or Start and does not
// disturb a running network's rounds. own is the node's lease (the node's devices must
// carry its attributes); peers may include it. Drift honours ctx between netlink dumps.
type DriftReader interface {
	Drift(ctx context.Context, own *subnet.Lease, peers subnet.Peers) (Drift, error)
}

// Drift is what a Reconcile round would write and delete; both empty when converged.
type Drift struct {
	// Missing are objects the leases require that the kernel lacks or holds in another
	// form: to be written.
	Missing []Object
	// Stale are objects the backend owns that no lease explains or that stand in the way
	// of a required one: to be deleted.
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
