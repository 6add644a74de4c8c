package etcd

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/pkg/ip"
	"github.com/flannel-go/flannel/subnet"
)

const maxCandidates = 100

// errRace means another writer changed the subnet keys meanwhile (retried); upstream's text.
var errRace = errors.New("subnet already exists")

var errOutOfSubnets = errors.New("out of subnets")

// AcquireLease reuses this node's lease (by PublicIP, or PublicIPv6 without IPv4), else takes
// the previous subnet if free and fitting, else a random free one; lost races are retried.
func (m *Manager) AcquireLease(ctx context.Context, cfg *subnet.Config, attrs *subnet.LeaseAttrs) (*subnet.Lease, error) {
	if cfg == nil || attrs == nil {
		return nil, errors.New("AcquireLease: nil config or attributes")
	}
	value, cli, err := m.encodeFor(attrs)
	if err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		l, err := m.tryAcquire(ctx, cli, cfg, attrs, value)
		if err == nil {
			return l, nil
		}
		if !errors.Is(err, errRace) {
			return nil, m.explain(ctx, err)
		}
		klog.V(1).InfoS("Subnet keys changed while acquiring a lease, retrying", "attempt", attempt)
		pause := 5*time.Millisecond + rand.N(50*time.Millisecond)
		if !sleepCtx(ctx, pause) {
			return nil, fmt.Errorf("acquiring lease: %w", ctx.Err())
		}
	}
}

func (m *Manager) tryAcquire(ctx context.Context, cli *clientv3.Client, cfg *subnet.Config, attrs *subnet.LeaseAttrs, value []byte) (lease *subnet.Lease, err error) {
	// Only admitted leases take a subnet (a rejected one its key): a bad lease never blocks ours.
	rule := subnet.NewRule(cfg, m.cfg.Admission)
	var mine []entry
	var taken4, taken6 []netip.Prefix
	var peers []subnet.Candidate
	size := func(n int) {
		peers, taken4 = make([]subnet.Candidate, 0, n), make([]netip.Prefix, 0, n)
		if cfg.EnableIPv6 {
			taken6 = make([]netip.Prefix, 0, n)
		}
	}
	rev, err := m.scan(ctx, cli, size, func(e *entry) {
		if sameNode(cfg, attrs, e) {
			mine = append(mine, *e)
			return
		}
		if sn, sn6, ok := rule.Taken(&e.c); ok {
			if sn.IsValid() {
				taken4 = append(taken4, sn)
			}
			if sn6.IsValid() {
				taken6 = append(taken6, sn6)
			}
		}
		peers = append(peers, e.c)
	})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err == nil {
			m.prime(peers, rev)
			m.mu.Lock()
			m.own = m.subnetKey(lease.Subnet, lease.IPv6Subnet)
			m.mu.Unlock()
		}
	}()

	for i, e := range mine {
		key := e.name()
		l := &e.c.Lease
		// A non-canonical key ("10.5.1.7-24") cannot be kept: KeepLease and peers use the canonical one.
		if compatible(cfg, *l) && key == m.subnetKey(l.Subnet, l.IPv6Subnet) {
			klog.InfoS(fmt.Sprintf("Found lease (ip: %s ipv6: %s) for current IP (%s), reusing",
				fmtV4(l.Subnet), fmtV6(l.IPv6Subnet), nodeAddr(cfg, attrs)))
			for _, other := range mine[i+1:] {
				peers = append(peers, other.c) // left as they are: peers to judge
			}
			return m.rewrite(ctx, cli, e, attrs, value)
		}
		klog.InfoS(fmt.Sprintf("Found lease (ip: %s ipv6: %s) for current IP (%s) but not compatible with current config, deleting",
			fmtV4(l.Subnet), fmtV6(l.IPv6Subnet), nodeAddr(cfg, attrs)))
		resp, err := cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", e.modRev)).
			Then(clientv3.OpDelete(key)).Commit()
		if err != nil {
			return nil, fmt.Errorf("deleting incompatible lease %s: %w", key, err)
		}
		if !resp.Succeeded {
			return nil, errRace
		}
	}

	var sn, sn6 netip.Prefix
	if cfg.EnableIPv4 {
		if sn = choose(m.cfg.PrevSubnet, cfg.SubnetFits, taken4, cfg.SubnetMin, cfg.SubnetMax, cfg.SubnetLen); !sn.IsValid() {
			return nil, errOutOfSubnets
		}
	}
	if cfg.EnableIPv6 {
		if sn6 = choose(m.cfg.PrevIPv6Subnet, cfg.IPv6SubnetFits, taken6, cfg.IPv6SubnetMin, cfg.IPv6SubnetMax, cfg.IPv6SubnetLen); !sn6.IsValid() {
			return nil, errOutOfSubnets
		}
	}

	key := m.subnetKey(sn, sn6)
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.Version(key), "=", 0)}
	if sn6.IsValid() {
		// Keys carry both subnets, so two nodes could pick the same IPv6 subnet under different
		// keys: also require that no subnet key changed since the list.
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(m.subnetsDir), "<", rev+1).WithPrefix())
	}
	start := time.Now()
	g, err := cli.Grant(ctx, m.ttlSeconds())
	if err != nil {
		return nil, fmt.Errorf("granting etcd lease: %w", err)
	}
	resp, err := cli.Txn(ctx).If(cmps...).
		Then(clientv3.OpPut(key, string(value), clientv3.WithLease(g.ID))).Commit()
	if err != nil || !resp.Succeeded {
		revoke(cli, g.ID)
		if err != nil {
			return nil, fmt.Errorf("creating %s: %w", key, err)
		}
		return nil, errRace
	}
	klog.InfoS(fmt.Sprintf("Allocated lease (ip: %s ipv6: %s) to current node (%s) ",
		fmtV4(sn), fmtV6(sn6), nodeAddr(cfg, attrs)))
	l := leaseFor(sn, sn6)
	l.Attrs = *attrs
	l.Expiration = start.Add(time.Duration(g.TTL) * time.Second)
	return &l, nil
}

