package subnetenv

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Contents is the parsed subnet file as the CNI plugin uses it, needing a network and a
// subnet of either family, as upstream's consumers do.
type Contents struct {
	Networks     []netip.Prefix // FLANNEL_NETWORK: IPv4, masked, in file order, duplicates dropped
	Subnet       netip.Prefix   // FLANNEL_SUBNET masked (the file holds the gateway form 10.5.85.1/24)
	IPv6Networks []netip.Prefix // FLANNEL_IPV6_NETWORK, like Networks
	IPv6Subnet   netip.Prefix   // FLANNEL_IPV6_SUBNET masked
	MTU          uint32         // FLANNEL_MTU
	IPMasq       bool           // FLANNEL_IPMASQ: exactly "true" is true, anything else false
}

// IncompleteError lists the missing keys in upstream's order ("A, B": neither is present).
type IncompleteError struct {
	Path    string // "" when parsed from memory
	Missing []string
}

func (e *IncompleteError) Error() string {
	name := e.Path
	if name == "" {
		name = "subnet file"
	}
	return name + " is missing " + strings.Join(e.Missing, ", ")
}

// LoadContents reads and parses path; a read error is returned unchanged.
func LoadContents(path string) (Contents, error) {
	vals, err := Read(path)
	if err != nil {
		return Contents{}, err
	}
	c, err := contentsOf(vals)
	if ie, ok := err.(*IncompleteError); ok {
		ie.Path = path
	}
	return c, err
}

// ParseContents parses subnet file content; missing values give an *IncompleteError.
func ParseContents(data []byte) (Contents, error) {
	return contentsOf(Parse(data))
}

func contentsOf(vals map[string]string) (Contents, error) {
	var c Contents
	var err error
	if c.Networks, err = prefixList(vals, "FLANNEL_NETWORK", true); err != nil {
		return Contents{}, err
	}
	if c.IPv6Networks, err = prefixList(vals, "FLANNEL_IPV6_NETWORK", false); err != nil {
		return Contents{}, err
	}
	if c.Subnet, err = onePrefix(vals, "FLANNEL_SUBNET", true); err != nil {
		return Contents{}, err
	}
	if c.IPv6Subnet, err = onePrefix(vals, "FLANNEL_IPV6_SUBNET", false); err != nil {
		return Contents{}, err
	}
	mtu, hasMTU := vals["FLANNEL_MTU"]
	if hasMTU {
		v, err := strconv.ParseUint(mtu, 10, 32)
		if err != nil {
			return Contents{}, fmt.Errorf("FLANNEL_MTU: invalid value %q: want an unsigned integer", mtu)
		}
		c.MTU = uint32(v)
	}
	masq, hasMasq := vals["FLANNEL_IPMASQ"]
	c.IPMasq = masq == "true"

	var missing []string
	if len(c.Networks) == 0 && len(c.IPv6Networks) == 0 {
		missing = append(missing, "FLANNEL_NETWORK", "FLANNEL_IPV6_NETWORK")
	}
	if !c.Subnet.IsValid() && !c.IPv6Subnet.IsValid() {
		missing = append(missing, "FLANNEL_SUBNET", "FLANNEL_IPV6_SUBNET")
	}
	if !hasMTU {
		missing = append(missing, "FLANNEL_MTU")
	}
	if !hasMasq {
		missing = append(missing, "FLANNEL_IPMASQ")
	}
	if len(missing) > 0 {
		return Contents{}, &IncompleteError{Missing: missing}
	}
	return c, nil
}

func prefixList(vals map[string]string, key string, want4 bool) ([]netip.Prefix, error) {
	v, ok := vals[key]
	if !ok {
		return nil, nil
	}
	var out []netip.Prefix
	for item := range strings.SplitSeq(v, ",") {
		p, err := parseCIDR(key, item, want4)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

func onePrefix(vals map[string]string, key string, want4 bool) (netip.Prefix, error) {
	v, ok := vals[key]
	if !ok {
		return netip.Prefix{}, nil
	}
	return parseCIDR(key, v, want4)
}

func parseCIDR(key, s string, want4 bool) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%s: invalid CIDR address: %s", key, s)
	}
	if p.Addr().Is4() != want4 || p.Addr().Is4In6() {
		family := "IPv6"
		if want4 {
			family = "IPv4"
		}
		return netip.Prefix{}, fmt.Errorf("%s: %s is not an %s prefix", key, s, family)
	}
	return p.Masked(), nil
}
