// Package subnet holds flannel's lease model (network config, leases and their JSON, subnet
// keys, events) and the Manager interface the etcd and Kubernetes managers implement.
package subnet

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/flannel-go/flannel/pkg/configkeys"
	"github.com/flannel-go/flannel/pkg/ip"
)

// Config is the network config (<prefix>/config or net-conf.json), defaults filled in.
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
	// Warnings are the top-level keys without effect: unknown (with a likely spelling) or repeated.
	Warnings []configkeys.Warning
	// Raw is the config's text as read, for ChangedKeys.
	Raw string
}

// DefaultBackendType is what upstream uses when the config has no Backend object.
const DefaultBackendType = "udp"

// ConfigError lists every problem of an unusable config, with what could be read of it.
type ConfigError struct {
	// Problems are the problems found, in upstream's words where upstream has them.
	Problems []error
	// Warnings are the top-level keys that have no effect, as Config.Warnings.
	Warnings []configkeys.Warning
	// BackendType and Backend are as in Config when they could be read ("" and nil otherwise).
	BackendType string
	Backend     json.RawMessage
}

// Error joins the problems with "; ", on one line.
func (e *ConfigError) Error() string {
	msgs := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		msgs[i] = p.Error()
	}
	return strings.Join(msgs, "; ")
}

// Unwrap returns the problems.
func (e *ConfigError) Unwrap() []error { return e.Problems }

// rawConfig receives the top-level keys (case-insensitively, as upstream's decoding).
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

func (r *rawConfig) object() configkeys.Object {
	return configkeys.Object{Fields: []configkeys.Field{
		{Name: "EnableIPv4", Into: &r.EnableIPv4},
		{Name: "EnableIPv6", Into: &r.EnableIPv6},
		{Name: "EnableNFTables", Into: &r.EnableNFTables},
		{Name: "Network", Into: &r.Network},
		{Name: "SubnetMin", Into: &r.SubnetMin},
		{Name: "SubnetMax", Into: &r.SubnetMax},
		{Name: "SubnetLen", Into: &r.SubnetLen},
		{Name: "IPv6Network", Into: &r.IPv6Network},
		{Name: "IPv6SubnetMin", Into: &r.IPv6SubnetMin},
		{Name: "IPv6SubnetMax", Into: &r.IPv6SubnetMax},
		{Name: "IPv6SubnetLen", Into: &r.IPv6SubnetLen},
		{Name: "Backend", Into: &r.Backend},
	}}
}

// ParseConfig decodes, validates and completes the config; an unusable one is a *ConfigError.
func ParseConfig(s string) (*Config, error) {
	cfg, errs, bad := decode(s)
	if cfg == nil {
		return nil, &ConfigError{Problems: errs}
	}
	skip4 := bad["EnableIPv4"] || bad["Network"] || bad["SubnetLen"] || bad["SubnetMin"] || bad["SubnetMax"]
	skip6 := bad["EnableIPv6"] || bad["IPv6Network"] || bad["IPv6SubnetLen"] || bad["IPv6SubnetMin"] || bad["IPv6SubnetMax"]
	errs = append(errs, cfg.validate(skip4, skip6)...)
	if len(errs) > 0 {
		return nil, cfg.error(errs)
	}
	return cfg, nil
}

// DecodeConfig parses the JSON only, without range checks or defaults (as upstream's kube
// mode); syntax and type errors are reported as a *ConfigError.
func DecodeConfig(s string) (*Config, error) {
	cfg, errs, _ := decode(s)
	if cfg == nil {
		return nil, &ConfigError{Problems: errs}
	}
	if len(errs) > 0 {
		return nil, cfg.error(errs)
	}
	return cfg, nil
}

func (c *Config) error(errs []error) *ConfigError {
	ce := &ConfigError{Problems: errs, Warnings: c.Warnings, BackendType: c.BackendType}
	if c.BackendType != "" {
		ce.Backend = c.Backend
	}
	return ce
}

