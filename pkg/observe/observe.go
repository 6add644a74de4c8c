// Package observe is the vocabulary in which flanneld's parts report what happened to the
// one Observer the daemon hands each Setter. Observer methods may be called from any
// goroutine, must be cheap, and must not block or call back into the reporting part.
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

// Reasons the kernel refused to program a peer (flannel_peer_programming_failures_total).
const (
	RefusedUnreachable = "unreachable" // the peer's address or gateway cannot be reached
	RefusedExists      = "exists"      // an object that is not ours is in the way
	RefusedInvalid     = "invalid"     // the kernel rejects the values the lease leads to
)

// RefusalReasons are every reason a peer refusal is reported with.
func RefusalReasons() []string { return []string{RefusedUnreachable, RefusedExists, RefusedInvalid} }

// Reasons a backend skips a sound peer lease it cannot reach (flannel_peer_leases_skipped).
const (
	SkippedOtherBackend = "other_backend" // the peer runs another BackendType
	SkippedOtherVNI     = "other_vni"     // the peer's vxlan uses another VNI
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
	Add    Op = "add"    // created, or replaced because it was missing or wrong
	Remove Op = "remove" // deleted because no lease explains it
	Repair Op = "repair" // corrected in place or re-created
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
	// LeaseExpiration reports the own lease's expiration (zero: never) after each acquire or renew.
	LeaseExpiration(t time.Time)
	// PacketsDropped reports n received packets the udp data path did not deliver, for
	// reason; n == 0 declares the reason. At most once per batch and reason.
	PacketsDropped(reason string, n int)
	// PeerProgrammingFailures reports n > 0 peers per attempt the kernel refused (Refused*).
	PeerProgrammingFailures(reason string, n int)
	// PeersSkipped reports every round how many sound peer leases it skipped (Skipped*).
	PeersSkipped(reason string, n int)
}

// Setter is implemented by reporting parts; SetObserver is called once, before any other method.
type Setter interface {
	SetObserver(o Observer)
}

// Nop ignores every observation; embedded, it supplies the methods a type does not listen to.
type Nop struct{}

func (Nop) KernelObjects(Kind, Op, int)         {}
func (Nop) TxChecksumOffload(string, bool)      {}
func (Nop) WireguardImplementation(string)      {}
func (Nop) DatastoreError(Op, error)            {}
func (Nop) WatchRestarted(Kind, error)          {}
func (Nop) WatchLive(Kind)                      {}
func (Nop) LeaseExpiration(time.Time)           {}
func (Nop) PacketsDropped(string, int)          {}
func (Nop) PeerProgrammingFailures(string, int) {}
func (Nop) PeersSkipped(string, int)            {}

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

func (t Tee) KernelObjects(k Kind, op Op, n int) {
	for _, o := range t {
		o.KernelObjects(k, op, n)
	}
}

func (t Tee) TxChecksumOffload(device string, on bool) {
	for _, o := range t {
		o.TxChecksumOffload(device, on)
	}
}

func (t Tee) WireguardImplementation(impl string) {
	for _, o := range t {
		o.WireguardImplementation(impl)
	}
}

func (t Tee) DatastoreError(op Op, err error) {
	for _, o := range t {
		o.DatastoreError(op, err)
	}
}

func (t Tee) WatchRestarted(w Kind, err error) {
	for _, o := range t {
		o.WatchRestarted(w, err)
	}
}

func (t Tee) WatchLive(w Kind) {
	for _, o := range t {
		o.WatchLive(w)
	}
}

func (t Tee) LeaseExpiration(exp time.Time) {
	for _, o := range t {
		o.LeaseExpiration(exp)
	}
}

func (t Tee) PacketsDropped(reason string, n int) {
	for _, o := range t {
		o.PacketsDropped(reason, n)
	}
}

func (t Tee) PeerProgrammingFailures(reason string, n int) {
	for _, o := range t {
		o.PeerProgrammingFailures(reason, n)
	}
}

func (t Tee) PeersSkipped(reason string, n int) {
	for _, o := range t {
		o.PeersSkipped(reason, n)
	}
}
