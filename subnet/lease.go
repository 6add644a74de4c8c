package subnet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// LeaseAttrs is what a node advertises with its lease; its JSON is upstream's, byte for byte.
type LeaseAttrs struct {
	PublicIP      netip.Addr // IPv4; the zero Addr is written as "0.0.0.0"
	PublicIPv6    netip.Addr // the zero Addr is written as null
	BackendType   string
	BackendData   json.RawMessage
	BackendV6Data json.RawMessage
}

// MarshalJSON writes the attributes in upstream's field order and omission rules.
func (a LeaseAttrs) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	pub := "0.0.0.0"
	if a.PublicIP.IsValid() {
		pub = a.PublicIP.String()
	}
	b.WriteString(`{"PublicIP":`)
	writeJSONString(&b, pub)
	b.WriteString(`,"PublicIPv6":`)
	if a.PublicIPv6.IsValid() {
		writeJSONString(&b, a.PublicIPv6.String())
	} else {
		b.WriteString("null")
	}
	if a.BackendType != "" {
		b.WriteString(`,"BackendType":`)
		writeJSONString(&b, a.BackendType)
	}
	for _, f := range []struct {
		name string
		raw  json.RawMessage
	}{{"BackendData", a.BackendData}, {"BackendV6Data", a.BackendV6Data}} {
		if len(f.raw) == 0 {
			continue
		}
		b.WriteString(`,"` + f.name + `":`)
		if err := json.Compact(&b, f.raw); err != nil {
			return nil, fmt.Errorf("%s: %w", f.name, err)
		}
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func writeJSONString(b *bytes.Buffer, s string) {
	enc, _ := json.Marshal(s)
	b.Write(enc)
}

// UnmarshalJSON accepts upstream's shapes, including v0.10's (no PublicIPv6) and null fields.
func (a *LeaseAttrs) UnmarshalJSON(data []byte) error {
	var raw struct {
		PublicIP      *string
		PublicIPv6    *string
		BackendType   string
		BackendData   json.RawMessage
		BackendV6Data json.RawMessage
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	*a = LeaseAttrs{BackendType: raw.BackendType, BackendData: raw.BackendData, BackendV6Data: raw.BackendV6Data}
	if raw.PublicIP != nil && *raw.PublicIP != "" {
		ip, err := netip.ParseAddr(*raw.PublicIP)
		if err != nil || !ip.Is4() {
			return fmt.Errorf("invalid PublicIP %q", *raw.PublicIP)
		}
		if !ip.IsUnspecified() {
			a.PublicIP = ip
		}
	}
	if raw.PublicIPv6 != nil && *raw.PublicIPv6 != "" {
		ip, err := netip.ParseAddr(*raw.PublicIPv6)
		if err != nil || !ip.Is6() || ip.Is4In6() {
			return fmt.Errorf("invalid PublicIPv6 %q", *raw.PublicIPv6)
		}
		a.PublicIPv6 = ip
	}
	if string(a.BackendData) == "null" {
		a.BackendData = nil
	}
	if string(a.BackendV6Data) == "null" {
		a.BackendV6Data = nil
	}
	return nil
}

// Lease is one node's claim on a subnet (and/or an IPv6 subnet).
type Lease struct {
	EnableIPv4 bool
	EnableIPv6 bool
	Subnet     netip.Prefix // IPv4 subnet (masked)
	IPv6Subnet netip.Prefix // IPv6 subnet (masked), zero when absent
	Attrs      LeaseAttrs
	// Expiration is the end of the datastore lease; zero for reservations and kube leases.
	Expiration time.Time
}

// SamePeer reports whether a and b differ at most in Expiration.
func SamePeer(a, b Lease) bool {
	return a.Subnet == b.Subnet && a.IPv6Subnet == b.IPv6Subnet &&
		a.EnableIPv4 == b.EnableIPv4 && a.EnableIPv6 == b.EnableIPv6 &&
		a.Attrs.PublicIP == b.Attrs.PublicIP && a.Attrs.PublicIPv6 == b.Attrs.PublicIPv6 &&
		a.Attrs.BackendType == b.Attrs.BackendType &&
		string(a.Attrs.BackendData) == string(b.Attrs.BackendData) &&
		string(a.Attrs.BackendV6Data) == string(b.Attrs.BackendV6Data)
}

// Key returns the lease's subnet key (the last element of its etcd key).
func (l *Lease) Key() string { return MakeSubnetKey(l.Subnet, l.IPv6Subnet) }

// MakeSubnetKey formats "10.5.85.0-24" or "10.5.85.0-24&fd00::-64"; no IPv4 subnet is "0.0.0.0-0".
func MakeSubnetKey(sn, sn6 netip.Prefix) string {
	var buf [80]byte
	return string(appendSubnetKey(buf[:0], sn, sn6))
}

// subnetKeyRE is upstream's key pattern, unanchored at the start as upstream's is.
var subnetKeyRE = regexp.MustCompile(`(\d+\.\d+.\d+.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?$`)

// ParseSubnetKey parses a subnet key; "0.0.0.0-0" and a missing IPv6 part yield zero prefixes.
func ParseSubnetKey(key string) (sn, sn6 netip.Prefix, err error) {
	if sn, sn6, ok := parsePlainSubnetKey(key); ok {
		return sn, sn6, nil
	}
	return parseSubnetKeyRE(key)
}

// parsePlainSubnetKey parses daemon-written keys without allocating; ok false: use the pattern.
func parsePlainSubnetKey(key string) (sn, sn6 netip.Prefix, ok bool) {
	v4, rest, ok := strings.Cut(key, "-")
	if !ok || strings.Count(v4, ".") != 3 || strings.Trim(v4, ".0123456789") != "" {
		return sn, sn6, false
	}
	a, err := netip.ParseAddr(v4)
	if err != nil || !a.Is4() {
		return sn, sn6, false
	}
	bits, rest, has6 := strings.Cut(rest, "&")
	n, err := strconv.ParseUint(bits, 10, 5)
	if err != nil || bits == "" || bits[0] == '+' {
		return sn, sn6, false
	}
	if p := netip.PrefixFrom(a, int(n)).Masked(); p.Bits() > 0 {
		sn = p
	}
	if !has6 {
		return sn, sn6, true
	}
	v6, bits6, ok := strings.Cut(rest, "-")
	if !ok || v6 == "" || strings.Trim(v6, ":0123456789abcdef") != "" || strings.Contains(bits6, "-") {
		return netip.Prefix{}, netip.Prefix{}, false
	}
	a6, err := netip.ParseAddr(v6)
	if err != nil || !a6.Is6() || a6.Is4In6() {
		return netip.Prefix{}, netip.Prefix{}, false
	}
	n6, err := strconv.ParseUint(bits6, 10, 7)
	if err != nil || bits6 == "" || bits6[0] == '+' {
		return netip.Prefix{}, netip.Prefix{}, false
	}
	return sn, netip.PrefixFrom(a6, int(n6)).Masked(), true
}

func parseSubnetKeyRE(key string) (sn, sn6 netip.Prefix, err error) {
	m := subnetKeyRE.FindStringSubmatch(key)
	if m == nil {
		return sn, sn6, fmt.Errorf("bad subnet key %q", key)
	}
	a, err := netip.ParseAddr(m[1])
	if err != nil || !a.Is4() {
		return sn, sn6, fmt.Errorf("bad subnet key %q: bad IPv4 address", key)
	}
	n, err := strconv.ParseUint(m[2], 10, 5) // 0..31 as upstream
	if err != nil {
		return sn, sn6, fmt.Errorf("bad subnet key %q: bad prefix length", key)
	}
	if p := netip.PrefixFrom(a, int(n)).Masked(); p.Bits() > 0 {
		sn = p
	}
	if m[3] != "" {
		a6, err := netip.ParseAddr(m[3])
		if err != nil || !a6.Is6() || a6.Is4In6() {
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("bad subnet key %q: bad IPv6 address", key)
		}
		n6, err := strconv.ParseUint(m[4], 10, 7)
		if err != nil {
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("bad subnet key %q: bad IPv6 prefix length", key)
		}
		sn6 = netip.PrefixFrom(a6, int(n6)).Masked()
	}
	return sn, sn6, nil
}

// EventType says whether a lease appeared (or changed) or went away.
type EventType int

const (
	EventAdded EventType = iota
	EventRemoved
)

func (t EventType) String() string {
	if t == EventRemoved {
		return "removed"
	}
	return "added"
}

// Event is one change to the lease set. Removed events carry at least the subnets. A
// lease whose subnets change under one name is a Removed event then an Added one.
type Event struct {
	Type   EventType
	Lease  Lease
	Origin Origin
}

// Candidate is one lease of a snapshot, with its Origin.
type Candidate struct {
	Lease  Lease
	Origin Origin
}

// WatchResult is either a complete Snapshot (non-nil, maybe empty) replacing all that is
// known, or a batch of Events. Bad leases come too (Origin.Defect); the node's own never.
type WatchResult struct {
	Snapshot []Candidate
	Events   []Event
}

// CandidatesOf returns the leases as candidates of unknown origin (key as name, no seniority).
func CandidatesOf(ls ...Lease) []Candidate {
	out := make([]Candidate, len(ls))
	for i := range ls {
		out[i].Lease = ls[i]
	}
	return out
}

// IsSnapshot reports whether the result replaces the whole lease set.
func (r WatchResult) IsSnapshot() bool { return r.Snapshot != nil }

// FamilySubnet returns the lease's masked subnet of one family (IPv6 when v6), if it has one.
func (l *Lease) FamilySubnet(v6 bool) (sn netip.Prefix, ok bool) {
	sn = l.Subnet
	if v6 {
		sn = l.IPv6Subnet
	}
	if !sn.IsValid() || sn.Addr().Is4() == v6 {
		return netip.Prefix{}, false
	}
	return sn.Masked(), true
}

// EventCounts counts the result's events: leases added or changed, and removed.
func (r WatchResult) EventCounts() (added, removed int) {
	for _, ev := range r.Events {
		if ev.Type == EventRemoved {
			removed++
		} else {
			added++
		}
	}
	return added, removed
}

// ErrLeaseRevoked is returned by KeepLease when the node's own lease was deleted or expired.
var ErrLeaseRevoked = errors.New("lease has been revoked")

// Manager is the datastore side of flannel. Methods may block and return when ctx ends;
// WatchLeases and KeepLease retry transient errors with backoff.
type Manager interface {
	// Name describes the manager for logs.
	Name() string
	// GetNetworkConfig fetches and validates the network configuration.
	GetNetworkConfig(ctx context.Context) (*Config, error)
	// AcquireLease obtains (or reuses) this node's lease, advertising attrs.
	AcquireLease(ctx context.Context, cfg *Config, attrs *LeaseAttrs) (*Lease, error)
	// KeepLease renews the lease until ctx ends (nil) or the lease is gone (ErrLeaseRevoked).
	KeepLease(ctx context.Context, lease *Lease) error
	// WatchLeases sends a snapshot, then event batches, and a new snapshot whenever events may
	// have been missed. It returns nil when ctx ends and never closes out.
	WatchLeases(ctx context.Context, out chan<- WatchResult) error
}

// PermanentError marks a problem retrying cannot fix (a pod CIDR outside the Network).
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// IsPermanent reports whether err (or an error it wraps) is a PermanentError.
func IsPermanent(err error) bool {
	var pe *PermanentError
	return errors.As(err, &pe)
}