// rewrite stores attrs in an existing key of ours with a fresh etcd lease (none if reserved).
func (m *Manager) rewrite(ctx context.Context, cli *clientv3.Client, e entry, attrs *subnet.LeaseAttrs, value []byte) (*subnet.Lease, error) {
	key := e.name()
	l := leaseFor(e.c.Lease.Subnet, e.c.Lease.IPv6Subnet)
	l.Attrs = *attrs
	unchanged := clientv3.Compare(clientv3.ModRevision(key), "=", e.modRev)
	if e.etcdLease == 0 {
		resp, err := cli.Txn(ctx).If(unchanged).Then(clientv3.OpPut(key, string(value))).Commit()
		if err != nil {
			return nil, fmt.Errorf("updating reservation %s: %w", key, err)
		}
		if !resp.Succeeded {
			return nil, errRace
		}
		klog.InfoS("Subnet is reserved for this node (key without TTL); keeping it as a reservation", "key", key)
		return &l, nil
	}
	start := time.Now()
	g, err := cli.Grant(ctx, m.ttlSeconds())
	if err != nil {
		return nil, fmt.Errorf("granting etcd lease: %w", err)
	}
	resp, err := cli.Txn(ctx).If(unchanged).Then(clientv3.OpPut(key, string(value), clientv3.WithLease(g.ID))).Commit()
	if err != nil || !resp.Succeeded {
		revoke(cli, g.ID)
		if err != nil {
			return nil, fmt.Errorf("updating lease %s: %w", key, err)
		}
		return nil, errRace
	}
	l.Expiration = start.Add(time.Duration(g.TTL) * time.Second)
	return &l, nil
}

// sameNode: same PublicIP, or with IPv4 disabled (all advertise 0.0.0.0), same PublicIPv6.
func sameNode(cfg *subnet.Config, attrs *subnet.LeaseAttrs, e *entry) bool {
	if e.c.Origin.Defect != nil {
		return false
	}
	if cfg.EnableIPv4 {
		return attrs.PublicIP.IsValid() && e.c.Lease.Attrs.PublicIP == attrs.PublicIP
	}
	return attrs.PublicIPv6.IsValid() && e.c.Lease.Attrs.PublicIPv6 == attrs.PublicIPv6
}

