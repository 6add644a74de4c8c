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

// Options are the daemon's options that select what to diagnose, and the command's own.
type Options struct {
	// Kube is --kube-subnet-mgr.
	Kube bool
	// EtcdPrefix is --etcd-prefix (etcd mode).
	EtcdPrefix string
	// EtcdDefaultEndpoints says --etcd-endpoints was not given: upstream's default lists
	// two endpoints of which one usually does not answer.
	EtcdDefaultEndpoints bool
	// SubnetFile is --subnet-file.
	SubnetFile string
	// PublicIP and PublicIPv6 are --public-ip and --public-ipv6 as given ("" when not).
	PublicIP, PublicIPv6 string
	// IPMasq is --ip-masq; Forward is --iptables-forward-rules.
	IPMasq, Forward bool
	// RenewMargin is --subnet-lease-renew-margin: a lease with less left has not been
	// renewed when it should have been.
	RenewMargin time.Duration
	// CNIConfDir is where the container runtime reads CNI network configs.
	CNIConfDir string
	// Peers is how many peers the probes sample at random; 0 means every peer.
	Peers int
	// ProbeTimeout bounds each ICMP probe; DatastoreTimeout each datastore call.
	ProbeTimeout, DatastoreTimeout time.Duration
	// Root says whether the command runs as root; some checks need it.
	Root bool
}

// Deps are the parts of the node and the datastore the checks read. cmd/flanneld wires
// the real ones; tests hand in fakes. A nil part makes the checks that need it skip.
type Deps struct {
	// Daemon asks this network's daemon for its status (control.Query): an error
	// wrapping control.ErrNotRunning when none runs.
	Daemon func(ctx context.Context) (*control.Status, error)
	// Instances asks the other daemon instances in this network namespace for their
	// status (control.Instances, skipping this network's sockets).
	Instances func(ctx context.Context) ([]control.Found, error)
	// Etcd is the datastore in etcd mode, Kube in Kubernetes mode; StoreErr says why
	// the one of the mode could not be made.
	Etcd     Etcd
	Kube     Kube
	StoreErr error
	// Admission is the daemon's admission rule of peer leases, wired as the daemon
	// wires it; nil: the leases are not judged.
	Admission *subnet.RuleOptions
	// Iface selects the external interface as the daemon would, given the public
	// addresses in effect.
	Iface func(cfg *subnet.Config, publicIP, publicIPv6 string) (*Iface, error)
	// Backend builds the configured backend for reading only (never Prepare or Start).
	Backend func(cfg *subnet.Config, ext *Iface) (Backend, error)
	// Rules lists the traffic rules this instance needs that are not in place.
	Rules func(ctx context.Context, r RuleSpec) (missing []string, mode string, err error)
	// Kernel reads links, addresses and sysctls.
	Kernel Kernel
	// Prober sends ICMP echo requests.
	Prober Prober
	// ReadFile and ReadDir read the node's files (os.ReadFile, os.ReadDir).
	ReadFile func(name string) ([]byte, error)
	ReadDir  func(name string) ([]fs.DirEntry, error)
	// Now is the clock (time.Now).
	Now func() time.Time
	// Shuffle puts the first n of the peers' indices in random order (sampling); nil: no
	// shuffle.
	Shuffle func(n int, swap func(i, j int))
}

// Lease is a lease as the datastore holds it, judged by the admission rule.
type Lease struct {
	// Name is the lease's key below <prefix>/subnets/ (etcd) or its node's name (kube).
	Name  string
	Lease subnet.Lease // Expiration: etcd leases only
	// Reservation is an etcd subnet key without an etcd lease.
	Reservation bool
	// Origin is what the admission rule needs besides the lease: Seniority and Version
	// (etcd: create and mod revision; kube: creation time and resource version), and
	// Defect, why the value could not be read as a lease (nil when it could).
	Origin subnet.Origin
	// Rejected is why the admission rule keeps the lease out of the kernel, nil when it
	// admits it (Err: the detail, when known); Own marks this node's lease.
	Rejected *subnet.Rejection
	Own      bool
}

// defect is why the value is no lease ("" when it is one).
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
	// Endpoints are the configured endpoints, credentials removed.
	Endpoints() []string
	// Health asks one endpoint for its status. Errors name the cause (refused,
	// timeout, TLS, authentication).
	Health(ctx context.Context, endpoint string) (EndpointHealth, error)
	// Config reads <prefix>/config; found is false when the key does not exist.
	Config(ctx context.Context) (text string, found bool, err error)
	// V2Config reads <prefix>/config through the v2 API; found is false when absent.
	// An error wrapping ErrNoV2 means the server does not serve the v2 API.
	V2Config(ctx context.Context) (text string, found bool, err error)
	// Leases lists <prefix>/subnets/ (Expiration left zero).
	Leases(ctx context.Context) ([]Lease, error)
	// Expiration is when the lease named name expires.
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
	// Server is the API server's URL, credentials removed.
	Server() string
	// Version asks the server for its version: reachability and authentication.
	Version(ctx context.Context) (string, error)
	// NodeName is the node this daemon runs on ($NODE_NAME, or its pod's node).
	NodeName(ctx context.Context) (string, error)
	// Node reads a node, its lease made for cfg's families (nil: IPv4); found is
	// false when it does not exist.
	Node(ctx context.Context, name string, cfg *subnet.Config) (node *Node, found bool, err error)
	// Leases lists the leases the nodes make for cfg's families.
	Leases(ctx context.Context, cfg *subnet.Config) ([]Lease, error)
	// Allowed asks the server whether this client may do verb on resource
	// (SelfSubjectAccessReview); reason is the server's when it says no.
	Allowed(ctx context.Context, a Access) (allowed bool, reason string, err error)
	// NetConfig reads --net-config-path.
	NetConfig() (path, text string, err error)
}

