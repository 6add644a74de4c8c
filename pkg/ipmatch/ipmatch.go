// Package ipmatch picks the node's external interface and addresses from --iface, --iface-regex,
// --iface-can-reach, --public-ip(v6) and the default routes, in the calling thread's namespace.
package ipmatch

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// Options are the inputs of the interface selection.
type Options struct {
	Ifaces        []string // --iface, in order: interface names or IP addresses
	IfaceRegexes  []string // --iface-regex, in order: matched against addresses, then names
	IfaceCanReach string   // --iface-can-reach: an IP address the interface must route to
	PublicIP      string   // --public-ip
	PublicIPv6    string   // --public-ipv6
	EnableIPv4    bool     // from the network config
	EnableIPv6    bool
}

// Interface is the selected external interface and the addresses on it.
type Interface struct {
	Iface       *net.Interface
	IfaceAddr   netip.Addr // IPv4 address on Iface (zero unless IPv4 is enabled)
	IfaceV6Addr netip.Addr // IPv6 address on Iface (zero unless IPv6 is enabled)
	ExtAddr     netip.Addr // IPv4 address peers use to reach the node (--public-ip or IfaceAddr)
	ExtV6Addr   netip.Addr // IPv6 address peers use to reach the node (--public-ipv6 or IfaceV6Addr)
}

var errNoMatch = errors.New("Failed to find interface to use that matches the interfaces and/or regexes provided")

// LookupExtIface selects the external interface: without selectors the public IP's, else the
// default route's; with them the first usable of each --iface, --iface-regex, --iface-can-reach.
func LookupExtIface(opts Options) (*Interface, error) {
	return lookup(netlinkKernel{}, opts)
}

type linkInfo struct {
	Index        int
	Name         string
	MTU          int
	HardwareAddr net.HardwareAddr
	Flags        net.Flags
	Addrs        []addrInfo
}

// addrInfo is one address with its IFA_F_* flags.
type addrInfo struct {
	Addr  netip.Addr
	Flags int
}

type routeInfo struct {
	Default   bool // destination 0.0.0.0/0 or ::/0
	Unicast   bool // a route that forwards traffic (not blackhole, unreachable, ...)
	LinkIndex int  // outgoing link (first next hop for multipath routes)
	Src       netip.Addr
	Priority  int
}

// kernel reads the network state the selection works on.
type kernel interface {
	// links returns all links with their addresses, ordered by index.
	links() ([]linkInfo, error)
	// routes returns the main-table routes of a family (unix.AF_INET or unix.AF_INET6).
	routes(family int) ([]routeInfo, error)
	routeTo(dst netip.Addr) (routeInfo, error)
}

// candidate is an interface picked by a selector, with the addresses the selector fixed.
type candidate struct {
	link *linkInfo
	v4   netip.Addr
	v6   netip.Addr
}

