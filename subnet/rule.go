package subnet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
)

// Reason names why a peer lease is not admitted (flannel_leases_rejected_total's label).
type Reason string

const (
	NonCanonicalKey Reason = "non_canonical_key" // etcd: the key is not the one made from its subnets
	OutsideNetwork  Reason = "outside_network"   // no subnet inside the configured networks
	WrongLength     Reason = "wrong_length"      // etcd: a subnet is not SubnetLen / IPv6SubnetLen long
	OverlapsOwn     Reason = "overlaps_own"      // a subnet overlaps this node's
	OverlapsPeer    Reason = "overlaps_peer"     // a subnet overlaps an older admitted peer's
	BadPublicIP     Reason = "bad_public_ip"     // a public address that is no usable unicast address
	LocalPublicIP   Reason = "local_public_ip"   // a public address that is one of this node's
	TooLarge        Reason = "too_large"         // the value is larger than MaxValueSize
	BadBackendData  Reason = "bad_backend_data"  // backend data its backend refuses
	BadJSON         Reason = "bad_json"          // a value that does not decode
	DuplicateKey    Reason = "duplicate_key"     // its backend key (a WireGuard public key) is an older admitted peer's
)

// Reasons lists every Reason (for consumers that declare them in advance: metrics).
func Reasons() []Reason {
	return []Reason{NonCanonicalKey, OutsideNetwork, WrongLength, OverlapsOwn, OverlapsPeer,
		BadPublicIP, LocalPublicIP, TooLarge, BadBackendData, BadJSON, DuplicateKey}
}

// MaxValueSize bounds a lease's encoded value; managers check it before decoding.
const MaxValueSize = 4096

// Rejection says why a lease is not admitted.
type Rejection struct {
	Reason Reason
	Err    error // the detail, for logs and listings
}

// String renders the rejection as "<reason>: <detail>".
func (r *Rejection) String() string {
	if r.Err == nil {
		return string(r.Reason)
	}
	return string(r.Reason) + ": " + r.Err.Error()
}

