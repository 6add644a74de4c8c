// Package claim names what a daemon instance takes on its node (devices, UDP ports,
// networks) and finds collisions, so a second instance refuses to start instead of fighting.
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
	Devices  []Device       `json:"devices,omitempty"`  // links created or adopted by name
	Ports    []Port         `json:"ports,omitempty"`    // UDP ports it or its devices listen on
	Networks []netip.Prefix `json:"networks,omitempty"` // routes, rules, addresses inside are ours
}

// Device is a link claimed by name.
type Device struct {
	Name  string `json:"name"`
	SetBy string `json:"setBy,omitempty"` // the config key choosing the name ("Backend.VNI")
}

// Port is a UDP port. Two claims of one port and family collide when their addresses
// overlap, unless both are VXLAN ports of different VNIs: the kernel shares one socket
// per port and family among VXLAN devices and refuses a second device with the same VNI.
type Port struct {
	Family string     `json:"family"` // IPv4 or IPv6
	Port   int        `json:"port"`
	Addr   netip.Addr `json:"addr,omitzero"`   // absent: every address of the family
	VNI    int        `json:"vni,omitempty"`   // a VXLAN device's port
	SetBy  string     `json:"setBy,omitempty"` // the config key choosing the port
}

// String renders the port for messages.
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
	Kind   string
	Ours   string // a device name, Port.String or a network
	Theirs string // the other claim when it reads differently from Ours
	SetBy  string // our config key choosing it, if any
}

// String says what collides.
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

// Remedy says what to change in this instance's network config.
func (c Conflict) Remedy() string {
	switch {
	case c.Kind == KindNetwork:
		return "set another " + c.SetBy + ", one that does not overlap theirs, in this network's config"
	case c.SetBy != "":
		return "set another " + c.SetBy + " in this network's config"
	}
	return "run only one of the two on this node"
}

// Conflicts lists our claims theirs collides with: devices, ports, networks, in our order.
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

// Devices makes device claims, with no key, of names.
func Devices(names []string) []Device {
	out := make([]Device, 0, len(names))
	for _, n := range names {
		out = append(out, Device{Name: n})
	}
	return out
}
