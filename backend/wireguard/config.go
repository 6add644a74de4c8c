package wireguard

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/configkeys"
)

// Overhead is what WireGuard adds to a pod packet as upstream counts it (outer IPv6 40 +
// UDP 8 + WireGuard header 16 and tag 16).
const Overhead = 80

// Defaults and limits of the config values.
const (
	DefaultListenPort   = 51820
	DefaultListenPortV6 = 51821
	overhead            = Overhead
	minMTU              = 68    // smallest device MTU for IPv4 pod traffic
	minV6MTU            = 1280  // and for IPv6
	maxKeepalive        = 65535 // seconds
)

// Mode says how pod traffic of the two address families is carried (upstream's Mode).
type Mode string

// The modes: Separate (default) has a device per family, the others one flannel-wg reaching
// each peer over the underlay family upstream's rule picks (Auto) or the one named.
const (
	Separate Mode = "separate"
	Auto     Mode = "auto"
	IPv4     Mode = "ipv4"
	IPv6     Mode = "ipv6"
)

// Implementation says which WireGuard runs the devices.
type Implementation string

// The implementations.
const (
	ImplAuto      Implementation = "auto"      // default: the kernel's where present, else userspace
	ImplKernel    Implementation = "kernel"    // the kernel's, else the daemon does not start
	ImplUserspace Implementation = "userspace" // in flanneld, on TUN devices
)

// Config is the wireguard backend's part of the network config ("Backend": {...}).
type Config struct {
	ListenPort                  int           // UDP port of flannel-wg
	ListenPortV6                int           // UDP port of flannel-wg-v6 (Mode separate)
	MTU                         int           // underlay MTU (default: the external interface's)
	PSK                         *wgtypes.Key  // pre-shared key of every peer (nil: none); never logged
	PersistentKeepaliveInterval time.Duration // 0: never
	Mode                        Mode
	Implementation              Implementation
}

// DeviceMTU is the MTU of the devices and of the pods: MTU - 80.
func (c Config) DeviceMTU() int { return c.MTU - overhead }

var _ backend.ConfigChecker = CheckConfig

// CheckConfig is the wireguard backend.ConfigChecker; a PSK never appears in a message.
func CheckConfig(raw json.RawMessage) ([]configkeys.Warning, error) {
	_, warns, err := decodeConfig(raw)
	return warns, err
}

