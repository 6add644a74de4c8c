// Package control is the daemon's control socket on its instance lock: one request line
// in, one JSON Response out. Each end requires the peer to be root (SO_PEERCRED), as anyone
// may bind an abstract socket name first.
package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/flannel-go/flannel/pkg/claim"
)

// SchemaVersion of the Response changes only when a field changes meaning or goes away.
const SchemaVersion = 1

// Limits of the protocol.
const (
	MaxRequest  = 256      // bytes of a request line, newline included
	MaxResponse = 64 << 20 // bytes of a response (20,000 peers take about 5 MB)
)

// Verbs a request may name.
const (
	VerbStatus = "status"
)

// Request is one parsed request line.
type Request struct {
	Verb string
}

// String is the request line without its newline.
func (r Request) String() string { return r.Verb }

// ParseRequest parses a request line (its newline, or "\r\n", may be left on).
func ParseRequest(line []byte) (Request, error) {
	if len(line) > MaxRequest {
		return Request{}, fmt.Errorf("request longer than %d bytes", MaxRequest)
	}
	s := strings.TrimSuffix(strings.TrimSuffix(string(line), "\n"), "\r")
	switch s {
	case VerbStatus:
		return Request{Verb: s}, nil
	case "":
		return Request{}, errors.New("empty request")
	}
	if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r > 0x7e }) {
		return Request{}, errors.New("unknown request (not printable)")
	}
	return Request{}, fmt.Errorf("unknown request %q (known: %s)", s, VerbStatus)
}

// Response is the one document a server sends: a status or an error.
type Response struct {
	SchemaVersion int     `json:"schemaVersion"`
	Error         string  `json:"error,omitempty"`
	Status        *Status `json:"status,omitempty"`
}

// ParseResponse decodes a response of SchemaVersion; a daemon's error is a *ServerError.
func ParseResponse(data []byte) (*Status, error) {
	if len(data) > MaxResponse {
		return nil, fmt.Errorf("response longer than %d bytes", MaxResponse)
	}
	var r Response
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("decoding the response: %w", err)
	}
	if dec.More() {
		return nil, errors.New("decoding the response: data after the document")
	}
	if r.SchemaVersion != SchemaVersion {
		return nil, fmt.Errorf("response schema version %d, want %d", r.SchemaVersion, SchemaVersion)
	}
	switch {
	case r.Error != "" && r.Status != nil:
		return nil, errors.New("response holds both an error and a status")
	case r.Error != "":
		return nil, &ServerError{Msg: r.Error}
	case r.Status == nil:
		return nil, errors.New("response holds neither an error nor a status")
	}
	return r.Status, nil
}

// ServerError is an error the daemon answered with.
type ServerError struct{ Msg string }

func (e *ServerError) Error() string { return "the daemon answered: " + e.Msg }

// Status is what a daemon reports about itself.
type Status struct {
	Instance  Instance  `json:"instance"`
	Config    Config    `json:"config"`
	Lease     *Lease    `json:"lease"` // nil until a lease is held
	Peers     Peers     `json:"peers"`
	Readiness Readiness `json:"readiness"`
}

// Phases of a daemon's life, in order.
const (
	PhaseStarting  = "starting"        // before the network config was read
	PhaseAcquiring = "acquiring-lease" // config read, backend made, lease not yet held
	PhaseRunning   = "running"         // lease held, subnet file written, peers reconciled
	PhaseStopping  = "stopping"        // shutting down
)

// Instance identifies the daemon and what it owns: two instances in one netns must differ
// in Locks and not share Devices.
type Instance struct {
	PID         int             `json:"pid"`
	Version     string          `json:"version"`
	Started     time.Time       `json:"started"`
	Socket      string          `json:"socket"`    // the control socket's name
	Locks       []string        `json:"locks"`     // instance-lock keys held, the socket's first
	Datastore   string          `json:"datastore"` // "etcd" or "kube"
	Phase       string          `json:"phase"`
	Network     netip.Prefix    `json:"network,omitzero"`
	IPv6Network netip.Prefix    `json:"ipv6Network,omitzero"`
	BackendType string          `json:"backendType,omitempty"`
	Backend     json.RawMessage `json:"backend,omitempty"` // as written; absent keys default
	Devices     []string        `json:"devices,omitempty"` // links the backend owns
	// Claims are set once the config is read; of two colliding instances the later to
	// publish (ClaimedAt) refuses to start.
	Claims     *claim.Set `json:"claims,omitempty"`
	ClaimedAt  time.Time  `json:"claimedAt,omitzero"`
	SubnetFile string     `json:"subnetFile"`
}

// ClaimSet is Claims plus Devices (a udp TUN is named once started); without Claims,
// the devices and networks.
func (in Instance) ClaimSet() claim.Set {
	var s claim.Set
	if in.Claims != nil {
		s = *in.Claims
		s.Devices = slices.Clone(s.Devices)
	} else {
		for _, n := range []netip.Prefix{in.Network, in.IPv6Network} {
			if n.IsValid() {
				s.Networks = append(s.Networks, n)
			}
		}
	}
	for _, d := range in.Devices {
		if !slices.ContainsFunc(s.Devices, func(c claim.Device) bool { return c.Name == d }) {
			s.Devices = append(s.Devices, claim.Device{Name: d})
		}
	}
	return s
}

// Config is the configuration in effect, without credentials.
type Config struct {
	Options json.RawMessage `json:"options"`           // after flags and FLANNELD_*, secrets masked
	Network json.RawMessage `json:"network,omitempty"` // as read from the datastore
}

// Lease is a subnet lease, the daemon's own or a peer's.
type Lease struct {
	Key           string          `json:"key"`
	Subnet        netip.Prefix    `json:"subnet,omitzero"`
	IPv6Subnet    netip.Prefix    `json:"ipv6Subnet,omitzero"`
	PublicIP      netip.Addr      `json:"publicIP,omitzero"`
	PublicIPv6    netip.Addr      `json:"publicIPv6,omitzero"`
	BackendType   string          `json:"backendType,omitempty"`
	BackendData   json.RawMessage `json:"backendData,omitempty"`
	BackendV6Data json.RawMessage `json:"backendV6Data,omitempty"`
	Expiration    time.Time       `json:"expiration,omitzero"` // absent for reservations and kube
}

// Peers are the other nodes' leases as the daemon sees them.
type Peers struct {
	Synced   bool       `json:"synced"` // false: no snapshot yet, both lists empty
	Admitted []Lease    `json:"admitted"`
	Rejected []Rejected `json:"rejected"`
}

// Rejected is a peer lease kept out of the kernel, with the reason.
type Rejected struct {
	Key    string `json:"key"`
	Reason string `json:"reason"`
	Lease  *Lease `json:"lease,omitempty"` // what of it decoded, if anything
}

// Readiness is the daemon's /readyz, check by check.
type Readiness struct {
	Ready  bool    `json:"ready"`
	Checks []Check `json:"checks"`
}

// Check is one readiness check.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Reason string `json:"reason,omitempty"`
	Note   string `json:"note,omitempty"` // the owner's remark beside it
}
