package etcd

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-go/flannel/subnet"
)

// TestGolden checks the bytes upstream flanneld reads: key layout, lease JSON and TTL.
func TestGolden(t *testing.T) {
	cli, p := setup(t, `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`)
	m := newManager(t, Config{Endpoints: []string{p.Endpoint()}, Prefix: "/coreos.com/network/",
		PrevSubnet: netip.MustParsePrefix("10.5.85.0/24")})
	before := time.Now()
	l := acquire(t, m, attrsFor("198.51.100.1"))

	const key = "/coreos.com/network/subnets/10.5.85.0-24"
	resp := getKV(t, cli, key)
	if len(resp.Kvs) != 1 {
		t.Fatalf("key %s missing; keys: %v", key, subnetKeys(t, cli))
	}
	const want = `{"PublicIP":"198.51.100.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"4e:7c:fc:75:67:c4"}}`
	if got := string(resp.Kvs[0].Value); got != want {
		t.Fatalf("value\n got %s\nwant %s", got, want)
	}
	if resp.Kvs[0].Lease == 0 {
		t.Fatal("lease key has no etcd lease")
	}
	ttl, err := cli.TimeToLive(tctx(t, 10*time.Second), clientv3.LeaseID(resp.Kvs[0].Lease))
	if err != nil {
		t.Fatal(err)
	}
	if ttl.GrantedTTL != 86400 || ttl.TTL < 86390 || ttl.TTL > 86400 {
		t.Fatalf("TTL granted %d remaining %d, want 86400", ttl.GrantedTTL, ttl.TTL)
	}
	if l.Subnet != netip.MustParsePrefix("10.5.85.0/24") || l.IPv6Subnet.IsValid() || !l.EnableIPv4 || l.EnableIPv6 {
		t.Fatalf("lease %+v", l)
	}
	if d := l.Expiration.Sub(before); d < 24*time.Hour-time.Minute || d > 24*time.Hour+time.Minute {
		t.Fatalf("Expiration %v is not about 24h away", l.Expiration)
	}
	if got := subnetKeys(t, cli); !slices.Equal(got, []string{key}) {
		t.Fatalf("keys %v", got)
	}
}

func TestGetNetworkConfig(t *testing.T) {
	p := startEtcd(t)
	cli := rawClient(t, p.Endpoint(), nil)
	m := newManager(t, Config{Endpoints: []string{p.Endpoint()}, Prefix: "/other/network"})
	ctx := tctx(t, 20*time.Second)
	if _, err := m.GetNetworkConfig(ctx); err == nil ||
		err.Error() != "flannel config not found in etcd store. Did you create your config using etcdv3 API?" {
		t.Fatalf("missing config: %v", err)
	}
	mustPut(t, cli, "/other/network/config", `{"Network":"10.5.0.0/29","SubnetMin":"10.6.0.0"}`)
	_, err := m.GetNetworkConfig(ctx)
	if err == nil || !strings.Contains(err.Error(), "network is too small. Minimum useful network prefix is /28") {
		t.Fatalf("invalid config: %v", err)
	}
	mustPut(t, cli, "/other/network/config", `{"network":"10.3.0.0/16","Backend":{"Type":"VXLAN"}}`)
	cfg, err := m.GetNetworkConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.SubnetLen != 24 || cfg.SubnetMin.String() != "10.3.1.0" || cfg.SubnetMax.String() != "10.3.255.0" || cfg.BackendType != "vxlan" {
		t.Fatalf("config %+v", cfg)
	}
}

func TestAcquireReuseByPublicIP(t *testing.T) {
	cli, p := setup(t, `{"Network":"10.5.0.0/16"}`)
	ep := []string{p.Endpoint()}
	first := acquire(t, newManager(t, Config{Endpoints: ep}), attrsFor("198.51.100.1"))
	other := acquire(t, newManager(t, Config{Endpoints: ep}), attrsFor("198.51.100.2"))
	if first.Subnet == other.Subnet {
		t.Fatal("two nodes got the same subnet")
	}
	oldLease := getKV(t, cli, DefaultPrefix+"/subnets/"+first.Key()).Kvs[0].Lease

	// A restart with a different previous subnet and new backend data keeps the subnet.
	a := attrsFor("198.51.100.1")
	a.BackendData = []byte(`{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}`)
	again := acquire(t, newManager(t, Config{Endpoints: ep, PrevSubnet: netip.MustParsePrefix("10.5.200.0/24")}), a)
	if again.Subnet != first.Subnet {
		t.Fatalf("reacquired %v, want %v", again.Subnet, first.Subnet)
	}
	kv := getKV(t, cli, DefaultPrefix+"/subnets/"+first.Key()).Kvs[0]
	if !strings.Contains(string(kv.Value), "02:00:00:00:00:01") {
		t.Fatalf("attributes not rewritten: %s", kv.Value)
	}
	if kv.Lease == 0 || kv.Lease == oldLease {
		t.Fatalf("lease not refreshed: old %x new %x", oldLease, kv.Lease)
	}
	if n := len(subnetKeys(t, cli)); n != 2 {
		t.Fatalf("%d keys, want 2", n)
	}
}

