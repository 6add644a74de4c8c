package udp

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// DefaultPort is upstream's udp port.
const DefaultPort = 8285

// overhead is what the encapsulation costs: outer IPv4 header 20 + UDP header 8.
const overhead = 28

// minMTU is the smallest flannel0 MTU we accept (the IPv4 minimum).
const minMTU = 68

// Config is the udp backend's part of the network config ("Backend": {...}).
type Config struct {
	Port int // UDP port of every node (default 8285)
}

// parseConfig decodes the Backend object (keys matched case-insensitively, unknown keys
// ignored, as upstream) and fills in the default port. An absent Backend is valid: it is
// how a config selects udp implicitly.
func parseConfig(raw []byte) (Config, error) {
	var in struct {
		Port int
	}
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &in); err != nil {
			return Config{}, fmt.Errorf("error decoding UDP backend config: %w", err)
		}
	}
	c := Config{Port: in.Port}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.Port < 1 || c.Port > 65535 {
		return Config{}, fmt.Errorf("udp: Port %d out of range 1..65535", c.Port)
	}
	return c, nil
}
