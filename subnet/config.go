// Package subnet holds flannel's lease model: the network configuration, the lease
// and its JSON, subnet keys, lease events, and the Manager interface that the etcd and
// Kubernetes subnet managers implement.
package subnet

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/flannel-go/flannel/pkg/ip"
)

// Config is the network configuration (the JSON at <prefix>/config or net-conf.json),
// with defaults filled in by Validate.
type Config struct {
	EnableIPv4     bool
	EnableIPv6     bool
	EnableNFTables bool
	Network        netip.Prefix
	SubnetMin      netip.Addr
	SubnetMax      netip.Addr
	SubnetLen      int
	IPv6Network    netip.Prefix
	IPv6SubnetMin  netip.Addr
	IPv6SubnetMax  netip.Addr
	IPv6SubnetLen  int
	// BackendType is the lower-cased Backend.Type ("udp" when Backend is absent, as upstream).
	BackendType string
	// Backend is the raw Backend object, handed to the backend to parse its own keys.
	Backend json.RawMessage
}

// DefaultBackendType is what upstream uses when the config has no Backend object.
const DefaultBackendType = "udp"

// rawConfig mirrors the JSON; encoding/json matches keys case-insensitively, as upstream.
type rawConfig struct {
	EnableIPv4     *bool
	EnableIPv6     bool
	EnableNFTables bool
	Network        string
	SubnetMin      string
	SubnetMax      string
	SubnetLen      int
	IPv6Network    string
	IPv6SubnetMin  string
	IPv6SubnetMax  string
	IPv6SubnetLen  int
	Backend        json.RawMessage
}

// ParseConfig decodes the network configuration and validates it, filling in defaults.
// All problems found are returned together (errors.Join), each with upstream's message.
func ParseConfig(s string) (*Config, error) {
	cfg, err := DecodeConfig(s)
	if err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// DecodeConfig parses the JSON only: no range checks or defaults for subnets
// (upstream's kube mode works this way). Syntax and type errors of every field are reported.
func DecodeConfig(s string) (*Config, error) {
	var raw rawConfig
	dec := json.NewDecoder(strings.NewReader(s))
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("invalid network config JSON: %w", err)
	}
	cfg := &Config{
		EnableIPv4:     raw.EnableIPv4 == nil || *raw.EnableIPv4,
		EnableIPv6:     raw.EnableIPv6,
		EnableNFTables: raw.EnableNFTables,
		SubnetLen:      raw.SubnetLen,
		IPv6SubnetLen:  raw.IPv6SubnetLen,
		Backend:        raw.Backend,
	}
	var errs []error
	parsePrefix := func(s string, v6 bool, dst *netip.Prefix) {
		if s == "" {
			return
		}
		p, err := netip.ParsePrefix(s)
		if err != nil || p.Addr().Is4() == v6 || p.Addr().Zone() != "" {
			if v6 {
				errs = append(errs, fmt.Errorf("invalid IPv6 CIDR format: %q", s))
			} else {
				errs = append(errs, fmt.Errorf("invalid IPv4 CIDR format: %q", s))
			}
			return
		}
		*dst = p.Masked()
	}
	parseAddr := func(name, s string, v6 bool, dst *netip.Addr) {
		if s == "" {
			return
		}
		a, err := netip.ParseAddr(s)
		if err != nil || a.Is4() == v6 || a.Is4In6() {
			errs = append(errs, fmt.Errorf("%s: invalid IP address %q", name, s))
			return
		}
		*dst = a
	}
	parsePrefix(raw.Network, false, &cfg.Network)
	parseAddr("SubnetMin", raw.SubnetMin, false, &cfg.SubnetMin)
	parseAddr("SubnetMax", raw.SubnetMax, false, &cfg.SubnetMax)
	parsePrefix(raw.IPv6Network, true, &cfg.IPv6Network)
	parseAddr("IPv6SubnetMin", raw.IPv6SubnetMin, true, &cfg.IPv6SubnetMin)
	parseAddr("IPv6SubnetMax", raw.IPv6SubnetMax, true, &cfg.IPv6SubnetMax)

	bt, err := backendType(raw.Backend)
	if err != nil {
		errs = append(errs, err)
	}
	cfg.BackendType = bt
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return cfg, nil
}

func backendType(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return DefaultBackendType, nil
	}
	var b struct{ Type string }
	if err := json.Unmarshal(raw, &b); err != nil {
		return "", fmt.Errorf("error decoding Backend property of config: %v", err)
	}
	if b.Type == "" {
		return "", errors.New("unknown backend type: ")
	}
	return strings.ToLower(b.Type), nil
}