func lookup(k kernel, opts Options) (*Interface, error) {
	if !opts.EnableIPv4 && !opts.EnableIPv6 {
		return nil, errors.New("none defined stack: neither IPv4 nor IPv6 is enabled")
	}
	var pub4, pub6 netip.Addr
	if opts.PublicIP != "" {
		a, err := netip.ParseAddr(opts.PublicIP)
		if err != nil || !a.Is4() {
			return nil, fmt.Errorf("invalid public IP address: %s", opts.PublicIP)
		}
		pub4 = a
	}
	if opts.PublicIPv6 != "" {
		a, err := netip.ParseAddr(opts.PublicIPv6)
		if err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" {
			return nil, fmt.Errorf("invalid public IPv6 address: %s", opts.PublicIPv6)
		}
		pub6 = a
	}
	regexes := make([]*regexp.Regexp, 0, len(opts.IfaceRegexes))
	for _, s := range opts.IfaceRegexes {
		re, err := regexp.Compile(s)
		if err != nil {
			return nil, fmt.Errorf("invalid --iface-regex %q: %w", s, err)
		}
		regexes = append(regexes, re)
	}
	var reach netip.Addr
	if opts.IfaceCanReach != "" {
		a, err := netip.ParseAddr(opts.IfaceCanReach)
		if err != nil {
			return nil, fmt.Errorf("invalid --iface-can-reach address: %s", opts.IfaceCanReach)
		}
		reach = a
	}

	links, err := k.links()
	if err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	finish := func(c candidate) (*Interface, error) {
		return complete(c, opts, pub4, pub6)
	}

	if len(opts.Ifaces) == 0 && len(opts.IfaceRegexes) == 0 && opts.IfaceCanReach == "" {
		c, err := defaultCandidate(k, links, opts, pub4, pub6)
		if err == nil {
			var ext *Interface
			if ext, err = finish(c); err == nil {
				return ext, nil
			}
		}
		return nil, fmt.Errorf("Failed to find any valid interface to use: %w", err)
	}

	for _, s := range opts.Ifaces {
		c, err := byIface(links, s)
		if err == nil {
			var ext *Interface
			if ext, err = finish(c); err == nil {
				return ext, nil
			}
		}
		klog.InfoS("Could not find valid interface matching --iface", "iface", s, "err", err)
	}

	for _, re := range regexes {
		for _, c := range byRegex(links, re, opts) {
			ext, err := finish(c)
			if err == nil {
				return ext, nil
			}
			klog.InfoS("Interface matching --iface-regex is not usable", "regex", re.String(), "iface", c.link.Name, "err", err)
		}
		klog.InfoS("Could not find valid interface matching --iface-regex", "regex", re.String())
	}

	if reach.IsValid() {
		c, err := byRoute(k, links, reach)
		if err == nil {
			var ext *Interface
			if ext, err = finish(c); err == nil {
				return ext, nil
			}
		}
		klog.InfoS("Could not find valid interface for --iface-can-reach", "ip", reach.String(), "err", err)
	}
	return nil, fmt.Errorf("%w; the interfaces here are %s", errNoMatch, describeLinks(links))
}

// describeLinks names each link with its addresses, for the error that none matched.
func describeLinks(links []linkInfo) string {
	var b strings.Builder
	for i, l := range links {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(l.Name)
		if len(l.Addrs) == 0 {
			b.WriteString(" (no address)")
			continue
		}
		b.WriteString(" (")
		for j, a := range l.Addrs {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString(a.Addr.String())
		}
		b.WriteString(")")
	}
	return b.String()
}

// defaultCandidate is the interface owning the public IP, else the default route's.
func defaultCandidate(k kernel, links []linkInfo, opts Options, pub4, pub6 netip.Addr) (candidate, error) {
	var pub netip.Addr
	switch {
	case pub4.IsValid() && opts.EnableIPv4:
		pub = pub4
	case pub6.IsValid() && opts.EnableIPv6:
		pub = pub6
	}
	if pub.IsValid() {
		c, ok := byAddr(links, pub)
		if !ok {
			return candidate{}, fmt.Errorf("public IP %s is not an address of any local interface (without --iface, --iface-regex or --iface-can-reach the public IP selects the interface)", pub)
		}
		return c, nil
	}

	var v4Link, v6Link *linkInfo
	if opts.EnableIPv4 {
		l, err := defaultRouteLink(k, links, unix.AF_INET)
		if err != nil {
			return candidate{}, err
		}
		v4Link = l
	}
	if opts.EnableIPv6 {
		l, err := defaultRouteLink(k, links, unix.AF_INET6)
		if err != nil {
			return candidate{}, err
		}
		v6Link = l
	}
	switch {
	case v4Link != nil && v6Link != nil:
		if v4Link.Index != v6Link.Index {
			return candidate{}, fmt.Errorf("v6 default route interface %s must be the same with v4 default route interface %s", v6Link.Name, v4Link.Name)
		}
		return candidate{link: v4Link}, nil
	case v4Link != nil:
		return candidate{link: v4Link}, nil
	default:
		return candidate{link: v6Link}, nil
	}
}

