package lab

import (
	"fmt"
	"net/netip"
)

// Pod networks of the configurations NetConfig writes.
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

// NetConfig returns a network config over the pod networks stack enables, with backend (a
// JSON object) as its Backend; IPv6 needs Options.IPv6.
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