// compatible: each enabled family present and in range, each disabled family absent.
func compatible(cfg *subnet.Config, l subnet.Lease) bool {
	v4 := cfg.SubnetFits(l.Subnet)
	if !cfg.EnableIPv4 {
		v4 = !l.Subnet.IsValid()
	}
	v6 := cfg.IPv6SubnetFits(l.IPv6Subnet)
	if !cfg.EnableIPv6 {
		v6 = !l.IPv6Subnet.IsValid()
	}
	return v4 && v6
}

// choose returns prev if still free and fitting, else a random free subnet in [first, last].
func choose(prev netip.Prefix, fits func(netip.Prefix) bool, taken []netip.Prefix, first, last netip.Addr, bits int) netip.Prefix {
	if sn := previous(prev, fits, taken); sn.IsValid() {
		return sn
	}
	klog.InfoS(fmt.Sprintf("Picking subnet in range %s ... %s", first, last))
	return pick(freeSubnets(first, last, bits, taken, maxCandidates))
}

func previous(prev netip.Prefix, fits func(netip.Prefix) bool, taken []netip.Prefix) netip.Prefix {
	if !prev.IsValid() {
		return netip.Prefix{}
	}
	prev = prev.Masked()
	if !fits(prev) {
		klog.InfoS(fmt.Sprintf("Found previously leased subnet (%s) that is not compatible with the Etcd network config, ignoring", prev))
		return netip.Prefix{}
	}
	for _, t := range taken {
		if t.Overlaps(prev) {
			klog.InfoS("Previously leased subnet is held by another lease, ignoring", "subnet", prev.String())
			return netip.Prefix{}
		}
	}
	klog.InfoS(fmt.Sprintf("Found previously leased subnet (%s), reusing", prev))
	return prev
}

// freeSubnets returns up to limit free subnets of length bits in [first, last]; taken is sorted.
func freeSubnets(first, last netip.Addr, bits int, taken []netip.Prefix, limit int) []netip.Prefix {
	if !first.IsValid() || !last.IsValid() || first.Is4() != last.Is4() {
		return nil
	}
	same := make([]netip.Addr, 0, len(taken))
	var other []netip.Prefix
	for _, t := range taken {
		if t.Bits() == bits {
			same = append(same, t.Masked().Addr())
		} else {
			other = append(other, t)
		}
	}
	slices.SortFunc(same, netip.Addr.Compare)
	p, err := first.Prefix(bits)
	if err != nil {
		return nil
	}
	var out []netip.Prefix
	for j := 0; p.Addr().Compare(last) <= 0 && len(out) < limit; {
		for j < len(same) && same[j].Compare(p.Addr()) < 0 {
			j++
		}
		free := j == len(same) || same[j] != p.Addr()
		for _, t := range other {
			if free && t.Overlaps(p) {
				free = false
			}
		}
		if free {
			out = append(out, p)
		}
		next, ok := ip.NextSubnet(p)
		if !ok || next.Addr().Compare(p.Addr()) <= 0 {
			break
		}
		p = next
	}
	return out
}

func pick(c []netip.Prefix) netip.Prefix {
	if len(c) == 0 {
		return netip.Prefix{}
	}
	return c[rand.IntN(len(c))]
}

// fmtV4 and fmtV6 print subnets as upstream's logs do (an absent subnet as the zero network).
func fmtV4(p netip.Prefix) string {
	if !p.IsValid() {
		return "0.0.0.0/0"
	}
	return p.String()
}

func fmtV6(p netip.Prefix) string {
	if !p.IsValid() {
		return "::/0"
	}
	return p.String()
}

func nodeAddr(cfg *subnet.Config, attrs *subnet.LeaseAttrs) string {
	if !cfg.EnableIPv4 && attrs.PublicIPv6.IsValid() {
		return attrs.PublicIPv6.String()
	}
	if !attrs.PublicIP.IsValid() {
		return "0.0.0.0"
	}
	return attrs.PublicIP.String()
}

func (m *Manager) encodeFor(attrs *subnet.LeaseAttrs) ([]byte, *clientv3.Client, error) {
	value, err := attrs.MarshalJSON()
	if err != nil {
		return nil, nil, fmt.Errorf("encoding lease attributes: %w", err)
	}
	cli, err := m.client()
	if err != nil {
		return nil, nil, err
	}
	return value, cli, nil
}
