package udp

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/configkeys"
)

// DefaultPort is upstream's udp port.
const DefaultPort = 8285

const overhead = 28 // outer IPv4 header 20 + UDP header 8

// Overhead is what the encapsulation adds to a pod packet.
const Overhead = overhead

const minMTU = 68

// Config is the udp backend's part of the network config ("Backend": {...}).
type Config struct {
	Port int // UDP port of every node (default 8285)
}

var _ backend.ConfigChecker = CheckConfig

// CheckConfig is the udp backend.ConfigChecker.
func CheckConfig(raw json.RawMessage) ([]configkeys.Warning, error) {
	_, warns, err := decodeConfig(raw)
	return warns, err
}

// parseConfig decodes the Backend object, defaulting the port; an absent one selects udp.
func parseConfig(raw []byte) (Config, error) {
	c, _, err := decodeConfig(raw)
	return c, err
}

func decodeConfig(raw []byte) (Config, []configkeys.Warning, error) {
	var in struct {
		Type string
		Port int
	}
	var warns []configkeys.Warning
	if len(bytes.TrimSpace(raw)) > 0 {
		obj := configkeys.Object{Path: "Backend", Prefix: "udp: ", Fields: []configkeys.Field{
			{Name: "Type", Into: &in.Type},
			{Name: "Port", Into: &in.Port},
		}}
		var err error
		if warns, err = obj.Decode(raw); err != nil {
			return Config{}, warns, err
		}
	}
	c := Config{Port: in.Port}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.Port < 1 || c.Port > 65535 {
		return Config{}, warns, fmt.Errorf("udp: Port %d out of range 1..65535", c.Port)
	}
	return c, warns, nil
}

// UDPPort is the port every node's datagrams go to.
func (b *Backend) UDPPort() int { return b.cfg.Port }