// defaultRouteLink returns the outgoing link of the best (lowest metric) default route.
func defaultRouteLink(k kernel, links []linkInfo, family int) (*linkInfo, error) {
	name := "IPv4"
	if family == unix.AF_INET6 {
		name = "IPv6"
	}
	routes, err := k.routes(family)
	if err != nil {
		return nil, fmt.Errorf("listing %s routes: %w", name, err)
	}
	var best *routeInfo
	for i := range routes {
		r := &routes[i]
		if !r.Default || !r.Unicast || r.LinkIndex == 0 {
			continue
		}
		if best == nil || r.Priority < best.Priority {
			best = r
		}
	}
	if best == nil {
		return nil, fmt.Errorf("no %s default route found", name)
	}
	l := linkByIndex(links, best.LinkIndex)
	if l == nil {
		return nil, fmt.Errorf("%s default route uses unknown link index %d", name, best.LinkIndex)
	}
	return l, nil
}

// byIface resolves an --iface value: an address selects its owner, anything else is a name.
func byIface(links []linkInfo, s string) (candidate, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		c, ok := byAddr(links, a)
		if !ok {
			return candidate{}, fmt.Errorf("no interface with address %s", a)
		}
		return c, nil
	}
	for i := range links {
		if links[i].Name == s {
			return candidate{link: &links[i]}, nil
		}
	}
	return candidate{}, fmt.Errorf("no interface named %q", s)
}

// byAddr finds the link that has address a; a becomes that family's interface address.
func byAddr(links []linkInfo, a netip.Addr) (candidate, bool) {
	a = a.Unmap()
	for i := range links {
		for _, ad := range links[i].Addrs {
			if ad.Addr.WithZone("") == a.WithZone("") {
				c := candidate{link: &links[i]}
				if a.Is4() {
					c.v4 = a
				} else {
					c.v6 = a
				}
				return c, true
			}
		}
	}
	return candidate{}, false
}

// byRegex lists re's interfaces, best first: matching usable addresses, then matching names.
func byRegex(links []linkInfo, re *regexp.Regexp, opts Options) []candidate {
	var out []candidate
	match := func(l *linkInfo, v6 bool) netip.Addr {
		for _, a := range usableAddrs(l, v6) {
			if re.MatchString(a.String()) {
				return a
			}
		}
		return netip.Addr{}
	}
	for i := range links {
		l := &links[i]
		c := candidate{link: l}
		if opts.EnableIPv4 {
			if c.v4 = match(l, false); !c.v4.IsValid() {
				continue
			}
		}
		if opts.EnableIPv6 {
			if c.v6 = match(l, true); !c.v6.IsValid() {
				continue
			}
		}
		out = append(out, c)
	}
	for i := range links {
		if re.MatchString(links[i].Name) {
			out = append(out, candidate{link: &links[i]})
		}
	}
	return out
}

// byRoute picks the interface the kernel routes dst through, with the route's source address.
func byRoute(k kernel, links []linkInfo, dst netip.Addr) (candidate, error) {
	r, err := k.routeTo(dst)
	if err != nil {
		return candidate{}, fmt.Errorf("looking up the route to %s: %w", dst, err)
	}
	l := linkByIndex(links, r.LinkIndex)
	if l == nil {
		return candidate{}, fmt.Errorf("route to %s uses no known link (index %d)", dst, r.LinkIndex)
	}
	c := candidate{link: l}
	if src := r.Src.Unmap(); src.IsValid() {
		if src.Is4() {
			c.v4 = src
		} else {
			c.v6 = src
		}
	}
	return c, nil
}

func linkByIndex(links []linkInfo, idx int) *linkInfo {
	for i := range links {
		if links[i].Index == idx {
			return &links[i]
		}
	}
	return nil
}