// Validate checks each enabled family with upstream's rules and messages
// (CheckNetworkConfig) and fills in SubnetLen/SubnetMin/SubnetMax defaults.
func (c *Config) Validate() error {
	var errs []error
	if !c.EnableIPv4 && !c.EnableIPv6 {
		errs = append(errs, errors.New("none defined stack: EnableIPv4 and EnableIPv6 are both false"))
	}
	if c.EnableIPv4 {
		errs = append(errs, validateFamily(family{
			network: &c.Network, min: &c.SubnetMin, max: &c.SubnetMax, subnetLen: &c.SubnetLen,
			maxSubnetLen: 30, minUsefulPrefix: 28, defaultLen: 24,
			msgNetwork:  "please define a correct Network parameter in the flannel config",
			msgLenLimit: "SubnetLen must be less than /31",
			msgTooSmall: "network is too small. Minimum useful network prefix is /28",
			nameMin:     "SubnetMin", nameMax: "SubnetMax", nameNetwork: "Network",
		})...)
	}
	if c.EnableIPv6 {
		errs = append(errs, validateFamily(family{
			network: &c.IPv6Network, min: &c.IPv6SubnetMin, max: &c.IPv6SubnetMax, subnetLen: &c.IPv6SubnetLen,
			maxSubnetLen: 126, minUsefulPrefix: 124, defaultLen: 64,
			msgNetwork:  "please define a correct IPv6Network parameter in the flannel config",
			msgLenLimit: "SubnetLen must be less than /127",
			msgTooSmall: "IPv6Network is too small. Minimum useful network prefix is /124",
			nameMin:     "IPv6SubnetMin", nameMax: "IPv6SubnetMax", nameNetwork: "IPv6Network",
		})...)
	}
	return errors.Join(errs...)
}

type family struct {
	network                              *netip.Prefix
	min, max                             *netip.Addr
	subnetLen                            *int
	maxSubnetLen, minUsefulPrefix        int
	defaultLen                           int
	msgNetwork, msgLenLimit, msgTooSmall string
	nameMin, nameMax, nameNetwork        string
}

func validateFamily(f family) []error {
	if !f.network.IsValid() {
		return []error{errors.New(f.msgNetwork)}
	}
	var errs []error
	netLen := f.network.Bits()
	lenOK := true
	if *f.subnetLen != 0 {
		if *f.subnetLen > f.maxSubnetLen {
			errs = append(errs, errors.New(f.msgLenLimit))
			lenOK = false
		} else if *f.subnetLen < netLen+2 {
			errs = append(errs, errors.New("network must be able to accommodate at least four subnets"))
			lenOK = false
		}
	} else if netLen > f.minUsefulPrefix {
		errs = append(errs, errors.New(f.msgTooSmall))
		lenOK = false
	} else if netLen <= f.defaultLen-2 {
		*f.subnetLen = f.defaultLen
	} else {
		*f.subnetLen = netLen + 2
	}

	check := func(a *netip.Addr, name string, dflt func() netip.Addr) {
		if !a.IsValid() {
			if lenOK {
				*a = dflt()
			}
			return
		}
		if !f.network.Contains(*a) {
			errs = append(errs, fmt.Errorf("%s is not in the range of the %s", name, f.nameNetwork))
			return
		}
		if lenOK && !ip.OnBoundary(*a, *f.subnetLen) {
			errs = append(errs, fmt.Errorf("%s is not on a SubnetLen boundary: %v", name, *a))
		}
	}
	check(f.min, f.nameMin, func() netip.Addr {
		a, _ := ip.AddSubnets(f.network.Addr(), *f.subnetLen, 1)
		return a
	})
	check(f.max, f.nameMax, func() netip.Addr {
		return ip.LastSubnet(*f.network, *f.subnetLen).Addr()
	})
	return errs
}

// SubnetFits reports whether a v4 lease subnet is compatible with the config:
// the right length and between SubnetMin and SubnetMax.
func (c *Config) SubnetFits(sn netip.Prefix) bool {
	return sn.IsValid() && sn.Addr().Is4() && sn.Bits() == c.SubnetLen &&
		c.SubnetMin.Compare(sn.Addr()) <= 0 && sn.Addr().Compare(c.SubnetMax) <= 0
}

// IPv6SubnetFits is SubnetFits for the IPv6 family.
func (c *Config) IPv6SubnetFits(sn netip.Prefix) bool {
	return sn.IsValid() && sn.Addr().Is6() && sn.Bits() == c.IPv6SubnetLen &&
		c.IPv6SubnetMin.Compare(sn.Addr()) <= 0 && sn.Addr().Compare(c.IPv6SubnetMax) <= 0
}
