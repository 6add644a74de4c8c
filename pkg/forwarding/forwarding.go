// Package forwarding reads, never changes, the kernel IP forwarding settings a network needs.
package forwarding

import (
	"fmt"
	"os"
	"strings"
)

const (
	IPv4 = "net.ipv4.ip_forward"
	IPv6 = "net.ipv6.conf.all.forwarding"
)

// Setting is one forwarding setting as read.
type Setting struct {
	Name  string // the sysctl name (IPv4, IPv6)
	Value string // as read, spaces trimmed
	Err   error  // why it could not be read (an IPv6 setting is absent where IPv6 is disabled)
}

// Off reports whether the setting was read and is "0".
func (s Setting) Off() bool { return s.Err == nil && s.Value == "0" }

// Read reads the settings the families need, IPv4's first, with read (Sysctl, or a fake).
func Read(ipv4, ipv6 bool, read func(name string) (string, error)) []Setting {
	var out []Setting
	for _, n := range []struct {
		on   bool
		name string
	}{{ipv4, IPv4}, {ipv6, IPv6}} {
		if !n.on {
			continue
		}
		v, err := read(n.name)
		out = append(out, Setting{Name: n.name, Value: strings.TrimSpace(v), Err: err})
	}
	return out
}

// Sysctl reads a kernel setting by its sysctl name ("net.ipv4.ip_forward") from /proc/sys.
func Sysctl(name string) (string, error) {
	if name == "" || strings.ContainsAny(name, "/\x00") {
		return "", fmt.Errorf("bad sysctl name %q", name)
	}
	b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(name, ".", "/"))
	return string(b), err
}