func TestAcquirePreviousSubnet(t *testing.T) {
	cli, p := setup(t, `{"Network":"10.5.0.0/16","SubnetMin":"10.5.10.0","SubnetMax":"10.5.100.0"}`)
	ep := []string{p.Endpoint()}
	l := acquire(t, newManager(t, Config{Endpoints: ep, PrevSubnet: netip.MustParsePrefix("10.5.42.0/24")}), attrsFor("198.51.100.1"))
	if l.Subnet.String() != "10.5.42.0/24" {
		t.Fatalf("got %v, want the previous subnet", l.Subnet)
	}
	// Held by someone else: ignored.
	l = acquire(t, newManager(t, Config{Endpoints: ep, PrevSubnet: netip.MustParsePrefix("10.5.42.0/24")}), attrsFor("198.51.100.2"))
	if l.Subnet.String() == "10.5.42.0/24" {
		t.Fatal("previous subnet held by another node was taken over")
	}
	// Outside SubnetMin..SubnetMax: ignored.
	l = acquire(t, newManager(t, Config{Endpoints: ep, PrevSubnet: netip.MustParsePrefix("10.5.101.0/24")}), attrsFor("198.51.100.3"))
	if l.Subnet.String() == "10.5.101.0/24" || !inRange(l.Subnet, "10.5.10.0", "10.5.100.0") {
		t.Fatalf("incompatible previous subnet handled wrongly: %v", l.Subnet)
	}
	// Wrong length: ignored.
	l = acquire(t, newManager(t, Config{Endpoints: ep, PrevSubnet: netip.MustParsePrefix("10.5.50.0/25")}), attrsFor("198.51.100.4"))
	if l.Subnet.Bits() != 24 {
		t.Fatalf("got %v", l.Subnet)
	}
	if n := len(subnetKeys(t, cli)); n != 4 {
		t.Fatalf("%d keys, want 4", n)
	}
}

func inRange(p netip.Prefix, lo, hi string) bool {
	return p.Addr().Compare(netip.MustParseAddr(lo)) >= 0 && p.Addr().Compare(netip.MustParseAddr(hi)) <= 0
}

