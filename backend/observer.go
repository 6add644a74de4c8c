package backend

// Kinds of kernel objects a backend reports to its Observer.
const (
	KindRoute   = "route"
	KindFDB     = "fdb"
	KindNeigh   = "neigh"
	KindDevice  = "device"
	KindAddress = "address"
	KindRule    = "rule"
	KindNexthop = "nexthop" // kernel nexthop objects (vxlan's IPv4 peer routes)
)

// Operations a backend reports to its Observer.
const (
	// OpAdd: an object was created (or replaced because it was missing or wrong).
	OpAdd = "add"
	// OpRemove: an object no lease explains was deleted.
	OpRemove = "remove"
	// OpRepair: an existing object was corrected in place or re-created (a device
	// recreated, an MTU, MAC, address or up flag restored).
	OpRepair = "repair"
)

// Observer hears what a backend did to the kernel, for metrics. Contract: calls are
// made from the goroutine running Prepare, Start or Reconcile, after the changes were
// applied (n counts the successful ones, n > 0); they must be cheap and must not block
// or call back into the backend.
type Observer interface {
	// KernelObjects reports n objects of a kind (Kind*) changed by an operation (Op*).
	KernelObjects(kind, op string, n int)
	// TxChecksumOffload reports the transmit checksum offload state a backend set on
	// one of its devices (vxlan's ChecksumOffload option).
	TxChecksumOffload(device string, on bool)
}

// ObserverSetter is implemented by backends that report to an Observer. The daemon
// calls SetObserver once, right after the Constructor and before Prepare; a backend
// without it simply reports nothing.
type ObserverSetter interface {
	SetObserver(o Observer)
}

// NopObserver ignores everything; backends use it until SetObserver is called.
type NopObserver struct{}

// KernelObjects does nothing.
func (NopObserver) KernelObjects(string, string, int) {}

// TxChecksumOffload does nothing.
func (NopObserver) TxChecksumOffload(string, bool) {}

// ReportCount calls o.KernelObjects when n > 0 (and o is not nil).
func ReportCount(o Observer, kind, op string, n int) {
	if o != nil && n > 0 {
		o.KernelObjects(kind, op, n)
	}
}