// decodeConfig decodes the Backend object with node-free defaults (MTU stays 0); with
// problems, the Config holds the defaults and the values that passed.
func decodeConfig(raw []byte) (Config, []configkeys.Warning, error) {
	var in struct {
		Type                        string
		ListenPort                  *int
		ListenPortV6                *int
		MTU                         int
		PSK                         string
		PersistentKeepaliveInterval int
		Mode                        string
		Implementation              string
	}
	var warns []configkeys.Warning
	var errs []error
	if len(bytes.TrimSpace(raw)) > 0 {
		obj := configkeys.Object{Path: "Backend", Prefix: "wireguard: ", Fields: []configkeys.Field{
			{Name: "Type", Into: &in.Type},
			{Name: "ListenPort", Into: &in.ListenPort},
			{Name: "ListenPortV6", Into: &in.ListenPortV6},
			{Name: "MTU", Into: &in.MTU},
			{Name: "PSK", Into: &in.PSK},
			{Name: "PersistentKeepaliveInterval", Into: &in.PersistentKeepaliveInterval},
			{Name: "Mode", Into: &in.Mode},
			{Name: "Implementation", Into: &in.Implementation},
		}}
		var err error
		warns, err = obj.Decode(raw)
		if configkeys.Unreadable(err) {
			return Config{}, nil, err
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	c := Config{ListenPort: DefaultListenPort, ListenPortV6: DefaultListenPortV6, MTU: in.MTU, Mode: Separate, Implementation: ImplAuto}
	if in.ListenPort != nil {
		c.ListenPort = *in.ListenPort
	}
	if in.ListenPortV6 != nil {
		c.ListenPortV6 = *in.ListenPortV6
	}
	if in.Mode != "" {
		switch m := Mode(in.Mode); m {
		case Separate, Auto, IPv4, IPv6:
			c.Mode = m
		default:
			errs = append(errs, fmt.Errorf("wireguard: no valid Mode configured: %q (want separate, auto, ipv4 or ipv6)", in.Mode))
		}
	}
	if in.Implementation != "" {
		switch im := Implementation(in.Implementation); im {
		case ImplAuto, ImplKernel, ImplUserspace:
			c.Implementation = im
		default:
			errs = append(errs, fmt.Errorf("wireguard: no valid Implementation configured: %q (want auto, kernel or userspace)", in.Implementation))
		}
	}
	if in.PSK != "" {
		k, err := wgtypes.ParseKey(in.PSK)
		if err != nil {
			// wgtypes' message names the offset of a bad byte, never the key
			errs = append(errs, fmt.Errorf("wireguard: could not parse psk: %w", err))
		} else {
			c.PSK = &k
		}
	}
	if in.PersistentKeepaliveInterval < 0 || in.PersistentKeepaliveInterval > maxKeepalive {
		errs = append(errs, fmt.Errorf("wireguard: PersistentKeepaliveInterval %d out of range 0..%d (seconds)", in.PersistentKeepaliveInterval, maxKeepalive))
	} else {
		c.PersistentKeepaliveInterval = time.Duration(in.PersistentKeepaliveInterval) * time.Second
	}
	if err := checkPort("ListenPort", c.ListenPort); err != nil {
		errs = append(errs, err)
	}
	switch {
	case c.MTU < 0:
		errs = append(errs, fmt.Errorf("wireguard: MTU %d is negative", c.MTU))
	case c.MTU > 0:
		if err := checkMTU(c.MTU, false); err != nil {
			errs = append(errs, err)
		}
	}
	return c, warns, errors.Join(errs...)
}

// parseConfig completes decodeConfig for this node and the network's families.
func parseConfig(raw []byte, ifaceMTU int, v4, v6 bool) (Config, error) {
	c, _, err := decodeConfig(raw)
	var errs []error
	if err != nil {
		if configkeys.Unreadable(err) {
			return Config{}, err
		}
		errs = append(errs, err)
	}
	if c.Mode == Separate && v6 {
		if err := checkPort("ListenPortV6", c.ListenPortV6); err != nil {
			errs = append(errs, err)
		} else if v4 && c.ListenPort == c.ListenPortV6 {
			errs = append(errs, fmt.Errorf("wireguard: ListenPort and ListenPortV6 are both %d: in Mode separate flannel-wg and flannel-wg-v6 need a port each", c.ListenPort))
		}
	}
	given := c.MTU
	if c.MTU == 0 {
		c.MTU = ifaceMTU
	}
	switch {
	case given < 0 || given > 0 && checkMTU(given, false) != nil:
		// said by decodeConfig
	case c.MTU <= 0:
		errs = append(errs, errors.New("wireguard: MTU not configured and the external interface MTU is unknown"))
	default:
		if err := checkMTU(c.MTU, v6); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	return c, nil
}

func checkPort(name string, p int) error {
	if p < 1 || p > 65535 {
		return fmt.Errorf("wireguard: %s %d out of range 1..65535", name, p)
	}
	return nil
}

func checkMTU(mtu int, v6 bool) error {
	switch {
	case mtu > 65535:
		return fmt.Errorf("wireguard: MTU %d is larger than 65535", mtu)
	case mtu-overhead < minMTU:
		return fmt.Errorf("wireguard: MTU %d too small: the device MTU (MTU - %d) must be at least %d", mtu, overhead, minMTU)
	case v6 && mtu-overhead < minV6MTU:
		return fmt.Errorf("wireguard: MTU %d too small for IPv6: the device MTU (MTU - %d) must be at least %d", mtu, overhead, minV6MTU)
	}
	return nil
}
