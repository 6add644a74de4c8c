// Package observe is the one vocabulary in which flanneld's parts report what happened:
// the subnet managers (datastore errors, watch state, the own lease's expiration), the
// backends and the traffic rules (kernel objects changed, peers the kernel refused), and
// the udp backend's data path (received packets dropped). The daemon hands one Observer
// to every part that implements Setter; metrics and readiness listen to it.
//
// Contract for every Observer: methods may be called from any goroutine of the part
// that reports, must be cheap, and must not block or call back into that part.
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

// KernelKinds are the kinds of kernel objects every backend may report, for consumers
// that declare them in advance (metrics).
func KernelKinds() []Kind { return []Kind{Route, FDB, Neigh, Device, Address, Rule, Peer} }

// Reasons the kernel refused to program a peer (Observer.PeerProgrammingFailures): the
// label values of flannel_peer_programming_failures_total{reason}.
const (
	// RefusedUnreachable: the peer's address or gateway cannot be reached (not on-link,
	// no route): ENETUNREACH, EHOSTUNREACH.
	RefusedUnreachable = "unreachable"
	// RefusedExists: an object that is not ours is in the way (EEXIST).
	RefusedExists = "exists"
	// RefusedInvalid: the kernel rejects the values the peer's lease leads to (EINVAL,
	// EOPNOTSUPP, EAFNOSUPPORT, ERANGE, EADDRNOTAVAIL, EACCES).
	RefusedInvalid = "invalid"
)

// RefusalReasons are every reason a peer refusal is reported with, for consumers that
// declare them in advance (metrics).
func RefusalReasons() []string { return []string{RefusedUnreachable, RefusedExists, RefusedInvalid} }

// Reasons a backend skips a sound peer lease (Observer.PeersSkipped): the peer and this
// node cannot carry each other's pod traffic. The label values of
// flannel_peer_leases_skipped{reason}.
const (
	// SkippedOtherBackend: the peer runs another backend (its lease's BackendType is not
	// ours), as during a switch of backend on a live cluster.
	SkippedOtherBackend = "other_backend"
	// SkippedOtherVNI: the peer's vxlan lease names another VNI than ours.
	SkippedOtherVNI = "other_vni"
)

// SkipReasons are every reason a skipped peer is reported with, for consumers that
// declare them in advance (metrics).
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
	// Repair: an existing object was corrected in place or re-created (a device
	// recreated, an MTU, MAC, address or up flag restored, a rule restored).
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

// Observer hears the observations. Outcomes are the methods: what changed in the kernel,
// what failed in the datastore, whether a watch is live, when the own lease expires.
type Observer interface {
	// KernelObjects reports n > 0 kernel objects of a kind changed by op (Add, Remove,
	// Repair), after the changes were applied.
	KernelObjects(k Kind, op Op, n int)
	// TxChecksumOffload reports the transmit checksum offload state a backend set on
	// one of its devices (vxlan's ChecksumOffload option).
	TxChecksumOffload(device string, on bool)
	// WireguardImplementation reports which WireGuard the wireguard backend runs its
	// devices in ("kernel" or "userspace"), once it has decided at start.
	WireguardImplementation(impl string)
	// DatastoreError reports a failed datastore operation; the reporter retries it.
	DatastoreError(op Op, err error)
	// WatchRestarted reports that a watch (LeasesWatch, OwnLeaseWatch) broke and is
	// being opened again.
	WatchRestarted(w Kind, err error)
	// WatchLive reports that a watch delivered a response (a snapshot, events or a
	// progress notification): it is live again after a WatchRestarted.
	WatchLive(w Kind)
	// LeaseExpiration reports the own lease's current expiration (zero: it never
	// expires, e.g. a reservation or a kube lease), after acquisition and each renewal.
	LeaseExpiration(t time.Time)
	// PacketsDropped reports n received packets a backend's own data path (udp) did not
	// deliver, for a reason from that backend's small fixed set; n == 0 declares the
	// reason. The data path calls it at most once per batch and reason.
	PacketsDropped(reason string, n int)
	// PeerProgrammingFailures reports that the kernel refused to program n > 0 peers
	// (one count per peer and attempt) for reason, one of the Refused* constants. The
	// backend skipped those peers and programmed the others.
	PeerProgrammingFailures(reason string, n int)
	// PeersSkipped reports how many sound peer leases the last reconcile round skipped
	// for reason, one of the Skipped* constants (0 when none): a state, reported every
	// round.
	PeersSkipped(reason string, n int)
}

// Setter is implemented by the parts that report to an Observer. The daemon calls
// SetObserver once, before any other method of the part; a part without it reports
// nothing.
type Setter interface {
	SetObserver(o Observer)
}

// Nop ignores everything. Embedded in a type, it supplies the methods that type does
// not listen to.
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
