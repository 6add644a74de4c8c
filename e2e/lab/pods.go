package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Pod is a pod namespace behind node Node's cni0 bridge.
type Pod struct {
	Node, Index int
	NS          string
	IP          netip.Addr // <subnet>.<Index+2>
	Prefix      netip.Prefix
	Gateway     netip.Addr // cni0's address: the first host of the node's subnet
	MTU         int
}

// PodNS is the namespace name of pod j on node i.
func (l *Lab) PodNS(i, j int) string { return fmt.Sprintf("%s-n%d-p%d", l.opts.Name, i, j) }

// AddPod creates (or re-creates) pod j (0-based) on node i from node i's subnet file:
// bridge cni0 in the node namespace with FLANNEL_SUBNET's address (e.g. 10.5.85.1/24) and
// FLANNEL_MTU, and a pod namespace whose eth0 has <subnet>.<j+2> and a default route via
// cni0. Calling it again converges: cni0 gets the current subnet and the pod is rebuilt.
func (l *Lab) AddPod(i, j int) (Pod, error) {
	ctx := context.Background()
	if _, err := l.node(i); err != nil {
		return Pod{}, err
	}
	if j < 0 {
		return Pod{}, fmt.Errorf("lab: pod index must be >= 0, got %d", j)
	}
	env, err := l.SubnetEnv(i)
	if err != nil {
		return Pod{}, err
	}
	first, err := netip.ParsePrefix(env["FLANNEL_SUBNET"])
	if err != nil || !first.Addr().Is4() {
		return Pod{}, fmt.Errorf("lab: node %d: bad FLANNEL_SUBNET %q", i, env["FLANNEL_SUBNET"])
	}
	mtu, err := strconv.Atoi(env["FLANNEL_MTU"])
	if err != nil || mtu < 576 {
		return Pod{}, fmt.Errorf("lab: node %d: bad FLANNEL_MTU %q", i, env["FLANNEL_MTU"])
	}
	podIP := addToAddr(first.Masked().Addr(), uint32(j+2))
	if !first.Masked().Contains(podIP) || !first.Masked().Contains(addToAddr(podIP, 1)) {
		return Pod{}, fmt.Errorf("lab: pod %d does not fit in %s", j, first.Masked())
	}
	pod := Pod{Node: i, Index: j, NS: l.PodNS(i, j), IP: podIP, Prefix: netip.PrefixFrom(podIP, first.Bits()),
		Gateway: first.Addr(), MTU: mtu}

	nodeNS := l.NodeNS(i)
	if err := ensureBridge(ctx, nodeNS, "cni0", first, mtu); err != nil {
		return Pod{}, fmt.Errorf("lab: node %d: %w", i, err)
	}
	hostVeth := fmt.Sprintf("vethp%d", j)
	// Deleting our end removes the pair at once (namespace deletion is asynchronous).
	if _, err := ipn(ctx, nodeNS, "link", "del", hostVeth); err != nil && !isNotFound(err) {
		return Pod{}, fmt.Errorf("lab: %w", err)
	}
	if err := deleteNamespaces(ctx, []string{pod.NS}); err != nil {
		return Pod{}, err
	}
	if err := addNamespace(ctx, pod.NS); err != nil {
		return Pod{}, err
	}
	m := strconv.Itoa(mtu)
	steps := []struct {
		ns   string
		args []string
	}{
		{pod.NS, []string{"link", "set", "lo", "up"}},
		{pod.NS, []string{"link", "add", "eth0", "mtu", m, "type", "veth", "peer", "name", hostVeth, "mtu", m, "netns", nodeNS}},
		{nodeNS, []string{"link", "set", hostVeth, "master", "cni0"}},
		{nodeNS, []string{"link", "set", hostVeth, "up"}},
		{pod.NS, []string{"addr", "add", pod.Prefix.String(), "dev", "eth0"}},
		{pod.NS, []string{"link", "set", "eth0", "up"}},
		{pod.NS, []string{"route", "add", "default", "via", pod.Gateway.String(), "dev", "eth0"}},
	}
	for _, s := range steps {
		if _, err := ipn(ctx, s.ns, s.args...); err != nil {
			return Pod{}, fmt.Errorf("lab: pod %d on node %d: %w", j, i, err)
		}
	}
	l.mu.Lock()
	l.pods[[2]int{i, j}] = pod
	l.mu.Unlock()
	return pod, nil
}

// Pods lists the pods added so far, ordered by node and index.
func (l *Lab) Pods() []Pod {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Pod, 0, len(l.pods))
	for _, p := range l.pods {
		out = append(out, p)
	}
	sort.Slice(out, func(a, b int) bool {
		if out[a].Node != out[b].Node {
			return out[a].Node < out[b].Node
		}
		return out[a].Index < out[b].Index
	})
	return out
}

