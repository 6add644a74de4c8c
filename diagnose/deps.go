package diagnose

import (
	"context"
	"errors"
	"io/fs"
	"net/netip"
	"time"

	"github.com/flannel-go/flannel/pkg/claim"
	"github.com/flannel-go/flannel/pkg/control"
	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

// Options are the daemon's flags that select what to diagnose, and the command's own.
type Options struct {
	Kube       bool   // --kube-subnet-mgr
	EtcdPrefix string // --etcd-prefix
	// EtcdDefaultEndpoints: --etcd-endpoints not given (upstream's default has a dead one).
	EtcdDefaultEndpoints bool
	SubnetFile           string // --subnet-file
	PublicIP, PublicIPv6 string // --public-ip, --public-ipv6 ("" when not given)
	IPMasq, Forward      bool   // --ip-masq, --iptables-forward-rules
	// RenewMargin is --subnet-lease-renew-margin: a lease with less left was not renewed in time.
	RenewMargin time.Duration
	CNIConfDir  string
	Peers       int // peers the probes sample at random; 0: every peer
	// ProbeTimeout bounds each ICMP probe; DatastoreTimeout each datastore call.
	ProbeTimeout, DatastoreTimeout time.Duration
	Root                           bool // some checks need root
}

// Deps are the node and datastore the checks read; a nil part skips the checks that need it.
type Deps struct {
	// Daemon queries this network's daemon; the error wraps control.ErrNotRunning when none runs.
	Daemon func(ctx context.Context) (*control.Status, error)
	// Instances queries the other daemons in this netns, skipping this network's sockets.
	Instances func(ctx context.Context) ([]control.Found, error)
	// Etcd or Kube is the mode's datastore; StoreErr says why it could not be made.
	Etcd      Etcd
	Kube      Kube
	StoreErr  error
	Admission *subnet.RuleOptions // nil: leases are not judged
	// Iface selects the external interface as the daemon would, given the public addresses.
	Iface func(cfg *subnet.Config, publicIP, publicIPv6 string) (*Iface, error)
	// Backend builds the configured backend for reading only (never Prepare or Start).
	Backend func(cfg *subnet.Config, ext *Iface) (Backend, error)
	// Rules lists the traffic rules this instance needs that are not in place.
	Rules    func(ctx context.Context, r RuleSpec) (missing []string, mode string, err error)
	Kernel   Kernel
	Prober   Prober
	ReadFile func(name string) ([]byte, error)
	ReadDir  func(name string) ([]fs.DirEntry, error)
	Now      func() time.Time
	Shuffle  func(n int, swap func(i, j int)) // randomises the peer sample; nil: none
}

// Lease is a lease as the datastore holds it, judged by the admission rule.
type Lease struct {
	// Name is the key below <prefix>/subnets/ (etcd) or the node's name (kube).
	Name        string
	Lease       subnet.Lease // Expiration: etcd leases only
	Reservation bool         // an etcd subnet key without an etcd lease
	// Origin carries Seniority, Version and Defect (why the value is no lease) for admission.
	Origin subnet.Origin
	// Rejected is why admission keeps the lease out of the kernel, nil when admitted.
	Rejected *subnet.Rejection
	Own      bool
}

func (l *Lease) defect() string {
	if l.Origin.Defect == nil {
		return ""
	}
	return l.Origin.Defect.String()
}

// reasonDetail splits a rejection into its reason and its detail ("" when unknown).
func reasonDetail(r *subnet.Rejection) (reason, detail string) {
	if r.Err != nil {
		detail = r.Err.Error()
	}
	return string(r.Reason), detail
}

// Etcd is the etcd datastore, read only.
type Etcd interface {
	Endpoints() []string // credentials removed
	// Health asks one endpoint for its status; errors name the cause (refused, timeout, TLS, auth).
	Health(ctx context.Context, endpoint string) (EndpointHealth, error)
	Config(ctx context.Context) (text string, found bool, err error)
	// V2Config reads the config through the v2 API; the error wraps ErrNoV2 when it is not served.
	V2Config(ctx context.Context) (text string, found bool, err error)
	Leases(ctx context.Context) ([]Lease, error) // Expiration left zero
	Expiration(ctx context.Context, name string) (time.Time, error)
}

// EndpointHealth is what an etcd endpoint says of itself.
type EndpointHealth struct {
	Version string
	Leader  uint64   // 0: the member knows no leader
	Errors  []string // alarms and raft errors
}

// ErrNoV2 means an etcd server does not serve the v2 API.
var ErrNoV2 = errors.New("the server does not serve the etcd v2 API")

// Kube is the Kubernetes API, read only.
type Kube interface {
	Server() string // credentials removed
	// Version asks the server for its version: reachability and authentication.
	Version(ctx context.Context) (string, error)
	// NodeName is $NODE_NAME, or the node of this pod.
	NodeName(ctx context.Context) (string, error)
	// Node reads a node with its lease for cfg's families (nil: IPv4).
	Node(ctx context.Context, name string, cfg *subnet.Config) (node *Node, found bool, err error)
	Leases(ctx context.Context, cfg *subnet.Config) ([]Lease, error)
	// Allowed asks a SelfSubjectAccessReview; reason is the server's when it says no.
	Allowed(ctx context.Context, a Access) (allowed bool, reason string, err error)
	NetConfig() (path, text string, err error) // --net-config-path
}

// Node is what the checks read of a Kubernetes node.
type Node struct {
	Name     string
	PodCIDRs []netip.Prefix
	// HasLease is false until the node has a pod CIDR and flannel annotations.
	Lease    subnet.Lease
	HasLease bool
	// The public-ip-overwrite and node-public-ip annotations; invalid when absent.
	PublicIPOverwrite, PublicIPv6Overwrite netip.Addr
	NodePublicIP, NodePublicIPv6           netip.Addr
}

// Access is one permission the daemon needs, as a SelfSubjectAccessReview asks it.
type Access struct {
	Verb, Resource, Subresource, Namespace, Name string
	Optional                                     bool // missing only degrades the daemon
	Why                                          string
}

// Iface is the external interface the daemon would use.
type Iface struct {
	Name  string
	Index int
	MTU   int
	// Addr and Addr6 are the interface's; Public and Public6 what the lease advertises.
	Addr, Addr6     netip.Addr
	Public, Public6 netip.Addr
}

// Backend is the configured backend, read only.
type Backend interface {
	Type() string
	Devices() []string // none for host-gw
	MTU() int          // the FLANNEL_MTU given to pods
	// Drift is how the kernel differs from what the leases require; ErrUnsupported if unknown.
	Drift(ctx context.Context, own *subnet.Lease, peers []subnet.Lease) (missing, stale []Object, err error)
	// TxChecksum reads the devices' tx checksum offload and what it must be (ErrUnsupported).
	TxChecksum() ([]Offload, error)
	Encap() Encap
	Claims() claim.Set // devices and ports the backend takes (backend.Claimer)
	// WireGuard reads the devices and the peers the leases ask for (ErrUnsupported).
	WireGuard(ctx context.Context, own *subnet.Lease, peers []subnet.Lease) (*WireGuard, error)
}

// WireGuard is the wireguard backend's devices and the peers its leases ask for.
type WireGuard struct {
	Devices []WGDevice
	Want    []WGPeerWant
}

// WGDevice is one WireGuard device as the kernel or its UAPI socket reports it.
type WGDevice struct {
	Name           string
	Implementation string // "kernel" or "userspace"; "" when absent
	Err            error  // why its state could not be read
	ListenPort     int
	PublicKey      string
	Peers          []WGPeer
}

// WGPeer is one peer a device holds.
type WGPeer struct {
	PublicKey     string
	Endpoint      netip.AddrPort
	LastHandshake time.Time // zero: none
}

// WGPeerWant is the peer an admitted lease asks for on a device.
type WGPeerWant struct {
	Lease, Device, PublicKey string
	AllowedIPs               []netip.Prefix
}

// ErrUnsupported means a backend cannot answer a question.
var ErrUnsupported = errors.New("not supported by this backend")

// Object is one kernel object a Drift names.
type Object struct {
	Kind observe.Kind
	Text string // in the words of ip(8) and bridge(8)
}

// Offload is one device's transmit checksum offload.
type Offload struct {
	Device  string
	On      bool // as the device has it
	Want    bool // as it must be
	Decided bool // false: the daemon leaves the kernel's default (either is right)
	Why     string
}

// Encap is how a backend carries pod traffic between nodes.
type Encap struct {
	// Overhead is the bytes added per packet on an IPv4 underlay, Overhead6 on IPv6.
	Overhead, Overhead6 int
	UDPPort             int // 0: none (host-gw)
	// WireGuard says a silent peer may have a wrong key as well as a blocked port.
	WireGuard bool
	// OverlayTarget is the peer's address reached through the overlay (its subnet's network
	// address, or its bridge's for host-gw); invalid when its lease lacks the family.
	OverlayTarget func(peer subnet.Lease, v6 bool) netip.Addr
}

// RuleSpec is what the traffic rules are for.
type RuleSpec struct {
	NFTables                bool
	Masquerade, Forward     bool
	Network, Subnet         netip.Prefix
	IPv6Network, IPv6Subnet netip.Prefix
}

// Kernel reads the node's kernel state.
type Kernel interface {
	Links() ([]Link, error)
	Sysctl(name string) (string, error) // name as sysctl(8) spells it
}

// Link is one network device.
type Link struct {
	Name  string
	Index int
	Type  string // "vxlan", "bridge", "tun", ...
	MTU   int
	Up    bool
	Addrs []netip.Prefix // global addresses
	VNI   int            // VNI, Port and Local: vxlan only
	Port  int
	Local netip.Addr
}

// Prober sends ICMP echo requests from this network namespace.
type Prober interface {
	// Ping reports whether a reply to a size-byte packet (DF when df) came within timeout;
	// an error means the probe could not be sent (no permission, too long for the link).
	Ping(ctx context.Context, dst netip.Addr, size int, df bool, timeout time.Duration) (bool, error)
}

// State is what the checks share: the inputs, and what earlier checks learnt.
type State struct {
	Opts Options
	Deps Deps

	results map[string]Outcome

	daemon    *control.Status
	daemonErr error

	storeOK  bool // the datastore answered
	cfgFound bool // the v3 API holds a config (valid or not)

	cfgText string
	cfg     *subnet.Config

	nodeName string
	node     *Node

	leases   []Lease
	leasesOK bool
	own      *Lease

	ext        *Iface
	extErr     error
	backend    Backend
	backendErr error
	mtu        int // FLANNEL_MTU as the subnet file has it (0: unknown)

	driftDone      bool
	missing, stale []Object
	driftErr       error
	linksDone      bool
	linkList       []Link
	linksErr       error
	probes         *probeResults // the peer probes, run once by the first peer check
}

// NewState makes the state for one run.
func NewState(o Options, d Deps) *State {
	if d.Now == nil {
		d.Now = time.Now
	}
	return &State{Opts: o, Deps: d, results: map[string]Outcome{}}
}

func (s *State) datastore() string {
	if s.Opts.Kube {
		return "kube"
	}
	return "etcd"
}

func (s *State) network() string {
	if s.Opts.Kube {
		return "kube-subnet-mgr"
	}
	return s.Opts.EtcdPrefix
}

// Leases are the leases the run read, judged, after the lease checks ran.
func (s *State) Leases() []Lease { return s.leases }

// peers are the admitted peer leases.
func (s *State) peers() []subnet.Lease {
	var out []subnet.Lease
	for _, l := range s.leases {
		if !l.Own && l.Rejected == nil && l.Origin.Defect == nil {
			out = append(out, l.Lease)
		}
	}
	return out
}
