// Package claim names what a daemon instance takes on its node for itself (network
// devices, UDP ports, address ranges) and says when two instances' claims collide, so
// that a second instance refuses to start instead of sharing, and fighting over, what
// the first one owns.
//
// A backend declares its devices and ports (backend.Claimer); the daemon adds its
// networks, publishes the set on its control socket and compares it with every other
// instance's in the network namespace.
package claim

import (
	"fmt"
	"net/netip"
	"slices"
)

// Families of a Port.
const (
	IPv4 = "ipv4"
	IPv6 = "ipv6"
)

// Set is everything one instance claims.
type Set struct {
	// Devices are the links the instance creates or adopts by name.
	Devices []Device `json:"devices,omitempty"`
	// Ports are the UDP ports it listens on, or its kernel devices listen on.
	Ports []Port `json:"ports,omitempty"`
	// Networks are its network config's Network and IPv6Network: the routes, rules and
	// addresses inside them are the instance's.
	Networks []netip.Prefix `json:"networks,omitempty"`
}

// Device is a link claimed by name.
type Device struct {
	Name string `json:"name"`
	// SetBy is the network config key that chooses the name (e.g. "Backend.VNI" for
	// flannel.<VNI>); empty when no key does.
	SetBy string `json:"setBy,omitempty"`
}

// Port is a UDP port. Two claims of one port and family collide when their addresses
// overlap (one is the wildcard, or both are the same address), unless both are VXLAN
// ports of different VNIs: the kernel's VXLAN devices share one socket per port and
// family, and tell their traffic apart by VNI. It refuses a second VXLAN device with the
// same VNI, port and family whatever its local address or underlay link, and a socket
// that binds a port one of them listens on (and the other way round).
type Port struct {
	Family string `json:"family"` // IPv4 or IPv6
	Port   int    `json:"port"`
	// Addr is the local address the socket binds; absent: every address of the family.
	Addr netip.Addr `json:"addr,omitzero"`
	// VNI is set for a VXLAN device's port (after defaults).
	VNI int `json:"vni,omitempty"`
	// SetBy is the network config key that chooses the port (e.g. "Backend.Port").
	SetBy string `json:"setBy,omitempty"`
}

// String renders the port, e.g. "UDP port 8285 (IPv4, 192.0.2.11)" or "VXLAN VNI 1 on
// UDP port 8472 (IPv4)".
func (p Port) String() string {
	fam := "IPv4"
	if p.Family == IPv6 {
		fam = "IPv6"
	}
	if p.Addr.IsValid() {
		fam += ", " + p.Addr.String()
	}
	if p.VNI > 0 {
		return fmt.Sprintf("VXLAN VNI %d on UDP port %d (%s)", p.VNI, p.Port, fam)
	}
	return fmt.Sprintf("UDP port %d (%s)", p.Port, fam)
}

// collides applies the rule of Port's comment.
func (p Port) collides(q Port) bool {
	if p.Family != q.Family || p.Port != q.Port {
		return false
	}
	if p.Addr.IsValid() && q.Addr.IsValid() && p.Addr != q.Addr {
		return false
	}
	return p.VNI == 0 || q.VNI == 0 || p.VNI == q.VNI
}

// Kinds of Conflict.
const (
	KindDevice  = "device"
	KindPort    = "port"
	KindNetwork = "network"
)

// Conflict is one claim of ours that another instance's set collides with.
type Conflict struct {
	Kind string
	// Ours is what we claim: a device name, a port (Port.String) or a network.
	Ours string
	// Theirs is what the other instance claims, when it differs from Ours in words (the
	// other network of an overlap, the other port of a collision), else empty.
	Theirs string
	// SetBy is the config key of ours that chooses it ("Network" or "IPv6Network" for a
	// network); empty when none does.
	SetBy string
}

// String says what collides and what to change, e.g. "device flannel.1 (change
// Backend.VNI)".
func (c Conflict) String() string {
	s := c.Kind + " " + c.Ours
	if c.Kind == KindPort {
		s = c.Ours
	}
	if c.Theirs != "" {
		s += " (theirs: " + c.Theirs + ")"
	}
	return s
}

// Remedy says what to change in this instance's network config, e.g. "set another
// Backend.VNI in this network's config".
func (c Conflict) Remedy() string {
	switch {
	case c.Kind == KindNetwork:
		return "set another " + c.SetBy + ", one that does not overlap theirs, in this network's config"
	case c.SetBy != "":
		return "set another " + c.SetBy + " in this network's config"
	}
	return "run only one of the two on this node"
}

// Conflicts lists the claims of ours that theirs collides with: devices first, then
// ports, then networks, each in the order of ours.
func Conflicts(ours, theirs Set) []Conflict {
	var out []Conflict
	for _, d := range ours.Devices {
		if slices.ContainsFunc(theirs.Devices, func(t Device) bool { return t.Name == d.Name }) {
			out = append(out, Conflict{Kind: KindDevice, Ours: d.Name, SetBy: d.SetBy})
		}
	}
	for _, p := range ours.Ports {
		for _, q := range theirs.Ports {
			if p.collides(q) {
				c := Conflict{Kind: KindPort, Ours: p.String(), SetBy: p.SetBy}
				if q.String() != c.Ours {
					c.Theirs = q.String()
				}
				out = append(out, c)
				break
			}
		}
	}
	for _, n := range ours.Networks {
		for _, m := range theirs.Networks {
			if n.Overlaps(m) {
				c := Conflict{Kind: KindNetwork, Ours: n.String(), SetBy: "Network"}
				if n.Addr().Is6() {
					c.SetBy = "IPv6Network"
				}
				if m != n {
					c.Theirs = m.String()
				}
				out = append(out, c)
				break
			}
		}
	}
	return out
}

// Devices is the set of device names the caller lists, as device claims with no key.
func Devices(names []string) []Device {
	out := make([]Device, 0, len(names))
	for _, n := range names {
		out = append(out, Device{Name: n})
	}
	return out
}
