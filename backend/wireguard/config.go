package wireguard

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Defaults and limits of the config values.
const (
	DefaultListenPort   = 51820
	DefaultListenPortV6 = 51821
	// overhead is what the encapsulation costs, as upstream counts it: outer IPv6
	// header 40 (IPv4: 20) + UDP 8 + WireGuard message type 4, receiver index 4,
	// counter 8 and authentication tag 16.
	overhead = 80
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
	// Separate: flannel-wg carries IPv4 pod traffic between the nodes' IPv4 addresses
	// (ListenPort), flannel-wg-v6 IPv6 pod traffic between their IPv6 addresses
	// (ListenPortV6). The default.
	Separate Mode = "separate"
	// Auto: one device, flannel-wg, carries both families to each peer over the
	// underlay family upstream's rule picks for that peer (IPv4 unless only IPv6 is
	// public on both ends).
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

// configKeys are the keys the backend reads (plus Type, which selects it).
var configKeys = []string{"Type", "ListenPort", "ListenPortV6", "MTU", "PSK", "PersistentKeepaliveInterval", "Mode", "Implementation"}

// parseConfig decodes the Backend object (keys matched case-insensitively, as upstream),
// fills in the defaults and checks the values. ifaceMTU is the external interface's MTU,
// the default for MTU; v4 and v6 say which families the network enables. unknown lists
// the keys the backend does not know (ignored, as upstream; the caller warns). The
// messages of decoding errors and of a bad Mode or PSK begin as upstream's; a PSK never
// appears in them.
func parseConfig(raw []byte, ifaceMTU int, v4, v6 bool) (c Config, unknown []string, err error) {
	var in struct {
		ListenPort                  *int
		ListenPortV6                *int
		MTU                         int
		PSK                         string
		PersistentKeepaliveInterval int64
		Mode                        *string
		Implementation              *string
	}
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &in); err != nil {
			return Config{}, nil, fmt.Errorf("error decoding backend config: %s", describeJSONError(err))
		}
		var keys map[string]json.RawMessage
		if json.Unmarshal(raw, &keys) == nil {
			for k := range keys {
				if !slices.ContainsFunc(configKeys, func(known string) bool { return strings.EqualFold(k, known) }) {
					unknown = append(unknown, k)
				}
			}
			slices.Sort(unknown)
		}
	}
	c = Config{ListenPort: DefaultListenPort, ListenPortV6: DefaultListenPortV6, MTU: in.MTU, Mode: Separate, Implementation: ImplAuto}
	if in.ListenPort != nil {
		c.ListenPort = *in.ListenPort
	}
	if in.ListenPortV6 != nil {
		c.ListenPortV6 = *in.ListenPortV6
	}
	var errs []error
	if in.Mode != nil {
		switch m := Mode(*in.Mode); m {
		case Separate, Auto, IPv4, IPv6:
			c.Mode = m
		default:
			errs = append(errs, fmt.Errorf("no valid Mode configured: %q (want separate, auto, ipv4 or ipv6)", *in.Mode))
		}
	}
	if in.Implementation != nil {
		switch im := Implementation(*in.Implementation); im {
		case ImplAuto, ImplKernel, ImplUserspace:
			c.Implementation = im
		default:
			errs = append(errs, fmt.Errorf("no valid Implementation configured: %q (want auto, kernel or userspace)", *in.Implementation))
		}
	}
	if in.PSK != "" {
		k, err := wgtypes.ParseKey(in.PSK)
		if err != nil {
			// wgtypes' message names the offset of a bad byte, never the key
			errs = append(errs, fmt.Errorf("could not parse psk: %w", err))
		} else {
			c.PSK = &k
		}
	}
	if in.PersistentKeepaliveInterval < 0 || in.PersistentKeepaliveInterval > maxKeepalive {
		errs = append(errs, fmt.Errorf("PersistentKeepaliveInterval %d out of range 0..%d (seconds)", in.PersistentKeepaliveInterval, maxKeepalive))
	} else {
		c.PersistentKeepaliveInterval = time.Duration(in.PersistentKeepaliveInterval) * time.Second
	}
	checkPort := func(name string, p int) {
		if p < 1 || p > 65535 {
			errs = append(errs, fmt.Errorf("%s %d out of range 1..65535", name, p))
		}
	}
	checkPort("ListenPort", c.ListenPort)
	if c.Mode == Separate && v4 && v6 {
		checkPort("ListenPortV6", c.ListenPortV6)
		if c.ListenPort == c.ListenPortV6 {
			errs = append(errs, fmt.Errorf("ListenPort and ListenPortV6 are both %d: in Mode separate flannel-wg and flannel-wg-v6 need a port each", c.ListenPort))
		}
	} else if c.Mode == Separate && v6 {
		checkPort("ListenPortV6", c.ListenPortV6)
	}
	switch {
	case c.MTU < 0:
		errs = append(errs, fmt.Errorf("MTU %d is negative", c.MTU))
	case c.MTU == 0 && ifaceMTU <= 0:
		errs = append(errs, errors.New("MTU not configured and the external interface MTU is unknown"))
	default:
		if c.MTU == 0 {
			c.MTU = ifaceMTU
		}
		switch {
		case c.MTU > 65535:
			errs = append(errs, fmt.Errorf("MTU %d is larger than 65535", c.MTU))
		case c.MTU-overhead < minMTU:
			errs = append(errs, fmt.Errorf("MTU %d too small: the device MTU (MTU - %d) must be at least %d", c.MTU, overhead, minMTU))
		case v6 && c.MTU-overhead < minV6MTU:
			errs = append(errs, fmt.Errorf("MTU %d too small for IPv6: the device MTU (MTU - %d) must be at least %d", c.MTU, overhead, minV6MTU))
		}
	}
	if len(errs) > 0 {
		return Config{}, unknown, errors.Join(errs...)
	}
	return c, unknown, nil
}

// describeJSONError says what is wrong with the Backend object in the words of the
// config (a key and the kind of value it takes), not in those of Go's types.
func describeJSONError(err error) string {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		want := "a value of another kind"
		switch te.Type.Kind() {
		case reflect.Int, reflect.Int64:
			want = "a whole number"
		case reflect.String:
			want = "a string"
		case reflect.Struct:
			want = "an object"
		}
		if te.Field == "" {
			return fmt.Sprintf("the Backend must be %s, not a JSON %s", want, te.Value)
		}
		return fmt.Sprintf("%s must be %s, not a JSON %s", te.Field, want, te.Value)
	case errors.As(err, &se):
		return fmt.Sprintf("invalid JSON at byte %d: %v", se.Offset, err)
	}
	return err.Error()
}
