package vxlan

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/configkeys"
)

// Limits of the config values.
const (
	defaultVNI = 1
	maxVNI     = 1<<24 - 1
	overhead   = 50 // outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
	v6Overhead = 70 // outer IPv6 40: the kernel caps the device at lower MTU - 70

	minDeviceMTU      = 68   // the kernel's minimum for a vxlan device
	minV6DeviceMTU    = 1280 // the IPv6 minimum link MTU
	kernelDefaultPort = 8472 // the vxlan driver's port when none is given
)

// Overhead and Overhead6 are what VXLAN adds to a pod packet on an IPv4 and IPv6 underlay.
const (
	Overhead  = overhead
	Overhead6 = v6Overhead
)

// Config is the vxlan backend's own part of the network config ("Backend": {...}).
type Config struct {
	VNI             int
	Port            int             // 0: not sent to the kernel, which then uses 8472
	MTU             int             // underlay MTU; flannel.<VNI> gets MTU - 50, flannel-v6.<VNI> MTU - 70
	GBP             bool            // VXLAN Group Based Policy extension
	Learning        bool            // kernel MAC learning (off: "nolearning")
	DirectRouting   bool            // plain routes to peers reachable without a gateway
	ChecksumOffload ChecksumOffload // the devices' transmit checksum offload
}

const windowsOnly = "used by flanneld on Windows only"

var _ backend.ConfigChecker = CheckConfig

// CheckConfig is the vxlan backend.ConfigChecker; the node-dependent MTU checks are New's.
func CheckConfig(raw json.RawMessage) ([]configkeys.Warning, error) {
	_, warns, err := decodeConfig(raw)
	return warns, err
}