func addToAddr(a netip.Addr, n uint32) netip.Addr {
	b := a.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += n
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// ensureBridge makes sure bridge name exists in ns, is up, has MTU mtu and carries exactly
// addr as its IPv4 address.
func ensureBridge(ctx context.Context, ns, name string, addr netip.Prefix, mtu int) error {
	link, err := GetLink(ctx, ns, name)
	if errors.Is(err, ErrNoLink) {
		if _, err := ipn(ctx, ns, "link", "add", name, "type", "bridge"); err != nil {
			return err
		}
		link, err = GetLink(ctx, ns, name)
	}
	if err != nil {
		return err
	}
	if link.Kind != "bridge" {
		return fmt.Errorf("%s in %s is a %q, not a bridge", name, ns, link.Kind)
	}
	if _, err := ipn(ctx, ns, "link", "set", name, "mtu", strconv.Itoa(mtu)); err != nil {
		return err
	}
	have := false
	for _, a := range link.Addrs {
		if a.Family != "inet" {
			continue
		}
		if a.Local == addr.Addr().String() && a.PrefixLen == addr.Bits() {
			have = true
			continue
		}
		if _, err := ipn(ctx, ns, "addr", "del", fmt.Sprintf("%s/%d", a.Local, a.PrefixLen), "dev", name); err != nil {
			return err
		}
	}
	if !have {
		if _, err := ipn(ctx, ns, "addr", "add", addr.String(), "dev", name); err != nil {
			return err
		}
	}
	_, err = ipn(ctx, ns, "link", "set", name, "up")
	return err
}

// Exec runs a command inside a lab namespace and returns its standard output; a failure
// carries the standard error. It is bounded by a 60 s timeout.
func (l *Lab) Exec(ns string, cmd ...string) (string, error) {
	return nsExec(context.Background(), ns, cmd...)
}

// DefaultPingTimeout is how long Ping keeps retrying.
const DefaultPingTimeout = 30 * time.Second

// Ping pings to from namespace fromNS ("ping -c 3 -W 1"), retrying until a round
// succeeds or DefaultPingTimeout passes.
func (l *Lab) Ping(fromNS string, to netip.Addr) error {
	_, err := l.PingRTT(fromNS, to, DefaultPingTimeout)
	return err
}

var rttRE = regexp.MustCompile(`= ([0-9.]+)/([0-9.]+)/([0-9.]+)/([0-9.]+) ms`)

// PingRTT is Ping with an explicit deadline; it returns the average round trip time of
// the first successful round.
func (l *Lab) PingRTT(fromNS string, to netip.Addr, timeout time.Duration) (time.Duration, error) {
	if !to.IsValid() {
		return 0, errors.New("lab: ping: no address")
	}
	deadline := time.Now().Add(timeout)
	var lastErr error
	for attempt := 1; ; attempt++ {
		out, err := nsExec(context.Background(), fromNS, "ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", to.String())
		if err == nil {
			m := rttRE.FindStringSubmatch(out)
			if m == nil {
				return 0, nil
			}
			ms, _ := strconv.ParseFloat(m[2], 64)
			return time.Duration(ms * float64(time.Millisecond)), nil
		}
		lastErr = err
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("lab: ping %s from %s failed %d times within %v; last: %w (%s)",
				to, fromNS, attempt, timeout, lastErr, lastLine(out))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// ---- read-only views of a namespace's kernel state (ip -j / bridge -j) ----

// Route is one IPv4 route of the main table.
type Route struct {
	Dst      string   `json:"dst"` // "10.5.32.0/24" or "default"
	Gateway  string   `json:"gateway"`
	Dev      string   `json:"dev"`
	Protocol string   `json:"protocol"`
	Scope    string   `json:"scope"`
	Type     string   `json:"type"`
	Flags    []string `json:"flags"`
}

// HasFlag reports whether the route carries flag (e.g. "onlink").
func (r Route) HasFlag(flag string) bool { return contains(r.Flags, flag) }

// Neigh is one IPv4 neighbour (ARP) entry.
type Neigh struct {
	Dst    string   `json:"dst"`
	Dev    string   `json:"dev"`
	LLAddr string   `json:"lladdr"`
	State  []string `json:"state"`
}

// FDB is one bridge forwarding database entry.
type FDB struct {
	MAC    string   `json:"mac"`
	Dev    string   `json:"ifname"`
	Dst    string   `json:"dst"`
	Master string   `json:"master"`
	Flags  []string `json:"flags"`
	State  string   `json:"state"`
}

// Link is a network device with its details and addresses.
type Link struct {
	Ifindex   int      `json:"ifindex"`
	Name      string   `json:"ifname"`
	Address   string   `json:"address"` // MAC
	MTU       int      `json:"mtu"`
	Flags     []string `json:"flags"`
	OperState string   `json:"operstate"`
	Master    string   `json:"master"`
	LinkInfo  *struct {
		Kind string          `json:"info_kind"`
		Data json.RawMessage `json:"info_data"`
	} `json:"linkinfo"`
	Addrs []struct {
		Family    string `json:"family"`
		Local     string `json:"local"`
		PrefixLen int    `json:"prefixlen"`
		Scope     string `json:"scope"`
	} `json:"addr_info"`

	Kind  string     `json:"-"` // LinkInfo.Kind, "" for plain devices
	VXLAN *VXLANInfo `json:"-"` // set for vxlan devices
}

// VXLANInfo is the vxlan part of a link's details.
type VXLANInfo struct {
	ID       int    `json:"id"`
	Local    string `json:"local"`
	Link     string `json:"link"`
	Port     int    `json:"port"`
	Learning bool   `json:"learning"`
	GBP      bool   `json:"gbp"`
}

// IsUp reports whether the link is administratively up.
func (k Link) IsUp() bool { return contains(k.Flags, "UP") }

// IPv4Addrs lists the link's IPv4 addresses as "a.b.c.d/len".
func (k Link) IPv4Addrs() []string {
	var out []string
	for _, a := range k.Addrs {
		if a.Family == "inet" {
			out = append(out, fmt.Sprintf("%s/%d", a.Local, a.PrefixLen))
		}
	}
	return out
}

// ErrNoLink is returned by GetLink when the device does not exist.
var ErrNoLink = errors.New("no such link")

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Routes lists the IPv4 routes of ns's main table.
func Routes(ctx context.Context, ns string) ([]Route, error) {
	var rs []Route
	err := ipJSON(ctx, &rs, "ip", "-n", ns, "-j", "-4", "route", "show")
	return rs, err
}

// Neighs lists the IPv4 neighbour entries in ns.
func Neighs(ctx context.Context, ns string) ([]Neigh, error) {
	var ns4 []Neigh
	err := ipJSON(ctx, &ns4, "ip", "-n", ns, "-j", "-4", "neigh", "show")
	return ns4, err
}

// FDBs lists the bridge forwarding database of ns.
func FDBs(ctx context.Context, ns string) ([]FDB, error) {
	var fs []FDB
	err := ipJSON(ctx, &fs, "bridge", "-n", ns, "-j", "fdb", "show")
	return fs, err
}

// Links lists the devices in ns with details and addresses.
func Links(ctx context.Context, ns string) ([]Link, error) {
	var ls []Link
	if err := ipJSON(ctx, &ls, "ip", "-n", ns, "-j", "-d", "addr", "show"); err != nil {
		return nil, err
	}
	for i := range ls {
		if err := ls[i].decodeInfo(); err != nil {
			return nil, err
		}
	}
	return ls, nil
}

// GetLink returns one device of ns; errors.Is(err, ErrNoLink) when it does not exist.
func GetLink(ctx context.Context, ns, name string) (*Link, error) {
	ls, err := Links(ctx, ns)
	if err != nil {
		return nil, err
	}
	for i := range ls {
		if ls[i].Name == name {
			return &ls[i], nil
		}
	}
	return nil, fmt.Errorf("lab: %s in %s: %w", name, ns, ErrNoLink)
}

func (k *Link) decodeInfo() error {
	if k.LinkInfo == nil {
		return nil
	}
	k.Kind = k.LinkInfo.Kind
	if k.Kind == "vxlan" && len(k.LinkInfo.Data) > 0 {
		var v VXLANInfo
		if err := json.Unmarshal(k.LinkInfo.Data, &v); err != nil {
			return fmt.Errorf("lab: vxlan details of %s: %w", k.Name, err)
		}
		k.VXLAN = &v
	}
	return nil
}

func ipJSON(ctx context.Context, v any, name string, args ...string) error {
	if len(args) < 2 || args[0] != "-n" || args[1] == "" {
		return errors.New("lab: refusing to inspect the root network namespace")
	}
	out, err := run(ctx, name, args...)
	if err != nil {
		return err
	}
	if strings.TrimSpace(out) == "" {
		return nil
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("lab: parse %s %s output: %w", name, strings.Join(args, " "), err)
	}
	return nil
}

// Describe returns a human-readable dump of ns's devices, routes, neighbours and
// vxlan FDB entries, for failure messages. Errors are included in the text.
func Describe(ctx context.Context, ns string) string {
	var b strings.Builder
	for _, c := range [][]string{
		{"ip", "-n", ns, "-d", "-br", "addr", "show"},
		{"ip", "-n", ns, "-d", "link", "show", "type", "vxlan"},
		{"ip", "-n", ns, "-4", "route", "show"},
		{"ip", "-n", ns, "-4", "neigh", "show"},
		{"bridge", "-n", ns, "fdb", "show", "nomaster"},
	} {
		out, err := run(ctx, c[0], c[1:]...)
		fmt.Fprintf(&b, "$ %s\n%s", strings.Join(c, " "), out)
		if err != nil {
			fmt.Fprintf(&b, "(%v)\n", err)
		}
	}
	return b.String()
}