// Reject is a Rejection for reason, with the detail in Errorf's words.
func Reject(reason Reason, format string, args ...any) *Rejection {
	return &Rejection{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// Origin is what the admission rule needs to know of a lease besides its content.
type Origin struct {
	// Name is the lease's datastore name: the etcd key below <prefix>/subnets/ (empty when
	// canonical, to keep snapshots small) or the node name.
	Name string
	// Seniority orders overlapping leases, older (smaller) first, then by name.
	Seniority int64
	// Version is the value's revision; a rejection is logged once per name and version.
	Version int64
	// Defect is why the manager could not build the lease, which then holds its subnets at most.
	Defect *Rejection
}

// RuleOptions are the parts of the admission rule that main wires in.
type RuleOptions struct {
	// Kube selects Kubernetes mode: names are node names and pod CIDRs may have any length.
	Kube bool
	// BackendData checks a family's backend data by BackendType; types without a check pass.
	BackendData map[string]func(data json.RawMessage) error
	// BackendKey names, by BackendType, the key admitted peers must not share (wireguard: the
	// public key); only the network's backend's is used.
	BackendKey map[string]func(l *Lease) (key string, ok bool)
	// LocalAddrs lists the node's own addresses (InterfaceAddrs); nil: none known.
	LocalAddrs func() ([]netip.Addr, error)
}

// Rule is the per-lease part of the admission rule for one config; not safe for concurrent use.
type Rule struct {
	v4, v6     bool
	net4, net6 netip.Prefix
	len4, len6 int  // required subnet lengths; 0: any (Kubernetes mode)
	keys       bool // names are subnet keys that must be canonical (etcd mode)
	backend    map[string]func(json.RawMessage) error
	backendKey func(*Lease) (string, bool) // the network's backend's BackendKey; nil: none
	localFn    func() ([]netip.Addr, error)
	local      []netip.Addr
}

// NewRule makes the rule for cfg and reads the node's addresses once.
func NewRule(cfg *Config, o RuleOptions) *Rule {
	r := &Rule{v4: cfg.EnableIPv4, v6: cfg.EnableIPv6, net4: cfg.Network, net6: cfg.IPv6Network,
		keys: !o.Kube, backend: o.BackendData, backendKey: o.BackendKey[cfg.BackendType], localFn: o.LocalAddrs}
	if !o.Kube {
		r.len4, r.len6 = cfg.SubnetLen, cfg.IPv6SubnetLen
	}
	r.RefreshLocal()
	return r
}

// RefreshLocal re-reads the node's addresses and reports whether they changed (kept on error).
func (r *Rule) RefreshLocal() (changed bool) {
	if r.localFn == nil {
		return false
	}
	addrs, err := r.localFn()
	if err != nil {
		return false
	}
	for i := range addrs {
		addrs[i] = addrs[i].Unmap().WithZone("")
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	addrs = slices.Compact(addrs)
	if slices.Equal(addrs, r.local) {
		return false
	}
	r.local = addrs
	return true
}

func (r *Rule) isLocal(a netip.Addr) bool {
	_, ok := slices.BinarySearchFunc(r.local, a.Unmap().WithZone(""), netip.Addr.Compare)
	return ok
}

// families reports which of the lease's subnets the rule judges: those of enabled families.
func (r *Rule) families(l *Lease) (has4, has6 bool) {
	has4 = r.v4 && l.Subnet.IsValid() && l.Subnet.Bits() > 0
	has6 = r.v6 && l.IPv6Subnet.IsValid()
	return has4, has6
}

// Check judges a candidate by the per-lease checks (defect, canonical key, subnets, public
// addresses, backend data); nil means it passes.
func (r *Rule) Check(c *Candidate) *Rejection {
	if c.Origin.Defect != nil {
		return c.Origin.Defect
	}
	l := &c.Lease
	if r.keys && c.Origin.Name != "" && !IsSubnetKey(c.Origin.Name, l.Subnet, l.IPv6Subnet) {
		return Reject(NonCanonicalKey, "key %q is not %q, the key of its subnets", c.Origin.Name, MakeSubnetKey(l.Subnet, l.IPv6Subnet))
	}
	has4, has6 := r.families(l)
	if !has4 && !has6 {
		return Reject(OutsideNetwork, "no subnet of an enabled family (subnets %s, %s)", fmtPrefix(l.Subnet), fmtPrefix(l.IPv6Subnet))
	}
	for _, f := range [...]struct {
		has      bool
		sn, net  netip.Prefix
		length   int
		pub      netip.Addr
		v6       bool
		data     json.RawMessage
		dataName string
	}{
		{has4, l.Subnet, r.net4, r.len4, l.Attrs.PublicIP, false, l.Attrs.BackendData, "BackendData"},
		{has6, l.IPv6Subnet, r.net6, r.len6, l.Attrs.PublicIPv6, true, l.Attrs.BackendV6Data, "BackendV6Data"},
	} {
		if !f.has {
			continue
		}
		if f.sn.Addr().Is4() == f.v6 || !f.net.Contains(f.sn.Addr()) || f.sn.Bits() < f.net.Bits() {
			return Reject(OutsideNetwork, "subnet %s is outside the network %s", f.sn, f.net)
		}
		if f.length != 0 && f.sn.Bits() != f.length {
			return Reject(WrongLength, "subnet %s is not /%d long", f.sn, f.length)
		}
		if err := CheckPublicIP(f.pub, f.v6); err != nil {
			return &Rejection{Reason: BadPublicIP, Err: err}
		}
		if r.isLocal(f.pub) {
			return Reject(LocalPublicIP, "public address %s is one of this node's", f.pub)
		}
		if check := r.backend[l.Attrs.BackendType]; check != nil {
			if err := check(f.data); err != nil {
				return Reject(BadBackendData, "%s %s: %w", l.Attrs.BackendType, f.dataName, err)
			}
		}
	}
	return nil
}

// occupies reports whether a rejected lease still sits on a key the node could want for
// itself (canonical name, configured lengths): such a key cannot be created again (etcd).
func (r *Rule) occupies(c *Candidate) bool {
	l := &c.Lease
	if !r.keys || (c.Origin.Name != "" && !IsSubnetKey(c.Origin.Name, l.Subnet, l.IPv6Subnet)) {
		return false
	}
	ok4 := !r.v4 || (l.Subnet.IsValid() && l.Subnet.Bits() == r.len4)
	ok6 := !r.v6 || (l.IPv6Subnet.IsValid() && l.IPv6Subnet.Bits() == r.len6)
	if !r.v4 && l.Subnet.IsValid() && l.Subnet.Bits() > 0 || !r.v6 && l.IPv6Subnet.IsValid() {
		return false // a key with another family's subnet is another key than ours
	}
	return ok4 && ok6
}

// Taken reports the subnets of a listed lease that block the node's own pick (etcd): those of
// a lease that passes, fails only here (LocalPublicIP), or occupies its canonical key.
func (r *Rule) Taken(c *Candidate) (sn, sn6 netip.Prefix, ok bool) {
	if rej := r.Check(c); rej != nil && rej.Reason != LocalPublicIP && !r.occupies(c) {
		return netip.Prefix{}, netip.Prefix{}, false
	}
	return c.Lease.Subnet, c.Lease.IPv6Subnet, true
}

var broadcast4 = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// CheckPublicIP reports why a is not a usable unicast public address of its family (v6: IPv6).
func CheckPublicIP(a netip.Addr, v6 bool) error {
	fam := "IPv4"
	if v6 {
		fam = "IPv6"
	}
	switch {
	case !a.IsValid():
		return fmt.Errorf("no public %s address", fam)
	case a.Is4() == v6 || a.Is4In6():
		return fmt.Errorf("public address %s is not an %s address", a, fam)
	case a.Zone() != "":
		return fmt.Errorf("public address %s has a zone", a)
	case a.IsUnspecified():
		return fmt.Errorf("public address %s is unspecified", a)
	case a.IsLoopback():
		return fmt.Errorf("public address %s is a loopback address", a)
	case a.IsMulticast():
		return fmt.Errorf("public address %s is a multicast address", a)
	case a.IsLinkLocalUnicast():
		return fmt.Errorf("public address %s is a link-local address", a)
	case a == broadcast4:
		return fmt.Errorf("public address %s is the broadcast address", a)
	}
	return nil
}

// InterfaceAddrs lists the addresses of every interface in the daemon's network namespace.
func InterfaceAddrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("listing the node's addresses: %w", err)
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out, nil
}

// IsSubnetKey reports whether name is MakeSubnetKey(sn, sn6), without allocating.
func IsSubnetKey(name string, sn, sn6 netip.Prefix) bool {
	var buf [80]byte
	return bytes.Equal(appendSubnetKey(buf[:0], sn, sn6), []byte(name))
}

func appendSubnetKey(b []byte, sn, sn6 netip.Prefix) []byte {
	if sn.IsValid() {
		b = sn.Addr().AppendTo(b)
		b = append(b, '-')
		b = strconv.AppendInt(b, int64(sn.Bits()), 10)
	} else {
		b = append(b, "0.0.0.0-0"...)
	}
	if !sn6.IsValid() {
		return b
	}
	b = append(b, '&')
	b = sn6.Addr().AppendTo(b)
	b = append(b, '-')
	return strconv.AppendInt(b, int64(sn6.Bits()), 10)
}

func fmtPrefix(p netip.Prefix) string {
	if !p.IsValid() {
		return "none"
	}
	return p.String()
}