// A /22 of /24s has three usable subnets (SubnetMin skips the first); a fourth node fails.
func TestAcquireRangeAndOutOfSubnets(t *testing.T) {
	cli, p := setup(t, `{"Network":"10.6.0.0/22","SubnetLen":24}`)
	ep := []string{p.Endpoint()}
	var got []string
	for i := 1; i <= 3; i++ {
		l := acquire(t, newManager(t, Config{Endpoints: ep}), attrsFor(fmt.Sprintf("198.51.100.%d", i)))
		got = append(got, l.Subnet.String())
	}
	slices.Sort(got)
	if want := []string{"10.6.1.0/24", "10.6.2.0/24", "10.6.3.0/24"}; !slices.Equal(got, want) {
		t.Fatalf("allocated %v, want %v", got, want)
	}
	m := newManager(t, Config{Endpoints: ep})
	cfg, err := m.GetNetworkConfig(tctx(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.AcquireLease(tctx(t, 10*time.Second), cfg, attrsFor("198.51.100.4"))
	if err == nil || err.Error() != "out of subnets" {
		t.Fatalf("fourth node: %v, want out of subnets", err)
	}
	if n := len(subnetKeys(t, cli)); n != 3 {
		t.Fatalf("%d keys", n)
	}
}

// Allocations stay in SubnetMin..SubnetMax, skip the first subnet, and are spread.
func TestAcquireRandomInRange(t *testing.T) {
	_, p := setup(t, `{"Network":"10.7.0.0/16"}`)
	m := newManager(t, Config{Endpoints: []string{p.Endpoint()}})
	seen := map[netip.Prefix]bool{}
	for i := 1; i <= 30; i++ {
		l := acquire(t, m, attrsFor(fmt.Sprintf("198.51.100.%d", i)))
		if !inRange(l.Subnet, "10.7.1.0", "10.7.255.0") || l.Subnet.Bits() != 24 {
			t.Fatalf("subnet %v outside the range", l.Subnet)
		}
		if seen[l.Subnet] {
			t.Fatalf("subnet %v allocated twice", l.Subnet)
		}
		seen[l.Subnet] = true
	}
	lowest := 0
	for i := 1; i <= 30; i++ {
		if seen[netip.MustParsePrefix(fmt.Sprintf("10.7.%d.0/24", i))] {
			lowest++
		}
	}
	if lowest == 30 {
		t.Fatal("allocations are the 30 lowest subnets: not random")
	}
}

func TestAcquireIncompatibleDeleted(t *testing.T) {
	cli, p := setup(t, `{"Network":"10.5.0.0/16"}`)
	ep := []string{p.Endpoint()}
	old := acquire(t, newManager(t, Config{Endpoints: ep}), attrsFor("198.51.100.1"))
	mustPut(t, cli, DefaultPrefix+"/config", `{"Network":"10.9.0.0/16"}`)
	l := acquire(t, newManager(t, Config{Endpoints: ep, PrevSubnet: old.Subnet}), attrsFor("198.51.100.1"))
	if !inRange(l.Subnet, "10.9.1.0", "10.9.255.0") {
		t.Fatalf("new lease %v not in the new network", l.Subnet)
	}
	if keys := subnetKeys(t, cli); !slices.Equal(keys, []string{DefaultPrefix + "/subnets/" + l.Key()}) {
		t.Fatalf("keys %v: the old lease %v must be deleted", keys, old.Subnet)
	}
}

// 20 nodes race for exactly 20 free subnets; all win distinct ones.
func TestAcquireConcurrent(t *testing.T) {
	cli, p := setup(t, `{"Network":"10.8.0.0/16","SubnetMin":"10.8.1.0","SubnetMax":"10.8.20.0"}`)
	const n = 20
	ms := make([]*Manager, n)
	for i := range ms {
		ms[i] = newManager(t, Config{Endpoints: []string{p.Endpoint()}})
	}
	cfg, err := ms[0].GetNetworkConfig(tctx(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ctx := tctx(t, 60*time.Second)
	leases := make([]*subnet.Lease, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range ms {
		wg.Go(func() {
			<-start
			leases[i], errs[i] = ms[i].AcquireLease(ctx, cfg, attrsFor(fmt.Sprintf("198.51.100.%d", i+1)))
		})
	}
	close(start)
	wg.Wait()
	seen := map[netip.Prefix]int{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("node %d: %v", i, errs[i])
		}
		if j, dup := seen[leases[i].Subnet]; dup {
			t.Fatalf("nodes %d and %d share %v", j, i, leases[i].Subnet)
		}
		seen[leases[i].Subnet] = i
	}
	if k := len(subnetKeys(t, cli)); k != n {
		t.Fatalf("%d keys, want %d", k, n)
	}
	for i := range n {
		kv := getKV(t, cli, DefaultPrefix+"/subnets/"+leases[i].Key()).Kvs[0]
		if !strings.Contains(string(kv.Value), fmt.Sprintf(`"198.51.100.%d"`, i+1)) {
			t.Fatalf("key of node %d holds %s", i, kv.Value)
		}
	}
}

// Keys carry both subnets, so the CAS on the key alone would let two nodes share an IPv6
// subnet; 8 nodes race for exactly 8 IPv6 subnets.
func TestAcquireConcurrentDualStack(t *testing.T) {
	cli, p := setup(t, `{"Network":"10.8.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/60","IPv6SubnetLen":64,
		"IPv6SubnetMin":"fc00:0:0:1::","IPv6SubnetMax":"fc00:0:0:8::"}`)
	const n = 8
	ms := make([]*Manager, n)
	for i := range ms {
		ms[i] = newManager(t, Config{Endpoints: []string{p.Endpoint()}})
	}
	cfg, err := ms[0].GetNetworkConfig(tctx(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ctx := tctx(t, 60*time.Second)
	leases := make([]*subnet.Lease, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range ms {
		wg.Go(func() {
			<-start
			a := attrsFor(fmt.Sprintf("198.51.100.%d", i+1))
			a.PublicIPv6 = netip.MustParseAddr(fmt.Sprintf("fd00::%d", i+1))
			leases[i], errs[i] = ms[i].AcquireLease(ctx, cfg, a)
		})
	}
	close(start)
	wg.Wait()
	seen4, seen6 := map[netip.Prefix]bool{}, map[netip.Prefix]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("node %d: %v", i, errs[i])
		}
		l := leases[i]
		if !l.EnableIPv4 || !l.EnableIPv6 || seen4[l.Subnet] || seen6[l.IPv6Subnet] {
			t.Fatalf("node %d: lease %v %v duplicates or lacks a family", i, l.Subnet, l.IPv6Subnet)
		}
		seen4[l.Subnet], seen6[l.IPv6Subnet] = true, true
	}
	if k := len(subnetKeys(t, cli)); k != n {
		t.Fatalf("%d keys, want %d", k, n)
	}
}

// IPv6 only: nodes are told apart by PublicIPv6 (upstream compares the IPv4 PublicIP,
// 0.0.0.0 for everyone).
func TestAcquireIPv6Only(t *testing.T) {
	cli, p := setup(t, `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}`)
	ep := []string{p.Endpoint()}
	v6attrs := func(a string) *subnet.LeaseAttrs {
		return &subnet.LeaseAttrs{PublicIPv6: netip.MustParseAddr(a), BackendType: "vxlan", BackendV6Data: []byte(`{"VNI":1,"VtepMAC":"4e:7c:fc:75:67:c4"}`)}
	}
	l1 := acquire(t, newManager(t, Config{Endpoints: ep}), v6attrs("fd00::1"))
	l2 := acquire(t, newManager(t, Config{Endpoints: ep}), v6attrs("fd00::2"))
	if l1.IPv6Subnet == l2.IPv6Subnet {
		t.Fatalf("both nodes got %v", l1.IPv6Subnet)
	}
	for _, l := range []*subnet.Lease{l1, l2} {
		if l.EnableIPv4 || !l.EnableIPv6 || l.Subnet.IsValid() || l.IPv6Subnet.Bits() != 64 {
			t.Fatalf("lease %+v", l)
		}
		if !strings.HasPrefix(l.Key(), "0.0.0.0-0&fc00:0:0:") {
			t.Fatalf("key %q", l.Key())
		}
	}
	again := acquire(t, newManager(t, Config{Endpoints: ep}), v6attrs("fd00::1"))
	if again.IPv6Subnet != l1.IPv6Subnet {
		t.Fatalf("node 1 reacquired %v, want %v", again.IPv6Subnet, l1.IPv6Subnet)
	}
	kv := getKV(t, cli, DefaultPrefix+"/subnets/"+l1.Key()).Kvs[0]
	if want := `{"PublicIP":"0.0.0.0","PublicIPv6":"fd00::1","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"4e:7c:fc:75:67:c4"}}`; string(kv.Value) != want {
		t.Fatalf("value %s, want %s", kv.Value, want)
	}
	if n := len(subnetKeys(t, cli)); n != 2 {
		t.Fatalf("%d keys, want 2", n)
	}
}

func TestAcquireDualStackPrevious(t *testing.T) {
	cli, p := setup(t, `{"Network":"10.12.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:12::/48","IPv6SubnetLen":56}`)
	m := newManager(t, Config{Endpoints: []string{p.Endpoint()},
		PrevSubnet: netip.MustParsePrefix("10.12.13.0/24"), PrevIPv6Subnet: netip.MustParsePrefix("fd00:12:0:1300::/56")})
	a := attrsFor("198.51.100.1")
	a.PublicIPv6 = netip.MustParseAddr("fd00::1")
	l := acquire(t, m, a)
	const key = DefaultPrefix + "/subnets/10.12.13.0-24&fd00:12:0:1300::-56"
	if got := subnetKeys(t, cli); !slices.Equal(got, []string{key}) {
		t.Fatalf("keys %v, want %s (lease %v %v)", got, key, l.Subnet, l.IPv6Subnet)
	}
}

// A key without an etcd lease is reused by the node it names and stays without one.
func TestReservation(t *testing.T) {
	cli, p := setup(t, `{"Network":"10.5.0.0/16"}`)
	const key = DefaultPrefix + "/subnets/10.5.200.0-24"
	mustPut(t, cli, key, `{"PublicIP":"198.51.100.1","PublicIPv6":null}`)
	m := newManager(t, Config{Endpoints: []string{p.Endpoint()}, LeaseTTL: 3 * time.Second, RenewMargin: time.Second})
	l := acquire(t, m, attrsFor("198.51.100.1"))
	if l.Subnet.String() != "10.5.200.0/24" || !l.Expiration.IsZero() {
		t.Fatalf("lease %v expiration %v, want the reservation with zero expiration", l.Subnet, l.Expiration)
	}
	check := func() {
		t.Helper()
		kv := getKV(t, cli, key).Kvs[0]
		if kv.Lease != 0 {
			t.Fatalf("reservation got etcd lease %x", kv.Lease)
		}
		if !strings.Contains(string(kv.Value), `"BackendType":"vxlan"`) {
			t.Fatalf("reservation value not rewritten: %s", kv.Value)
		}
	}
	check()
	// KeepLease never attaches a TTL (the TTL here would make it renew every 2 s).
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.KeepLease(ctx, l) }()
	time.Sleep(5 * time.Second)
	check()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("KeepLease after cancel: %v", err)
	}
	// Another node does not get the reserved subnet.
	other := acquire(t, newManager(t, Config{Endpoints: []string{p.Endpoint()}, PrevSubnet: netip.MustParsePrefix("10.5.200.0/24")}), attrsFor("198.51.100.2"))
	if other.Subnet.String() == "10.5.200.0/24" {
		t.Fatal("reserved subnet given to another node")
	}
}

// A lease under a non-canonical key is replaced by a canonical one.
func TestAcquireNonCanonicalKey(t *testing.T) {
	cli, p := setup(t, `{"Network":"10.5.0.0/16"}`)
	mustPut(t, cli, DefaultPrefix+"/subnets/10.5.200.7-24", `{"PublicIP":"198.51.100.1","PublicIPv6":null}`)
	m := newManager(t, Config{Endpoints: []string{p.Endpoint()}, PrevSubnet: netip.MustParsePrefix("10.5.200.0/24")})
	l := acquire(t, m, attrsFor("198.51.100.1"))
	want := []string{DefaultPrefix + "/subnets/10.5.200.0-24"}
	if got := subnetKeys(t, cli); l.Subnet.String() != "10.5.200.0/24" || !slices.Equal(got, want) {
		t.Fatalf("lease %v keys %v, want %v", l.Subnet, got, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := m.KeepLease(ctx, l); err != nil {
		t.Fatalf("KeepLease: %v", err)
	}
}

// Rejected leases never block allocation: wrong length, alias keys and bad public
// addresses take no subnet; a bad value on a canonical key takes only that key. A
// previous subnet held by such a key is given up for a free one.
func TestAcquireRejectedLeasesTakeNothing(t *testing.T) {
	cli, p := setup(t, `{"Network":"10.6.0.0/22","SubnetLen":24}`)
	mustPut(t, cli, subnets+"10.6.0.0-22", leaseValue("198.51.100.9"))                   // wrong length, covers all
	mustPut(t, cli, subnets+"10.6.1.7-24", leaseValue("198.51.100.9"))                   // alias of 10.6.1.0/24
	mustPut(t, cli, subnets+"10.6.2.0-24", `{"PublicIP":"127.0.0.1","PublicIPv6":null}`) // bad public address
	mustPut(t, cli, subnets+"10.6.3.0-24", `{"PublicIP":`)                               // garbage on a canonical key
	m := newManager(t, Config{Endpoints: []string{p.Endpoint()}, PrevSubnet: netip.MustParsePrefix("10.6.3.0/24")})
	l := acquire(t, m, attrsFor("198.51.100.1"))
	if l.Subnet.String() != "10.6.1.0/24" {
		t.Fatalf("got %s, want 10.6.1.0/24, the only free key (10.6.2.0-24 and 10.6.3.0-24 exist)", l.Subnet)
	}
	// The first snapshot is the acquisition's listing, with every bad lease in it.
	r := next(t, startWatch(t, m), 30*time.Second)
	if len(r.Snapshot) != 4 {
		t.Fatalf("first snapshot of %d leases, want the 4 bad ones", len(r.Snapshot))
	}
}