// decodeConfig decodes the Backend object with node-free defaults; MTU stays 0 when not given.
func decodeConfig(raw []byte) (Config, []configkeys.Warning, error) {
	var in struct {
		Type            string
		VNI             *int
		Port            int
		MTU             int
		GBP             bool
		Learning        bool
		DirectRouting   bool
		ChecksumOffload json.RawMessage // parseChecksumOffload checks it, for a clear message
	}
	var warns []configkeys.Warning
	var errs []error
	if len(bytes.TrimSpace(raw)) > 0 {
		obj := configkeys.Object{Path: "Backend", Prefix: "vxlan: ", Fields: []configkeys.Field{
			{Name: "Type", Into: &in.Type},
			{Name: "VNI", Into: &in.VNI},
			{Name: "Port", Into: &in.Port},
			{Name: "MTU", Into: &in.MTU},
			{Name: "GBP", Into: &in.GBP},
			{Name: "Learning", Into: &in.Learning},
			{Name: "DirectRouting", Into: &in.DirectRouting},
			{Name: "ChecksumOffload", Into: &in.ChecksumOffload},
			{Name: "MacPrefix", Ignored: windowsOnly},
			{Name: "Name", Ignored: windowsOnly},
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
	c := Config{
		VNI:           defaultVNI,
		Port:          in.Port,
		MTU:           in.MTU,
		GBP:           in.GBP,
		Learning:      in.Learning,
		DirectRouting: in.DirectRouting,
	}
	if in.VNI != nil {
		c.VNI = *in.VNI
	}
	if c.VNI < 1 || c.VNI > maxVNI {
		errs = append(errs, fmt.Errorf("vxlan: VNI %d out of range 1..%d", c.VNI, maxVNI))
	}
	if co, err := parseChecksumOffload(in.ChecksumOffload); err != nil {
		errs = append(errs, err)
	} else {
		c.ChecksumOffload = co
	}
	if c.Port < 0 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("vxlan: Port %d out of range 0..65535", c.Port))
	}
	switch {
	case c.MTU < 0:
		errs = append(errs, fmt.Errorf("vxlan: MTU %d is negative", c.MTU))
	case c.MTU > 65535:
		errs = append(errs, fmt.Errorf("vxlan: MTU %d is larger than 65535", c.MTU))
	case c.MTU > 0 && c.MTU-overhead < minDeviceMTU:
		errs = append(errs, fmt.Errorf("vxlan: MTU %d too small: the device MTU (MTU - %d) must be at least %d",
			c.MTU, overhead, minDeviceMTU))
	}
	if len(errs) > 0 {
		return Config{}, warns, errors.Join(errs...)
	}
	return c, warns, nil
}

// parseConfig completes decodeConfig for this node; ifaceMTU is MTU's default.
func parseConfig(raw []byte, ifaceMTU int, v6 bool) (Config, error) {
	c, _, err := decodeConfig(raw)
	if err != nil {
		return Config{}, err
	}
	if c.MTU == 0 {
		if ifaceMTU <= 0 {
			return Config{}, errors.New("vxlan: MTU not configured and the external interface MTU is unknown")
		}
		c.MTU = ifaceMTU
	}
	switch {
	case c.MTU > 65535:
		return Config{}, fmt.Errorf("vxlan: MTU %d is larger than 65535", c.MTU)
	case c.MTU-overhead < minDeviceMTU:
		return Config{}, fmt.Errorf("vxlan: MTU %d too small: the device MTU (MTU - %d) must be at least %d",
			c.MTU, overhead, minDeviceMTU)
	case v6 && c.MTU-v6Overhead < minV6DeviceMTU:
		return Config{}, fmt.Errorf("vxlan: MTU %d too small for IPv6: the device MTU (MTU - %d) must be at least %d",
			c.MTU, v6Overhead, minV6DeviceMTU)
	}
	return c, nil
}

type backendData struct {
	VNI int
	MAC hwAddr
}

// marshalBackendData writes {"VNI":<vni>,"VtepMAC":"<mac>"} exactly as upstream does.
func marshalBackendData(vni int, mac hwAddr) []byte {
	b := make([]byte, 0, 48)
	b = append(b, `{"VNI":`...)
	b = strconv.AppendInt(b, int64(vni), 10)
	b = append(b, `,"VtepMAC":"`...)
	b = append(b, mac.String()...)
	b = append(b, `"}`...)
	return b
}

// CheckBackendData admits lease data with a unicast VtepMAC and a VNI in range (subnet.RuleOptions).
func CheckBackendData(data json.RawMessage) error {
	bd, err := parseBackendData(data)
	if err != nil {
		return err
	}
	if bd.VNI < 0 || bd.VNI > maxVNI {
		return fmt.Errorf("VNI %d out of range 0..%d", bd.VNI, maxVNI)
	}
	return nil
}

// parseBackendData reads a peer's BackendData. It refuses an all-zero MAC: that FDB entry
// would flood every unknown MAC to the peer.
func parseBackendData(raw []byte) (backendData, error) {
	if bd, ok := parseBackendDataFast(raw); ok {
		return bd, nil
	}
	return parseBackendDataJSON(raw)
}

// parseBackendDataFast reads the canonical shapes without allocating; !ok leaves others to JSON.
func parseBackendDataFast(raw []byte) (bd backendData, ok bool) {
	const vniKey, macKey = `{"VNI":`, `"VtepMAC":"`
	s := raw
	switch {
	case bytes.HasPrefix(s, []byte(vniKey)):
		s = s[len(vniKey):]
		n, i := 0, 0
		for ; i < len(s) && i < 9 && s[i] >= '0' && s[i] <= '9'; i++ {
			n = n*10 + int(s[i]-'0')
		}
		if i == 0 || i == 9 || (s[0] == '0' && i > 1) || i >= len(s) || s[i] != ',' {
			return bd, false
		}
		bd.VNI = n
		s = s[i+1:]
	case len(s) > 0 && s[0] == '{':
		s = s[1:]
	default:
		return bd, false
	}
	if !bytes.HasPrefix(s, []byte(macKey)) {
		return bd, false
	}
	s = s[len(macKey):]
	if len(s) != 17+2 || s[17] != '"' || s[18] != '}' {
		return bd, false
	}
	for i := range 6 {
		hi, okHi := unhex(s[3*i])
		lo, okLo := unhex(s[3*i+1])
		if !okHi || !okLo || (i < 5 && s[3*i+2] != ':') {
			return bd, false
		}
		bd.MAC[i] = hi<<4 | lo
	}
	if bd.MAC == (hwAddr{}) || bd.MAC[0]&1 != 0 {
		return backendData{}, false
	}
	return bd, true
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func parseBackendDataJSON(raw []byte) (backendData, error) {
	if len(raw) == 0 {
		return backendData{}, errors.New("no backend data")
	}
	var in struct {
		VNI     int
		VtepMAC string
	}
	if err := json.Unmarshal(raw, &in); err != nil {
		return backendData{}, fmt.Errorf("bad backend data: %w", err)
	}
	if in.VtepMAC == "" {
		return backendData{}, errors.New("backend data has no VtepMAC")
	}
	hw, err := net.ParseMAC(in.VtepMAC)
	if err != nil || len(hw) != 6 {
		return backendData{}, fmt.Errorf("bad VtepMAC %q", in.VtepMAC)
	}
	var mac hwAddr
	copy(mac[:], hw)
	if mac == (hwAddr{}) || mac[0]&1 != 0 {
		return backendData{}, fmt.Errorf("VtepMAC %q is not a unicast address", in.VtepMAC)
	}
	return backendData{VNI: in.VNI, MAC: mac}, nil
}

type hwAddr [6]byte

func (m hwAddr) String() string { return net.HardwareAddr(m[:]).String() }

func hwFrom(b net.HardwareAddr) (hwAddr, bool) {
	var m hwAddr
	if len(b) != 6 {
		return m, false
	}
	copy(m[:], b)
	return m, true
}

func familyOverhead(v6 bool) int {
	if v6 {
		return v6Overhead
	}
	return overhead
}