// decode reads the config and returns the problems found and the keys they are about;
// cfg is nil when nothing could be read (invalid JSON, not an object).
func decode(s string) (cfg *Config, errs []error, bad map[string]bool) {
	var raw rawConfig
	warns, err := raw.object().Decode([]byte(s))
	if configkeys.Unreadable(err) {
		return nil, []error{err}, nil
	}
	bad = make(map[string]bool)
	if err != nil {
		errs = unjoin(err)
		for _, e := range errs {
			var ke *configkeys.KeyError
			if errors.As(e, &ke) {
				bad[ke.Key] = true
			}
		}
	}
	cfg = &Config{
		EnableIPv4:     raw.EnableIPv4 == nil || *raw.EnableIPv4,
		EnableIPv6:     raw.EnableIPv6,
		EnableNFTables: raw.EnableNFTables,
		SubnetLen:      raw.SubnetLen,
		IPv6SubnetLen:  raw.IPv6SubnetLen,
		Backend:        raw.Backend,
		Warnings:       warns,
		Raw:            s,
	}
	parsePrefix := func(name, s string, v6 bool, dst *netip.Prefix) {
		if s == "" {
			return
		}
		p, err := netip.ParsePrefix(s)
		if err != nil || p.Addr().Is4() == v6 || p.Addr().Zone() != "" {
			bad[name] = true
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
			bad[name] = true
			errs = append(errs, fmt.Errorf("%s: invalid IP address %q", name, s))
			return
		}
		*dst = a
	}
	parsePrefix("Network", raw.Network, false, &cfg.Network)
	parseAddr("SubnetMin", raw.SubnetMin, false, &cfg.SubnetMin)
	parseAddr("SubnetMax", raw.SubnetMax, false, &cfg.SubnetMax)
	parsePrefix("IPv6Network", raw.IPv6Network, true, &cfg.IPv6Network)
	parseAddr("IPv6SubnetMin", raw.IPv6SubnetMin, true, &cfg.IPv6SubnetMin)
	parseAddr("IPv6SubnetMax", raw.IPv6SubnetMax, true, &cfg.IPv6SubnetMax)

	bt, err := backendType(raw.Backend)
	if err != nil {
		errs = append(errs, err)
	}
	cfg.BackendType = bt
	return cfg, errs, bad
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// backendType reads Backend.Type, lower-cased; an absent Backend is DefaultBackendType.
func backendType(raw json.RawMessage) (string, error) {
	if len(raw) == 0 {
		return DefaultBackendType, nil
	}
	var b struct{ Type string }
	// The other keys are the backend's to check: its warnings are not ours.
	obj := configkeys.Object{Path: "Backend", Prefix: "error decoding Backend property of config: ",
		Fields: []configkeys.Field{{Name: "Type", Into: &b.Type}}}
	if _, err := obj.Decode(raw); err != nil {
		return "", err
	}
	if b.Type == "" {
		return "", errors.New(`unknown backend type: (Backend has no Type; write e.g. "Type":"vxlan")`)
	}
	return strings.ToLower(b.Type), nil
}

// Validate checks the enabled families by upstream's rules and messages and fills in defaults.
func (c *Config) Validate() error {
	return errors.Join(c.validate(false, false)...)
}

// validate is Validate, skipping the families whose keys had problems already.
func (c *Config) validate(skip4, skip6 bool) []error {
	var errs []error
	if !c.EnableIPv4 && !c.EnableIPv6 && !skip4 && !skip6 {
		errs = append(errs, errors.New("none defined stack: EnableIPv4 and EnableIPv6 are both false"))
	}
	if c.EnableIPv4 && !skip4 {
		errs = append(errs, validateFamily(family{
			network: &c.Network, min: &c.SubnetMin, max: &c.SubnetMax, subnetLen: &c.SubnetLen,
			maxSubnetLen: 30, minUsefulPrefix: 28, defaultLen: 24,
			msgNetwork:  "please define a correct Network parameter in the flannel config",
			msgLenLimit: "SubnetLen must be less than /31",
			msgTooSmall: "network is too small. Minimum useful network prefix is /28",
			nameMin:     "SubnetMin", nameMax: "SubnetMax", nameNetwork: "Network",
		})...)
	}
	if c.EnableIPv6 && !skip6 {
		errs = append(errs, validateFamily(family{
			network: &c.IPv6Network, min: &c.IPv6SubnetMin, max: &c.IPv6SubnetMax, subnetLen: &c.IPv6SubnetLen,
			maxSubnetLen: 126, minUsefulPrefix: 124, defaultLen: 64,
			msgNetwork:  "please define a correct IPv6Network parameter in the flannel config",
			msgLenLimit: "SubnetLen must be less than /127",
			msgTooSmall: "IPv6Network is too small. Minimum useful network prefix is /124",
			nameMin:     "IPv6SubnetMin", nameMax: "IPv6SubnetMax", nameNetwork: "IPv6Network",
		})...)
	}
	return errs
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

// SubnetFits reports whether an IPv4 subnet is SubnetLen long and in [SubnetMin, SubnetMax].
func (c *Config) SubnetFits(sn netip.Prefix) bool {
	return sn.IsValid() && sn.Addr().Is4() && sn.Bits() == c.SubnetLen &&
		c.SubnetMin.Compare(sn.Addr()) <= 0 && sn.Addr().Compare(c.SubnetMax) <= 0
}

// IPv6SubnetFits is SubnetFits for the IPv6 family.
func (c *Config) IPv6SubnetFits(sn netip.Prefix) bool {
	return sn.IsValid() && sn.Addr().Is6() && sn.Bits() == c.IPv6SubnetLen &&
		c.IPv6SubnetMin.Compare(sn.Addr()) <= 0 && sn.Addr().Compare(c.IPv6SubnetMax) <= 0
}
