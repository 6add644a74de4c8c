package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Pod is a pod namespace behind its node's cni0; a family the subnet file lacks is zero.
type Pod struct {
	Node, Index int
	NS          string
	IP          netip.Addr // <subnet>.<Index+2>
	Prefix      netip.Prefix
	Gateway     netip.Addr // cni0's address: the first host of the node's subnet
	IPv6        netip.Addr // <IPv6 subnet>::<Index+2>
	IPv6Prefix  netip.Prefix
	IPv6Gateway netip.Addr // cni0's IPv6 address: the first host of the node's IPv6 subnet
	MTU         int
}

// Addrs lists the pod's addresses, IPv4 first.
func (p Pod) Addrs() []netip.Addr {
	var out []netip.Addr
	for _, a := range []netip.Addr{p.IP, p.IPv6} {
		if a.IsValid() {
			out = append(out, a)
		}
	}
	return out
}

// PodNS is the namespace name of pod j on node i.
func (l *Lab) PodNS(i, j int) string { return fmt.Sprintf("%s-n%d-p%d", l.opts.Name, i, j) }

// AddPod creates or converges pod j (0-based) on node i and cni0 from node i's subnet file.
func (l *Lab) AddPod(i, j int) (Pod, error) {
	return l.AddPodOn(i, j, l.SubnetEnvPath(i), "cni0")
}

// AddPodOn is AddPod behind bridge from subnetFile; pod indexes are per node, not bridge.
func (l *Lab) AddPodOn(i, j int, subnetFile, bridge string) (Pod, error) {
	ctx := context.Background()
	if _, err := l.node(i); err != nil {
		return Pod{}, err
	}
	if j < 0 {
		return Pod{}, fmt.Errorf("lab: pod index must be >= 0, got %d", j)
	}
	data, err := os.ReadFile(subnetFile)
	if err != nil {
		return Pod{}, fmt.Errorf("lab: %w", err)
	}
	env := ParseEnv(string(data))
	first, err := envSubnet(env, "FLANNEL_SUBNET", false)
	if err != nil {
		return Pod{}, fmt.Errorf("lab: node %d: %w", i, err)
	}
	first6, err := envSubnet(env, "FLANNEL_IPV6_SUBNET", true)
	if err != nil {
		return Pod{}, fmt.Errorf("lab: node %d: %w", i, err)
	}
	if !first.IsValid() && !first6.IsValid() {
		return Pod{}, fmt.Errorf("lab: node %d: subnet file has neither FLANNEL_SUBNET nor FLANNEL_IPV6_SUBNET", i)
	}
	mtu, err := strconv.Atoi(env["FLANNEL_MTU"])
	if err != nil || mtu < 576 || (first6.IsValid() && mtu < 1280) {
		return Pod{}, fmt.Errorf("lab: node %d: bad FLANNEL_MTU %q", i, env["FLANNEL_MTU"])
	}
	pod := Pod{Node: i, Index: j, NS: l.PodNS(i, j), MTU: mtu}
	var bridgeAddrs []netip.Prefix
	if first.IsValid() {
		podIP := addrPlus(first.Masked().Addr(), uint32(j+2))
		// The last address of the subnet is its broadcast.
		if !first.Masked().Contains(podIP) || !first.Masked().Contains(addrPlus(podIP, 1)) {
			return Pod{}, fmt.Errorf("lab: pod %d does not fit in %s", j, first.Masked())
		}
		pod.IP, pod.Prefix, pod.Gateway = podIP, netip.PrefixFrom(podIP, first.Bits()), first.Addr()
		bridgeAddrs = append(bridgeAddrs, first)
	}
	if first6.IsValid() {
		podIP := addrPlus(first6.Masked().Addr(), uint32(j+2))
		if !first6.Masked().Contains(podIP) {
			return Pod{}, fmt.Errorf("lab: pod %d does not fit in %s", j, first6.Masked())
		}
		pod.IPv6, pod.IPv6Prefix, pod.IPv6Gateway = podIP, netip.PrefixFrom(podIP, first6.Bits()), first6.Addr()
		bridgeAddrs = append(bridgeAddrs, first6)
	}

	nodeNS := l.NodeNS(i)
	if err := ensureBridge(ctx, nodeNS, bridge, bridgeAddrs, mtu); err != nil {
		return Pod{}, fmt.Errorf("lab: node %d: %w", i, err)
	}
	hostVeth := fmt.Sprintf("vethp%d", j)
	// Namespace deletion is asynchronous; deleting our end frees the pair at once.
	if _, err := ipn(ctx, nodeNS, "link", "del", hostVeth); err != nil && !isNotFound(err) {
		return Pod{}, fmt.Errorf("lab: %w", err)
	}
	if err := deleteNamespaces(ctx, []string{pod.NS}); err != nil {
		return Pod{}, err
	}
	if err := addNamespace(ctx, pod.NS); err != nil {
		return Pod{}, err
	}
	if pod.IPv6.IsValid() {
		if err := setIPv6Defaults(ctx, pod.NS); err != nil {
			return Pod{}, fmt.Errorf("lab: pod %d on node %d: %w", j, i, err)
		}
	}
	m := strconv.Itoa(mtu)
	steps := []ipStep{
		{pod.NS, []string{"link", "set", "lo", "up"}},
		{pod.NS, []string{"link", "add", "eth0", "mtu", m, "type", "veth", "peer", "name", hostVeth, "mtu", m, "netns", nodeNS}},
		{nodeNS, []string{"link", "set", hostVeth, "master", bridge}},
		{nodeNS, []string{"link", "set", hostVeth, "up"}},
	}
	if pod.IP.IsValid() {
		steps = append(steps, ipStep{pod.NS, []string{"addr", "add", pod.Prefix.String(), "dev", "eth0"}})
	}
	if pod.IPv6.IsValid() {
		steps = append(steps, ipStep{pod.NS, addr6(pod.IPv6, pod.IPv6Prefix, "eth0")})
	}
	steps = append(steps, ipStep{pod.NS, []string{"link", "set", "eth0", "up"}})
	if pod.IP.IsValid() {
		steps = append(steps, ipStep{pod.NS, []string{"route", "add", "default", "via", pod.Gateway.String(), "dev", "eth0"}})
	}
	if pod.IPv6.IsValid() {
		steps = append(steps, ipStep{pod.NS, []string{"-6", "route", "add", "default", "via", pod.IPv6Gateway.String(), "dev", "eth0"}})
	}
	if err := runIPSteps(ctx, steps); err != nil {
		return Pod{}, fmt.Errorf("lab: pod %d on node %d: %w", j, i, err)
	}
	l.mu.Lock()
	l.pods[[2]int{i, j}] = pod
	l.mu.Unlock()
	return pod, nil
}

