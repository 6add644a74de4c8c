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

// LeaseAttrs is what a node advertises with its lease. Its JSON is byte-for-byte
// upstream's: {"PublicIP":"…","PublicIPv6":null|"…"[,"BackendType":…][,"BackendData":…][,"BackendV6Data":…]}.
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

// SamePeer reports whether two leases program the same kernel state on a peer: they
// are equal in everything but the expiration.
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

// MakeSubnetKey formats a subnet key: "10.5.85.0-24" or "10.12.13.0-24&fd00:12:13::-56".
// A missing IPv4 subnet is written as upstream does in IPv6-only mode: "0.0.0.0-0".
func MakeSubnetKey(sn, sn6 netip.Prefix) string {
	var buf [80]byte
	return string(appendSubnetKey(buf[:0], sn, sn6))
}

// subnetKeyRE is upstream's key pattern, unanchored at the start as upstream's is.
var subnetKeyRE = regexp.MustCompile(`(\d+\.\d+.\d+.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?$`)

// ParseSubnetKey parses a subnet key. The IPv4 part of "0.0.0.0-0" yields an invalid
// (zero) v4 prefix; sn6 is zero when the key has no IPv6 part.
func ParseSubnetKey(key string) (sn, sn6 netip.Prefix, err error) {
	if sn, sn6, ok := parsePlainSubnetKey(key); ok {
		return sn, sn6, nil
	}
	return parseSubnetKeyRE(key)
}

// parsePlainSubnetKey parses, without allocating, the keys daemons write
// ("10.5.85.0-24&fd00:5:85::-64") exactly as upstream's pattern would; ok is false for
// anything else, which parseSubnetKeyRE decides.
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

// parseSubnetKeyRE parses a key with upstream's pattern.
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
	// "0.0.0.0-0" is how upstream writes "no IPv4 subnet" (IPv6-only leases).
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

// WatchResult is one delivery of a lease watch: a complete Snapshot (non-nil, possibly
// empty) replacing everything known, or a batch of Events. Every lease the datastore holds
// is delivered, good or bad (Origin.Defect), except the node's own.
type WatchResult struct {
	Snapshot []Candidate
	Events   []Event
}

// CandidatesOf returns the leases as snapshot candidates of unknown origin (the key as
// name, no seniority): for tests and callers that hold plain leases.
func CandidatesOf(ls ...Lease) []Candidate {
	out := make([]Candidate, len(ls))
	for i := range ls {
		out[i].Lease = ls[i]
	}
	return out
}

// IsSnapshot reports whether the result replaces the whole lease set.
func (r WatchResult) IsSnapshot() bool { return r.Snapshot != nil }

// FamilySubnet is the lease's subnet of one family (IPv6 when v6), masked; ok is false
// when the lease has none of that family.
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

// ErrLeaseRevoked is returned by Manager.KeepLease when the node's own lease was deleted
// or expired in the datastore. The daemon exits non-zero so that a supervisor restarts it.
var ErrLeaseRevoked = errors.New("lease has been revoked")

// Manager is a subnet manager: the datastore side of flannel. Every method may block on
// the datastore and returns when ctx is cancelled; transient errors in WatchLeases and
// KeepLease are retried internally with backoff.
type Manager interface {
	// Name describes the manager for logs.
	Name() string
	// GetNetworkConfig fetches and validates the network configuration.
	GetNetworkConfig(ctx context.Context) (*Config, error)
	// AcquireLease obtains (or reuses) this node's lease, advertising attrs.
	AcquireLease(ctx context.Context, cfg *Config, attrs *LeaseAttrs) (*Lease, error)
	// KeepLease keeps the acquired lease alive (renewing before expiry) and watches it.
	// It returns nil when ctx is cancelled and ErrLeaseRevoked (wrapped) when the lease is gone.
	KeepLease(ctx context.Context, lease *Lease) error
	// WatchLeases sends the lease set to out: a snapshot, then event batches, and another
	// snapshot whenever events may have been missed. It returns nil when ctx is cancelled
	// and never closes out.
	WatchLeases(ctx context.Context, out chan<- WatchResult) error
}

// PermanentError marks a problem that retrying with the same configuration cannot fix (a
// Kubernetes pod CIDR outside the Network): the daemon exits non-zero so that its
// supervisor restarts it and the configuration is read afresh.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// IsPermanent reports whether err (or an error it wraps) is a PermanentError.
func IsPermanent(err error) bool {
	var pe *PermanentError
	return errors.As(err, &pe)
}
