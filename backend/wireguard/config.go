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

// Overhead is what WireGuard adds to a pod packet as upstream counts it: outer IPv6
// header 40 + UDP 8 + WireGuard header 16 and tag 16. The device MTU is the underlay's
// minus it.
const Overhead = 80

// Defaults and limits of the config values.
const (
	DefaultListenPort   = 51820
	DefaultListenPortV6 = 51821
	overhead            = Overhead
	// minMTU is the smallest device MTU for IPv4 pod traffic, minV6MTU for IPv6.
	minMTU   = 68
	minV6MTU = 1280
	// maxKeepalive is the largest persistent keepalive interval WireGuard accepts (s).
	maxKeepalive = 65535
)

// Mode says how pod traffic of the two address families is carried (upstream's Mode).
type Mode string

// The modes.
const (
	// Separate (the default): flannel-wg carries IPv4 pod traffic over IPv4 (ListenPort),
	// flannel-wg-v6 IPv6 pod traffic over IPv6 (ListenPortV6).
	Separate Mode = "separate"
	// Auto: one device, flannel-wg, for both families, each peer over the underlay family
	// upstream's rule picks (autoPicksIPv6).
	Auto Mode = "auto"
	// IPv4: one device, every peer reached over IPv4.
	IPv4 Mode = "ipv4"
	// IPv6: one device, every peer reached over IPv6.
	IPv6 Mode = "ipv6"
)

// Implementation says which WireGuard runs the devices.
type Implementation string

// The implementations.
const (
	// ImplAuto uses the kernel's WireGuard where the kernel has it, else the userspace
	// one. The default.
	ImplAuto Implementation = "auto"
	// ImplKernel requires the kernel's WireGuard (the wireguard module); without it the
	// daemon does not start.
	ImplKernel Implementation = "kernel"
	// ImplUserspace runs the devices inside flanneld on TUN devices.
	ImplUserspace Implementation = "userspace"
)

// Config is the wireguard backend's part of the network config ("Backend": {...}).
type Config struct {
	ListenPort   int // UDP port of flannel-wg
	ListenPortV6 int // UDP port of flannel-wg-v6 (Mode separate)
	// MTU is the underlay MTU; the devices get MTU - 80 (default: the external
	// interface's MTU).
	MTU int
	// PSK is the pre-shared key every peer gets (nil: none). Never logged.
	PSK *wgtypes.Key
	// PersistentKeepaliveInterval is how often an idle peer is sent a keepalive (0: never).
	PersistentKeepaliveInterval time.Duration
	Mode                        Mode
	Implementation              Implementation
}

// DeviceMTU is the MTU of the devices and of the pods: MTU - 80.
func (c Config) DeviceMTU() int { return c.MTU - overhead }

var _ backend.ConfigChecker = CheckConfig

// CheckConfig checks the wireguard backend's own keys without a node (see
// backend.ConfigChecker); what depends on the node and the network's families is left to
// New. A PSK never appears in a message.
func CheckConfig(raw json.RawMessage) ([]configkeys.Warning, error) {
	_, warns, err := decodeConfig(raw)
	return warns, err
}

// decodeConfig decodes the Backend object (keys case-insensitive, as upstream), fills in
// the node-independent defaults and checks what it can; MTU stays 0 when not given. With
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

// parseConfig is decodeConfig completed for this node: ifaceMTU is the default MTU; v4 and
// v6 say which families the network enables. Every problem is reported.
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

// checkMTU checks a positive underlay MTU: at most 65535, and leaving the device at
// least the IPv4 minimum, or with v6 the IPv6 one.
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