// envSubnet reads a subnet value; a missing key is the zero Prefix.
func envSubnet(env map[string]string, key string, v6 bool) (netip.Prefix, error) {
	v, ok := env[key]
	if !ok {
		return netip.Prefix{}, nil
	}
	p, err := netip.ParsePrefix(v)
	if err != nil || p.Addr().Is6() != v6 || p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("bad %s %q", key, v)
	}
	return p, nil
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

func addrPlus(a netip.Addr, n uint32) netip.Addr {
	b := a.AsSlice()
	carry := uint64(n)
	for k := len(b) - 1; k >= 0 && carry > 0; k-- {
		v := uint64(b[k]) + carry&0xff
		b[k], carry = byte(v), carry>>8+v>>8
	}
	r, _ := netip.AddrFromSlice(b)
	return r
}

// ensureBridge converges bridge name in ns: up, MTU mtu, exactly addrs as its addresses.
func ensureBridge(ctx context.Context, ns, name string, addrs []netip.Prefix, mtu int) error {
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
	have := map[netip.Prefix]bool{}
	for _, a := range link.Addrs {
		if a.Family != "inet" && (a.Family != "inet6" || a.Scope == "link") {
			continue
		}
		p := fmt.Sprintf("%s/%d", a.Local, a.PrefixLen)
		if pp, err := netip.ParsePrefix(p); err == nil && slices.Contains(addrs, pp) {
			have[pp] = true
			continue
		}
		if _, err := ipn(ctx, ns, "addr", "del", p, "dev", name); err != nil {
			return err
		}
	}
	for _, p := range addrs {
		if have[p] {
			continue
		}
		args := []string{"addr", "add", p.String(), "dev", name}
		if p.Addr().Is6() {
			args = append(args, "nodad")
		}
		if _, err := ipn(ctx, ns, args...); err != nil {
			return err
		}
	}
	_, err = ipn(ctx, ns, "link", "set", name, "up")
	return err
}

