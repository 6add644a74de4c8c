// Package observe is the vocabulary in which flanneld's parts (subnet managers, backends,
// traffic rules, the udp data path) report what happened; the daemon hands one Observer to
// every part that implements Setter, and metrics and readiness listen to it.
//
// Every Observer's methods may be called from any goroutine of the reporting part, must be
// cheap, and must not block or call back into that part.
package observe

import "time"

// Kind is what an observation is about: a kind of kernel object, or a datastore watch.
type Kind string

// Kinds of kernel objects a backend or the traffic rules change.
const (
	Route   Kind = "route"
	FDB     Kind = "fdb"
	Neigh   Kind = "neigh"
	Device  Kind = "device"
	Address Kind = "address"
	Rule    Kind = "rule"
	Nexthop Kind = "nexthop" // kernel nexthop objects (vxlan's IPv4 peer routes)
	Peer    Kind = "peer"    // WireGuard peers of a device (the wireguard backend)
)

// KernelKinds are the kinds of kernel objects every backend may report.
func KernelKinds() []Kind { return []Kind{Route, FDB, Neigh, Device, Address, Rule, Peer} }

// Reasons the kernel refused to program a peer, the label values of
// flannel_peer_programming_failures_total{reason}.
const (
	// RefusedUnreachable: the peer's address or gateway cannot be reached (ENETUNREACH,
	// EHOSTUNREACH).
	RefusedUnreachable = "unreachable"
	// RefusedExists: an object that is not ours is in the way (EEXIST).
	RefusedExists = "exists"
	// RefusedInvalid: the kernel rejects the values the peer's lease leads to (EINVAL,
	// EOPNOTSUPP, ...).
	RefusedInvalid = "invalid"
)

// RefusalReasons are every reason a peer refusal is reported with.
func RefusalReasons() []string { return []string{RefusedUnreachable, RefusedExists, RefusedInvalid} }

// Reasons a backend skips a sound peer lease it cannot carry pod traffic with, the label
// values of flannel_peer_leases_skipped{reason}.
const (
	// SkippedOtherBackend: the peer's lease has another BackendType than ours.
	SkippedOtherBackend = "other_backend"
	// SkippedOtherVNI: the peer's vxlan lease names another VNI than ours.
	SkippedOtherVNI = "other_vni"
)

// SkipReasons are every reason a skipped peer is reported with.
func SkipReasons() []string { return []string{SkippedOtherBackend, SkippedOtherVNI} }

// Datastore watches a subnet manager keeps.
const (
	LeasesWatch   Kind = "leases"    // the watch of all subnet leases (WatchLeases)
	OwnLeaseWatch Kind = "own_lease" // the watch of the node's own lease (KeepLease)
)

// Op is an operation: a change made to kernel objects, or a datastore operation.
type Op string

// Changes to kernel objects.
const (
	// Add: an object was created (or replaced because it was missing or wrong).
	Add Op = "add"
	// Remove: an object no lease explains was deleted.
	Remove Op = "remove"
	// Repair: an existing object was corrected in place or re-created.
	Repair Op = "repair"
)

// Datastore operations whose failures are reported (and retried by the reporter).
const (
	GetConfig Op = "get_config"
	Acquire   Op = "acquire"
	Renew     Op = "renew"
	KeepLease Op = "keep_lease"
	Connect   Op = "connect"
	List      Op = "list"
	Watch     Op = "watch"
)

// Observer hears the observations.
type Observer interface {
	// KernelObjects reports n > 0 kernel objects of kind k changed by op, once applied.
	KernelObjects(k Kind, op Op, n int)
	// TxChecksumOffload reports the transmit checksum offload a backend set on a device.
	TxChecksumOffload(device string, on bool)
	// WireguardImplementation reports "kernel" or "userspace", once decided at start.
	WireguardImplementation(impl string)
	// DatastoreError reports a failed datastore operation; the reporter retries it.
	DatastoreError(op Op, err error)
	// WatchRestarted reports that a watch broke and is being opened again.
	WatchRestarted(w Kind, err error)
	// WatchLive reports that a watch delivered a response: live again after a restart.
	WatchLive(w Kind)
	// LeaseExpiration reports the own lease's expiration (zero: never) after acquisition
	// and each renewal.
	LeaseExpiration(t time.Time)
	// PacketsDropped reports n received packets the udp data path did not deliver, for
	// reason; n == 0 declares the reason. At most once per batch and reason.
	PacketsDropped(reason string, n int)
	// PeerProgrammingFailures reports n > 0 peers (per attempt) the kernel refused to
	// program, for reason (Refused*); the others were programmed.
	PeerProgrammingFailures(reason string, n int)
	// PeersSkipped reports how many sound peer leases the last round skipped for reason
	// (Skipped*), every round.
	PeersSkipped(reason string, n int)
}