// Node is what the checks read of a Kubernetes node.
type Node struct {
	Name     string
	PodCIDRs []netip.Prefix
	// Lease is the lease the node makes (pod CIDRs and flannel annotations); HasLease
	// is false when it has no pod CIDR or no flannel annotations yet.
	Lease    subnet.Lease
	HasLease bool
	// PublicIPOverwrite is the public-ip-overwrite annotation, NodePublicIP the
	// node-public-ip one, and so on (invalid when absent).
	PublicIPOverwrite, PublicIPv6Overwrite netip.Addr
	NodePublicIP, NodePublicIPv6           netip.Addr
}

// Access is one permission the daemon needs, as a SelfSubjectAccessReview asks it.
type Access struct {
	Verb, Resource, Subresource, Namespace, Name string
	// Optional permissions only degrade the daemon when missing.
	Optional bool
	// Why says what the daemon needs it for.
	Why string
}

// Iface is the external interface the daemon would use.
type Iface struct {
	Name  string
	Index int
	MTU   int
	// Addr and Addr6 are the interface's addresses the daemon picked; Public and Public6
	// what the lease advertises (--public-ip, else the interface's).
	Addr, Addr6     netip.Addr
	Public, Public6 netip.Addr
}

// Backend is the configured backend, read only.
type Backend interface {
	// Type is the backend type ("vxlan").
	Type() string
	// Devices names the links the backend owns (none for host-gw).
	Devices() []string
	// MTU is the FLANNEL_MTU the backend gives pods.
	MTU() int
	// Drift is how the kernel differs from what the own lease and the admitted peers
	// require; ErrUnsupported when the backend cannot tell.
	Drift(ctx context.Context, own *subnet.Lease, peers []subnet.Lease) (missing, stale []Object, err error)
	// TxChecksum reads the transmit checksum offload of the devices and says what it
	// must be on this kernel; ErrUnsupported when the backend has none to set.
	TxChecksum() ([]Offload, error)
	// Encap is how the backend carries pod traffic between nodes.
	Encap() Encap
	// Claims are the devices and ports the backend takes for itself (backend.Claimer;
	// empty for host-gw).
	Claims() claim.Set
	// WireGuard reads the WireGuard devices as they are now and the peers the admitted
	// leases ask for; ErrUnsupported for a backend without WireGuard.
	WireGuard(ctx context.Context, own *subnet.Lease, peers []subnet.Lease) (*WireGuard, error)
}

// WireGuard is the wireguard backend's devices and the peers its leases ask for.
type WireGuard struct {
	Devices []WGDevice
	Want    []WGPeerWant
}

// WGDevice is one WireGuard device as the kernel or its UAPI socket reports it.
type WGDevice struct {
	Name string
	// Implementation is "kernel" or "userspace", "" when the device is absent.
	Implementation string
	// Err says why its WireGuard state could not be read.
	Err        error
	ListenPort int
	PublicKey  string
	Peers      []WGPeer
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
	// Overhead is what encapsulation adds to a pod packet on an IPv4 underlay (vxlan 50,
	// udp 28, host-gw 0), and Overhead6 on an IPv6 one.
	Overhead, Overhead6 int
	// UDPPort is the UDP port of the encapsulation (0: none, host-gw).
	UDPPort int
	// WireGuard says the encapsulation is WireGuard's: a peer that does not answer
	// through it may have a wrong key as well as a blocked port.
	WireGuard bool
	// OverlayTarget is the address of a peer that answers through the overlay (vxlan,
	// udp: its subnet's network address; host-gw: its bridge address); invalid when the
	// peer's lease has none of that family.
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
	// Links lists the network devices.
	Links() ([]Link, error)
	// Sysctl reads a kernel setting by its sysctl name ("net.ipv4.ip_forward").
	Sysctl(name string) (string, error)
}

// Link is one network device.
type Link struct {
	Name  string
	Index int
	Type  string // "vxlan", "bridge", "tun", ...
	MTU   int
	Up    bool
	Addrs []netip.Prefix // global addresses
	// VNI, Port and Local are a vxlan device's.
	VNI   int
	Port  int
	Local netip.Addr
}

// Prober sends ICMP echo requests from this network namespace.
type Prober interface {
	// Ping sends an echo request of size bytes (the whole IP packet), with the
	// don't-fragment bit set when df, and reports whether a reply came within timeout.
	// An error means the probe could not be sent (no permission, message too long for
	// the local link).
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
