package lab

import (
	"fmt"
	"net/netip"
)

// Pod networks of the configurations NetConfig writes. The IPv6 one is a documentation
// range apart from the underlay's (2001:db8::/64); its default subnets are /64s.
var (
	PodNetwork     = netip.MustParsePrefix("10.5.0.0/16")
	PodNetworkIPv6 = netip.MustParsePrefix("2001:db8:1000::/56")
)

// Stack says which address families a network configuration enables.
type Stack int

const (
	IPv4Only Stack = iota
	DualStack
	IPv6Only
)

func (s Stack) String() string {
	switch s {
	case IPv4Only:
		return "ipv4"
	case DualStack:
		return "dual"
	case IPv6Only:
		return "ipv6"
	}
	return fmt.Sprintf("Stack(%d)", int(s))
}

// NetConfig returns a network configuration (the JSON of <prefix>/config, or
// net-conf.json in Kubernetes mode) over PodNetwork and/or PodNetworkIPv6 as stack says,
// with backend (a JSON object) as its Backend. NetConfig(DualStack, `{"Type":"vxlan"}`) is
//
//	{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:1000::/56","Backend":{"Type":"vxlan"}}
//
// An IPv6 stack needs a lab with Options.IPv6.
func NetConfig(stack Stack, backend string) string {
	v4 := fmt.Sprintf(`"Network":%q`, PodNetwork)
	v6 := fmt.Sprintf(`"EnableIPv6":true,"IPv6Network":%q`, PodNetworkIPv6)
	var families string
	switch stack {
	case DualStack:
		families = v4 + "," + v6
	case IPv6Only:
		families = `"EnableIPv4":false,` + v6
	default:
		families = v4
	}
	return fmt.Sprintf(`{%s,"Backend":%s}`, families, backend)
}
