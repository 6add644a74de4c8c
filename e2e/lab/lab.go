// Package lab builds a throw-away network of namespaces for e2e tests and the demo: a
// switch <name>-sw (bridge br0 192.0.2.1/24, etcd on .254), nodes <name>-n<i> on
// 192.0.2.<10+i> running flanneld, and pods <name>-n<i>-p<j> behind each node's cni0.
// Nothing touches the root namespace and no packet leaves the lab.
package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/flannel-go/flannel/e2e/etcdproc"
	"github.com/flannel-go/flannel/e2e/kubeproc"
)

// Fixed lab addresses.
var (
	GatewayIP  = netip.MustParseAddr("192.0.2.1")    // on br0 in the switch namespace
	Gateway2IP = netip.MustParseAddr("198.51.100.1") // on br1 (Options.SecondSegment)
	EtcdIP     = netip.MustParseAddr("192.0.2.254")  // on br0 in the switch namespace

	GatewayIPv6  = netip.MustParseAddr("2001:db8::1")     // on br0 (Options.IPv6)
	Gateway2IPv6 = netip.MustParseAddr("2001:db8:0:1::1") // on br1
)

// IPv6 underlay prefixes (Options.IPv6), the second for Options.SecondSegment nodes.
var (
	UnderlayIPv6  = netip.MustParsePrefix("2001:db8::/64")
	Underlay2IPv6 = netip.MustParsePrefix("2001:db8:0:1::/64")
)

// DefaultEtcdPrefix is flanneld's default --etcd-prefix.
const DefaultEtcdPrefix = "/coreos.com/network"

// Options configure a lab.
type Options struct {
	Name        string // unique per lab (UniqueName), [A-Za-z0-9_]{1,40}
	Nodes       int    // 1..200
	WorkDir     string // required: etcd data, logs, WorkDir/n<i>/
	FlanneldBin string
	EtcdPrefix  string // default DefaultEtcdPrefix
	UnderlayMTU int    // default 1500
	// SecondSegment nodes sit on br1, 198.51.100.<10+i>/24, reachable only through a router.
	SecondSegment []int
	IPv6          bool // dual-stack underlay on 2001:db8::/64, without DAD or RAs
	// OwnWireguardDir bind-mounts WireguardDir(i) on each node's /run/wireguard, so
	// userspace UAPI sockets stay per node.
	OwnWireguardDir bool
	NoEtcd          bool
	EtcdArgs        []string
	Logf            func(format string, args ...any) // progress messages, if set
}

// Lab is a running lab. Its methods are safe for concurrent use.
type Lab struct {
	opts Options

	mu     sync.Mutex
	closed bool
	etcd   *etcdproc.Proc
	kube   *kubeproc.Proc // StartKubeAPIServer
	cli    *clientv3.Client
	nodes  []*node        // index i-1 for node i
	extra  []*flannelProc // every run of every Instance
	pods   map[[2]int]Pod
}