// complete fills in the unfixed addresses, checks the MTU and computes the external ones.
func complete(c candidate, opts Options, pub4, pub6 netip.Addr) (*Interface, error) {
	l := c.link
	ext := &Interface{
		Iface: &net.Interface{Index: l.Index, MTU: l.MTU, Name: l.Name, HardwareAddr: l.HardwareAddr, Flags: l.Flags},
	}
	var err error
	if opts.EnableIPv4 {
		if ext.IfaceAddr, err = ifaceAddr(l, c.v4, false); err != nil {
			return nil, err
		}
	}
	if opts.EnableIPv6 {
		if ext.IfaceV6Addr, err = ifaceAddr(l, c.v6, true); err != nil {
			return nil, err
		}
	}
	if l.MTU == 0 {
		return nil, fmt.Errorf("failed to determine MTU for %s interface", l.Name)
	}

	if opts.EnableIPv4 {
		klog.InfoS(fmt.Sprintf("Using interface with name %s and address %s", l.Name, ext.IfaceAddr), "iface", l.Name, "address", ext.IfaceAddr.String())
		if pub4.IsValid() {
			ext.ExtAddr = pub4
		} else {
			klog.InfoS(fmt.Sprintf("Defaulting external address to interface address (%s)", ext.IfaceAddr), "address", ext.IfaceAddr.String())
			ext.ExtAddr = ext.IfaceAddr
		}
	}
	if opts.EnableIPv6 {
		klog.InfoS(fmt.Sprintf("Using interface with name %s and v6 address %s", l.Name, ext.IfaceV6Addr), "iface", l.Name, "address", ext.IfaceV6Addr.String())
		if pub6.IsValid() {
			ext.ExtV6Addr = pub6
		} else {
			klog.InfoS(fmt.Sprintf("Defaulting external v6 address to interface address (%s)", ext.IfaceV6Addr), "address", ext.IfaceV6Addr.String())
			ext.ExtV6Addr = ext.IfaceV6Addr
		}
	}
	return ext, nil
}

// ifaceAddr is the selector's address for one family, else the link's first usable one.
func ifaceAddr(l *linkInfo, chosen netip.Addr, v6 bool) (netip.Addr, error) {
	if chosen.IsValid() {
		return chosen, nil
	}
	if as := usableAddrs(l, v6); len(as) > 0 {
		return as[0], nil
	}
	fam := "IPv4"
	if v6 {
		fam = "IPv6"
	}
	return netip.Addr{}, fmt.Errorf("failed to find %s address for interface %s", fam, l.Name)
}

// usableAddrs returns the link's usable addresses of one family, best first: global, permanent,
// non-temporary (else kernel order); deprecated, tentative and DAD-failed ones are unusable.
func usableAddrs(l *linkInfo, v6 bool) []netip.Addr {
	type ranked struct {
		a    netip.Addr
		rank int
	}
	var rs []ranked
	for _, ad := range l.Addrs {
		a := ad.Addr
		if !a.IsValid() || a.Is4In6() || a.Is6() != v6 {
			continue
		}
		if !a.IsGlobalUnicast() && !a.IsLinkLocalUnicast() {
			continue
		}
		if ad.Flags&(unix.IFA_F_DEPRECATED|unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0 {
			continue
		}
		rank := 0
		if a.IsLinkLocalUnicast() {
			rank += 4
		}
		if ad.Flags&unix.IFA_F_PERMANENT == 0 {
			rank += 2
		}
		if ad.Flags&unix.IFA_F_TEMPORARY != 0 { // same bit as IFA_F_SECONDARY for IPv4
			rank++
		}
		rs = append(rs, ranked{a.WithZone(""), rank})
	}
	slices.SortStableFunc(rs, func(x, y ranked) int { return x.rank - y.rank })
	out := make([]netip.Addr, len(rs))
	for i, r := range rs {
		out[i] = r.a
	}
	return out
}