// Exec runs a command in ns within 60 s and returns its stdout; errors carry its stderr.
func (l *Lab) Exec(ns string, cmd ...string) (string, error) {
	return nsExec(context.Background(), ns, cmd...)
}

// DefaultPingTimeout is how long Ping keeps retrying.
const DefaultPingTimeout = 30 * time.Second

// Ping pings to from fromNS, retrying until a round succeeds or DefaultPingTimeout passes.
func (l *Lab) Ping(fromNS string, to netip.Addr) error {
	_, err := l.PingRTT(fromNS, to, DefaultPingTimeout)
	return err
}

var rttRE = regexp.MustCompile(`= ([0-9.]+)/([0-9.]+)/([0-9.]+)/([0-9.]+) ms`)

// PingRTT is Ping with a deadline, returning the first good round's average RTT.
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

// Route is one route of the main table (Routes: IPv4, Routes6: IPv6).
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

// Neigh is one neighbour entry (Neighs: IPv4 ARP, Neighs6: IPv6 neighbour discovery).
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
	Local    string `json:"local"` // the source address, IPv4 or IPv6
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

// IPv6Addrs lists the link's IPv6 addresses other than link-local ones as "addr/len".
func (k Link) IPv6Addrs() []string {
	var out []string
	for _, a := range k.Addrs {
		if a.Family == "inet6" && a.Scope != "link" {
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
func Routes(ctx context.Context, ns string) ([]Route, error) { return routes(ctx, ns, "-4") }

// Routes6 lists the IPv6 routes of ns's main table.
func Routes6(ctx context.Context, ns string) ([]Route, error) { return routes(ctx, ns, "-6") }

func routes(ctx context.Context, ns, family string) ([]Route, error) {
	var rs []Route
	err := ipJSON(ctx, &rs, "ip", "-n", ns, "-j", family, "route", "show")
	return rs, err
}

// Neighs lists the IPv4 neighbour entries in ns.
func Neighs(ctx context.Context, ns string) ([]Neigh, error) { return neighs(ctx, ns, "-4") }

// Neighs6 lists the IPv6 neighbour entries in ns.
func Neighs6(ctx context.Context, ns string) ([]Neigh, error) { return neighs(ctx, ns, "-6") }

func neighs(ctx context.Context, ns, family string) ([]Neigh, error) {
	var out []Neigh
	err := ipJSON(ctx, &out, "ip", "-n", ns, "-j", family, "neigh", "show")
	return out, err
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
		var v struct {
			VXLANInfo
			Local6 string `json:"local6"` // how ip -j names an IPv6 source
		}
		if err := json.Unmarshal(k.LinkInfo.Data, &v); err != nil {
			return fmt.Errorf("lab: vxlan details of %s: %w", k.Name, err)
		}
		if v.Local == "" {
			v.Local = v.Local6
		}
		k.VXLAN = &v.VXLANInfo
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

// Describe dumps ns's devices, routes, neighbours and FDB for failure messages.
func Describe(ctx context.Context, ns string) string {
	var b strings.Builder
	for _, c := range [][]string{
		{"ip", "-n", ns, "-d", "-br", "addr", "show"},
		{"ip", "-n", ns, "-d", "link", "show", "type", "vxlan"},
		{"ip", "-n", ns, "-4", "route", "show"},
		{"ip", "-n", ns, "-4", "neigh", "show"},
		{"ip", "-n", ns, "-6", "route", "show"},
		{"ip", "-n", ns, "-6", "neigh", "show"},
		{"bridge", "-n", ns, "fdb", "show", "nomaster"},
	} {
		out, err := run(ctx, c[0], c[1:]...)
		if c[3] == "-6" {
			out = withoutLinkLocal(out)
		}
		fmt.Fprintf(&b, "$ %s\n%s", strings.Join(c, " "), out)
		if err != nil {
			fmt.Fprintf(&b, "(%v)\n", err)
		}
	}
	return b.String()
}

func withoutLinkLocal(out string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(out, "\n") {
		if !strings.HasPrefix(line, "fe80:") {
			b.WriteString(line)
		}
	}
	return b.String()
}