type node struct {
	index  int
	ns     string
	ip     netip.Addr
	ip6    netip.Addr // zero without Options.IPv6
	second bool       // on the second segment (br1)
	dir    string
	proc   *flannelProc // the current or last flanneld process
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_]{1,40}$`)

// UniqueName returns family+PID+"x"+tag; Sweep(family) spares names whose PID lives.
func UniqueName(family, tag string) string {
	return fmt.Sprintf("%s%dx%s", family, os.Getpid(), tag)
}

// New removes leftovers of a same-named lab, then creates the switch, nodes and etcd;
// on error it removes what it made.
func New(ctx context.Context, opts Options) (*Lab, error) {
	if !nameRE.MatchString(opts.Name) {
		return nil, fmt.Errorf("lab: invalid name %q (letters, digits, '_', at most 40)", opts.Name)
	}
	if opts.Nodes < 1 || opts.Nodes > 200 {
		return nil, fmt.Errorf("lab: Nodes must be 1..200, got %d", opts.Nodes)
	}
	if opts.WorkDir == "" {
		return nil, errors.New("lab: WorkDir is required")
	}
	if opts.EtcdPrefix == "" {
		opts.EtcdPrefix = DefaultEtcdPrefix
	}
	if opts.UnderlayMTU == 0 {
		opts.UnderlayMTU = 1500
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("lab: needs root (network namespaces)")
	}
	wd, err := filepath.Abs(opts.WorkDir)
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	opts.WorkDir = wd
	l := &Lab{opts: opts, pods: map[[2]int]Pod{}}
	for i := 1; i <= opts.Nodes; i++ {
		n := &node{
			index: i,
			ns:    fmt.Sprintf("%s-n%d", opts.Name, i),
			ip:    netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)}),
			dir:   filepath.Join(opts.WorkDir, fmt.Sprintf("n%d", i)),
		}
		if slices.Contains(opts.SecondSegment, i) {
			n.ip, n.second = netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + i)}), true
		}
		if opts.IPv6 {
			n.ip6 = nodeIPv6(i, n.second)
		}
		l.nodes = append(l.nodes, n)
	}
	if err := l.removeNamespaces(ctx); err != nil {
		return nil, fmt.Errorf("lab: remove leftovers of %s: %w", opts.Name, err)
	}
	if err := l.build(ctx); err != nil {
		if cerr := l.Close(); cerr != nil {
			err = fmt.Errorf("%w (and cleanup: %v)", err, cerr)
		}
		return nil, err
	}
	return l, nil
}

func (l *Lab) logf(format string, args ...any) {
	if l.opts.Logf != nil {
		l.opts.Logf(format, args...)
	}
}

func (l *Lab) build(ctx context.Context) error {
	if err := os.MkdirAll(l.opts.WorkDir, 0o755); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	sw := l.SwitchNS()
	l.logf("lab %s: creating switch namespace %s", l.opts.Name, sw)
	if err := addNamespace(ctx, sw); err != nil {
		return err
	}
	if err := l.prepareIPv6(ctx, sw); err != nil {
		return fmt.Errorf("lab: switch: %w", err)
	}
	steps := [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "br0", "type", "bridge"},
		{"addr", "add", GatewayIP.String() + "/24", "dev", "br0"},
		{"addr", "add", EtcdIP.String() + "/24", "dev", "br0"},
	}
	if l.opts.IPv6 {
		steps = append(steps, addr6(GatewayIPv6, UnderlayIPv6, "br0"))
	}
	steps = append(steps, []string{"link", "set", "br0", "up"})
	if len(l.opts.SecondSegment) > 0 {
		steps = append(steps,
			[]string{"link", "add", "br1", "type", "bridge"},
			[]string{"addr", "add", Gateway2IP.String() + "/24", "dev", "br1"})
		if l.opts.IPv6 {
			steps = append(steps, addr6(Gateway2IPv6, Underlay2IPv6, "br1"))
		}
		steps = append(steps, []string{"link", "set", "br1", "up"})
	}
	for _, args := range steps {
		if _, err := ipn(ctx, sw, args...); err != nil {
			return fmt.Errorf("lab: switch: %w", err)
		}
	}
	if len(l.opts.SecondSegment) > 0 {
		if err := setSysctl(ctx, sw, "net.ipv4.ip_forward", "1"); err != nil {
			return fmt.Errorf("lab: switch: %w", err)
		}
		if l.opts.IPv6 {
			if err := setSysctl(ctx, sw, "net.ipv6.conf.all.forwarding", "1"); err != nil {
				return fmt.Errorf("lab: switch: %w", err)
			}
		}
	}
	for _, n := range l.nodes {
		if err := l.buildNode(ctx, n); err != nil {
			return err
		}
	}
	if l.opts.NoEtcd {
		return nil
	}
	return l.startEtcd(ctx)
}

func (l *Lab) buildNode(ctx context.Context, n *node) error {
	l.logf("lab %s: creating node namespace %s (%s)", l.opts.Name, n.ns, n.ip)
	if err := os.MkdirAll(n.dir, 0o755); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	if err := addNamespace(ctx, n.ns); err != nil {
		return err
	}
	if err := l.prepareIPv6(ctx, n.ns); err != nil {
		return fmt.Errorf("lab: node %d: %w", n.index, err)
	}
	port := fmt.Sprintf("n%d", n.index)
	mtu := strconv.Itoa(l.opts.UnderlayMTU)
	bridge, gw, gw6, under6 := "br0", GatewayIP, GatewayIPv6, UnderlayIPv6
	if n.second {
		bridge, gw, gw6, under6 = "br1", Gateway2IP, Gateway2IPv6, Underlay2IPv6
	}
	steps := []ipStep{
		{n.ns, []string{"link", "set", "lo", "up"}},
		{n.ns, []string{"link", "add", "eth0", "mtu", mtu, "type", "veth", "peer", "name", port, "mtu", mtu, "netns", l.SwitchNS()}},
		{l.SwitchNS(), []string{"link", "set", port, "master", bridge}},
		{l.SwitchNS(), []string{"link", "set", port, "up"}},
		{n.ns, []string{"addr", "add", n.ip.String() + "/24", "dev", "eth0"}},
		{n.ns, []string{"link", "set", "eth0", "up"}},
		{n.ns, []string{"route", "add", "default", "via", gw.String(), "dev", "eth0"}},
	}
	if n.ip6.IsValid() {
		steps = append(steps,
			ipStep{n.ns, addr6(n.ip6, under6, "eth0")},
			ipStep{n.ns, []string{"-6", "route", "add", "default", "via", gw6.String(), "dev", "eth0"}})
	}
	if err := runIPSteps(ctx, steps); err != nil {
		return fmt.Errorf("lab: node %d: %w", n.index, err)
	}
	if err := setSysctl(ctx, n.ns, "net.ipv4.ip_forward", "1"); err != nil {
		return fmt.Errorf("lab: node %d: %w", n.index, err)
	}
	if n.ip6.IsValid() {
		if err := setSysctl(ctx, n.ns, "net.ipv6.conf.all.forwarding", "1"); err != nil {
			return fmt.Errorf("lab: node %d: %w", n.index, err)
		}
	}
	return nil
}

func nodeIPv6(i int, second bool) netip.Addr {
	p := UnderlayIPv6
	if second {
		p = Underlay2IPv6
	}
	host := netip.MustParseAddr(fmt.Sprintf("::%d", 10+i)).As16()
	b := p.Addr().As16()
	copy(b[8:], host[8:])
	return netip.AddrFrom16(b)
}

func addr6(a netip.Addr, p netip.Prefix, dev string) []string {
	return []string{"addr", "add", netip.PrefixFrom(a, p.Bits()).String(), "dev", dev, "nodad"}
}

// prepareIPv6 turns off DAD and router advertisements for devices made later in ns.
func (l *Lab) prepareIPv6(ctx context.Context, ns string) error {
	if !l.opts.IPv6 {
		return nil
	}
	return setIPv6Defaults(ctx, ns)
}

func setIPv6Defaults(ctx context.Context, ns string) error {
	for _, conf := range []string{"all", "default"} {
		for _, kv := range [][2]string{{"accept_dad", "0"}, {"accept_ra", "0"}} {
			if err := setSysctl(ctx, ns, "net.ipv6.conf."+conf+"."+kv[0], kv[1]); err != nil {
				return err
			}
		}
	}
	return nil
}

func (l *Lab) startEtcd(ctx context.Context) error {
	l.logf("lab %s: starting etcd on %s inside %s", l.opts.Name, l.EtcdEndpoint(), l.SwitchNS())
	p, err := etcdproc.Start(ctx, etcdproc.Options{
		Name:      "lab",
		DataDir:   filepath.Join(l.opts.WorkDir, "etcd", "data"),
		ClientURL: l.EtcdEndpoint(),
		PeerURL:   fmt.Sprintf("http://%s:2380", EtcdIP),
		Netns:     l.SwitchNS(),
		LogFile:   filepath.Join(l.opts.WorkDir, "etcd", "etcd.log"),
		ExtraArgs: l.opts.EtcdArgs,
	})
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	l.mu.Lock()
	l.etcd = p
	l.mu.Unlock()
	cli, err := l.NewEtcdClient()
	if err != nil {
		return fmt.Errorf("lab: etcd client: %w", err)
	}
	l.mu.Lock()
	l.cli = cli
	l.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if _, err := cli.Get(cctx, "/lab-ping"); err != nil {
		return fmt.Errorf("lab: etcd not answering on %s: %w", l.EtcdEndpoint(), err)
	}
	return nil
}

// Name is the lab's name prefix.
func (l *Lab) Name() string { return l.opts.Name }

// Nodes is the number of nodes.
func (l *Lab) Nodes() int { return len(l.nodes) }

// WorkDir is the lab's work directory (absolute).
func (l *Lab) WorkDir() string { return l.opts.WorkDir }

// SwitchNS is the switch namespace name.
func (l *Lab) SwitchNS() string { return l.opts.Name + "-sw" }

// NodeNS is node i's namespace name (i is 1-based).
func (l *Lab) NodeNS(i int) string { return fmt.Sprintf("%s-n%d", l.opts.Name, i) }

// NodeIP is node i's underlay address.
func (l *Lab) NodeIP(i int) netip.Addr {
	if i >= 1 && i <= len(l.nodes) {
		return l.nodes[i-1].ip
	}
	return netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)})
}

// NodeIPv6 is node i's IPv6 underlay address; the zero Addr without Options.IPv6.
func (l *Lab) NodeIPv6(i int) netip.Addr {
	if i >= 1 && i <= len(l.nodes) {
		return l.nodes[i-1].ip6
	}
	return netip.Addr{}
}

// IPv6 reports whether the lab has an IPv6 underlay (Options.IPv6).
func (l *Lab) IPv6() bool { return l.opts.IPv6 }

// NodeDir is node i's directory (subnet.env, flanneld.log).
func (l *Lab) NodeDir(i int) string { return filepath.Join(l.opts.WorkDir, fmt.Sprintf("n%d", i)) }

// NewEtcdClient makes a fresh etcd client (no reconnect backoff); the caller closes it.
func (l *Lab) NewEtcdClient() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   []string{l.EtcdEndpoint()},
		DialTimeout: 10 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return DialContext(l.SwitchNS())(ctx, "tcp", addr)
		})},
	})
}

// EtcdEndpoint is the etcd client URL as seen from the nodes.
func (l *Lab) EtcdEndpoint() string { return fmt.Sprintf("http://%s:2379", EtcdIP) }

// EtcdPrefix is the --etcd-prefix the lab passes to flanneld.
func (l *Lab) EtcdPrefix() string { return l.opts.EtcdPrefix }

// EtcdLog is the path of etcd's log file.
func (l *Lab) EtcdLog() string { return filepath.Join(l.opts.WorkDir, "etcd", "etcd.log") }

// Etcd is the lab's etcd client, closed by Close; nil without etcd.
func (l *Lab) Etcd() *clientv3.Client {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cli
}

// EtcdProc is the etcd process (for fault tests: Kill, Restart); nil without etcd.
func (l *Lab) EtcdProc() *etcdproc.Proc {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.etcd
}

// PutConfig writes the network configuration to <prefix>/config.
func (l *Lab) PutConfig(ctx context.Context, config string) error {
	cli := l.Etcd()
	if cli == nil {
		return errors.New("lab: no etcd")
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, l.opts.EtcdPrefix+"/config", config); err != nil {
		return fmt.Errorf("lab: put config: %w", err)
	}
	return nil
}

func (l *Lab) node(i int) (*node, error) {
	if i < 1 || i > len(l.nodes) {
		return nil, fmt.Errorf("lab: no node %d (have 1..%d)", i, len(l.nodes))
	}
	return l.nodes[i-1], nil
}

// Close kills the lab's processes by PID and deletes its namespaces by name; idempotent,
// it tries everything and returns the first problem.
func (l *Lab) Close() error {
	l.mu.Lock()
	l.closed = true
	cli, etcd, kube := l.cli, l.etcd, l.kube
	l.cli, l.etcd, l.kube = nil, nil, nil
	var procs []*flannelProc
	for _, n := range l.nodes {
		if n.proc != nil {
			procs = append(procs, n.proc)
		}
	}
	procs = append(procs, l.extra...)
	l.mu.Unlock()

	var errs []error
	for _, p := range procs {
		if err := p.kill(); err != nil {
			errs = append(errs, err)
		}
	}
	if cli != nil {
		_ = cli.Close()
	}
	if kube != nil {
		kube.Stop() // before etcd: without etcd it hangs in shutdown
	}
	if etcd != nil {
		etcd.Kill()
	}
	if err := l.removeNamespaces(context.Background()); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (l *Lab) ownNamespaces(ctx context.Context) ([]string, error) {
	all, err := listNamespaces(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, ns := range all {
		if ns == l.SwitchNS() || ns == l.KubeNS() || belongsToNodes(ns, l.opts.Name) {
			out = append(out, ns)
		}
	}
	return out, nil
}

func belongsToNodes(ns, name string) bool {
	rest, ok := strings.CutPrefix(ns, name+"-n")
	if !ok {
		return false
	}
	node, pod, hasPod := strings.Cut(rest, "-p")
	if !allDigits(node) {
		return false
	}
	return !hasPod || allDigits(pod)
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func (l *Lab) removeNamespaces(ctx context.Context) error {
	nss, err := l.ownNamespaces(ctx)
	if err != nil {
		return err
	}
	return deleteNamespaces(ctx, nss)
}

// deleteNamespaces kills what runs inside, then deletes pods first, switch last.
func deleteNamespaces(ctx context.Context, nss []string) error {
	sort.Slice(nss, func(a, b int) bool {
		if len(nss[a]) != len(nss[b]) {
			return len(nss[a]) > len(nss[b])
		}
		return nss[a] < nss[b]
	})
	var errs []error
	for _, ns := range nss {
		if err := killNamespacePIDs(ctx, ns); err != nil {
			errs = append(errs, err)
		}
	}
	for _, ns := range nss {
		if _, err := run(ctx, "ip", "netns", "delete", ns); err != nil && !isNotFound(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// killNamespacePIDs SIGKILLs every process in ns and waits up to 10 s for them to go.
func killNamespacePIDs(ctx context.Context, ns string) error {
	pids, err := namespacePIDs(ctx, ns)
	if err != nil || len(pids) == 0 {
		return err
	}
	for _, pid := range pids {
		if pid != os.Getpid() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		left, err := namespacePIDs(ctx, ns)
		if err != nil {
			return err
		}
		if len(left) == 0 {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("lab: processes still in namespace %s after SIGKILL", ns)
}

func namespacePIDs(ctx context.Context, ns string) ([]int, error) {
	out, err := run(ctx, "ip", "netns", "pids", ns)
	if err != nil {
		if isNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(out) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

func listNamespaces(ctx context.Context) ([]string, error) {
	out, err := run(ctx, "ip", "netns", "list")
	if err != nil {
		return nil, err
	}
	var nss []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			nss = append(nss, f[0])
		}
	}
	return nss, nil
}

func addNamespace(ctx context.Context, ns string) error {
	if _, err := run(ctx, "ip", "netns", "add", ns); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	return nil
}

// Sweep removes earlier labs of family (namespaces and what runs there), sparing live PIDs.
func Sweep(family string) error {
	if family == "" {
		return errors.New("lab: Sweep needs a non-empty prefix")
	}
	ctx := context.Background()
	all, err := listNamespaces(ctx)
	if err != nil {
		return err
	}
	var doomed []string
	for _, ns := range all {
		rest, ok := strings.CutPrefix(ns, family)
		if !ok {
			continue
		}
		if pid, ok := ownerPID(rest); ok && processAlive(pid) {
			continue
		}
		doomed = append(doomed, ns)
	}
	return deleteNamespaces(ctx, doomed)
}

func ownerPID(rest string) (int, bool) {
	digits, _, ok := strings.Cut(rest, "x")
	if !ok || !allDigits(digits) {
		return 0, false
	}
	pid, err := strconv.Atoi(digits)
	return pid, err == nil && pid > 0
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
