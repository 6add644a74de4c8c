// Package subnetenv writes and reads the subnet file (/run/flannel/subnet.env) that
// Docker's mk-docker-opts.sh and the CNI plugin read.
package subnetenv

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/flannel-go/flannel/pkg/atomicfile"
	"github.com/flannel-go/flannel/pkg/ip"
)

// Env is the content of the subnet file. Zero prefixes are left out.
type Env struct {
	Network     netip.Prefix // FLANNEL_NETWORK
	Subnet      netip.Prefix // lease subnet; written as first host (FLANNEL_SUBNET=10.5.85.1/24)
	IPv6Network netip.Prefix // FLANNEL_IPV6_NETWORK
	IPv6Subnet  netip.Prefix // lease IPv6 subnet; written as first host
	MTU         int          // FLANNEL_MTU
	IPMasq      bool         // FLANNEL_IPMASQ
}

// Text renders the file exactly as upstream: KEY=value lines in a fixed order, no quoting.
func (e Env) Text() string {
	var b strings.Builder
	if e.Network.IsValid() {
		fmt.Fprintf(&b, "FLANNEL_NETWORK=%s\n", e.Network)
	}
	if e.Subnet.IsValid() {
		fmt.Fprintf(&b, "FLANNEL_SUBNET=%s\n", ip.FirstHost(e.Subnet))
	}
	if e.IPv6Network.IsValid() {
		fmt.Fprintf(&b, "FLANNEL_IPV6_NETWORK=%s\n", e.IPv6Network)
	}
	if e.IPv6Subnet.IsValid() {
		fmt.Fprintf(&b, "FLANNEL_IPV6_SUBNET=%s\n", ip.FirstHost(e.IPv6Subnet))
	}
	fmt.Fprintf(&b, "FLANNEL_MTU=%d\n", e.MTU)
	fmt.Fprintf(&b, "FLANNEL_IPMASQ=%t\n", e.IPMasq)
	return b.String()
}

// Write replaces the file atomically, mode 0644 whatever the umask.
func Write(path string, e Env) error {
	return atomicfile.WriteFile(path, []byte(e.Text()), 0o644)
}

// Read parses a subnet file's KEY=value lines; a missing file gives fs.ErrNotExist.
func Read(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return map[string]string{}, err
	}
	return Parse(data), nil
}

// Parse parses subnet file content (see Read).
func Parse(data []byte) map[string]string {
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if uq, err := strconv.Unquote(v); err == nil {
			v = uq
		} else if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
			v = v[1 : len(v)-1]
		}
		out[strings.TrimSpace(k)] = v
	}
	return out
}

// PrefixValue returns the masked form of a CIDR value; a list or bad value yields false.
func PrefixValue(vals map[string]string, key string) (netip.Prefix, bool) {
	v, ok := vals[key]
	if !ok || v == "" || strings.Contains(v, ",") {
		return netip.Prefix{}, false
	}
	p, err := netip.ParsePrefix(strings.TrimSpace(v))
	if err != nil {
		return netip.Prefix{}, false
	}
	return p.Masked(), true
}