// Setter is implemented by the parts that report to an Observer. The daemon calls
// SetObserver once, before any other method of the part.
type Setter interface {
	SetObserver(o Observer)
}

// Nop ignores everything; embedded, it supplies the methods a type does not listen to.
type Nop struct{}

// KernelObjects does nothing.
func (Nop) KernelObjects(Kind, Op, int) {}

// TxChecksumOffload does nothing.
func (Nop) TxChecksumOffload(string, bool) {}

// WireguardImplementation does nothing.
func (Nop) WireguardImplementation(string) {}

// DatastoreError does nothing.
func (Nop) DatastoreError(Op, error) {}

// WatchRestarted does nothing.
func (Nop) WatchRestarted(Kind, error) {}

// WatchLive does nothing.
func (Nop) WatchLive(Kind) {}

// LeaseExpiration does nothing.
func (Nop) LeaseExpiration(time.Time) {}

// PacketsDropped does nothing.
func (Nop) PacketsDropped(string, int) {}

// PeerProgrammingFailures does nothing.
func (Nop) PeerProgrammingFailures(string, int) {}

// PeersSkipped does nothing.
func (Nop) PeersSkipped(string, int) {}

// Or returns o, or Nop when o is nil: what a part reports to before SetObserver.
func Or(o Observer) Observer {
	if o == nil {
		return Nop{}
	}
	return o
}

// Count calls o.KernelObjects when n > 0 and o is not nil.
func Count(o Observer, k Kind, op Op, n int) {
	if o != nil && n > 0 {
		o.KernelObjects(k, op, n)
	}
}

// Tee passes every observation to each of its Observers, in order.
type Tee []Observer

// KernelObjects passes the call on.
func (t Tee) KernelObjects(k Kind, op Op, n int) {
	for _, o := range t {
		o.KernelObjects(k, op, n)
	}
}

// TxChecksumOffload passes the call on.
func (t Tee) TxChecksumOffload(device string, on bool) {
	for _, o := range t {
		o.TxChecksumOffload(device, on)
	}
}

// WireguardImplementation passes the call on.
func (t Tee) WireguardImplementation(impl string) {
	for _, o := range t {
		o.WireguardImplementation(impl)
	}
}

// DatastoreError passes the call on.
func (t Tee) DatastoreError(op Op, err error) {
	for _, o := range t {
		o.DatastoreError(op, err)
	}
}

// WatchRestarted passes the call on.
func (t Tee) WatchRestarted(w Kind, err error) {
	for _, o := range t {
		o.WatchRestarted(w, err)
	}
}

// WatchLive passes the call on.
func (t Tee) WatchLive(w Kind) {
	for _, o := range t {
		o.WatchLive(w)
	}
}

// LeaseExpiration passes the call on.
func (t Tee) LeaseExpiration(exp time.Time) {
	for _, o := range t {
		o.LeaseExpiration(exp)
	}
}

// PacketsDropped passes the call on.
func (t Tee) PacketsDropped(reason string, n int) {
	for _, o := range t {
		o.PacketsDropped(reason, n)
	}
}

// PeerProgrammingFailures passes the call on.
func (t Tee) PeerProgrammingFailures(reason string, n int) {
	for _, o := range t {
		o.PeerProgrammingFailures(reason, n)
	}
}

// PeersSkipped passes the call on.
func (t Tee) PeersSkipped(reason string, n int) {
	for _, o := range t {
		o.PeersSkipped(reason, n)
	}
}
