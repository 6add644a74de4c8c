package vxlan

import (
	"context"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/flannel-go/flannel/subnet"
)

// TestIntegrationIncrementalRounds: random churn (leases added, removed, moved to another
// public address or MAC, a MAC handed from one peer to another) leaves the kernel exactly
// as the leases want, round after round; most rounds are incremental, and the cases they
// cannot take (a lease of another backend, a shared MAC, a MAC changing hands, a foreign
// change, Invalidate) take the full round and then let incremental rounds resume.
func TestIntegrationIncrementalRounds(t *testing.T) {
	l := newLab(t)
	ctx := context.Background()
	cfg := testConfig(t, `{"Type":"vxlan"}`, false)
	b, _ := l.started(cfg)
	type spec struct{ pub, mac int }
	cur := map[int]spec{} // third octet of 10.5.x.0/24 -> peer
	extra := []subnet.Lease(nil)
	nextMAC := 1
	leases := func() []subnet.Lease {
		var out []subnet.Lease
		for _, x := range slices.Sorted(func(yield func(int) bool) {
			for x := range cur {
				if !yield(x) {
					return
				}
			}
		}) {
			s := cur[x]
			out = append(out, peer(fmt.Sprintf("10.5.%d.0/24", x), fmt.Sprintf("192.0.2.%d", 10+s.pub), fmt.Sprintf("0e:00:00:00:%02x:%02x", s.mac>>8, s.mac&0xff)))
		}
		out = append(out, extra...)
		slices.SortFunc(out, func(a, b subnet.Lease) int { return a.Subnet.Addr().Compare(b.Subnet.Addr()) })
		return out
	}
	// expect is what the kernel must hold: usable leases only, the first of a shared MAC.
	expect := func(ls []subnet.Lease) kernelView {
		v := kernelView{neigh: map[string]string{}, fdb: map[string]string{}, routes: map[string]string{}}
		for _, p := range ls {
			if p.Attrs.BackendType != "vxlan" {
				continue
			}
			gw := p.Subnet.Addr().String()
			mac := string(p.Attrs.BackendData[len(`{"VNI":1,"VtepMAC":"`) : len(p.Attrs.BackendData)-2])
			v.neigh[gw] = mac
			if _, dup := v.fdb[mac]; !dup {
				v.fdb[mac] = p.Attrs.PublicIP.String()
			}
			v.routes[p.Subnet.String()] = "via " + gw + " dev flannel.1 onlink"
		}
		return v
	}
	round := func(stage string) {
		t.Helper()
		ls := leases()
		if err := b.Reconcile(ctx, subnet.PeersOf(ls...)); err != nil {
			t.Fatalf("%s: Reconcile: %v", stage, err)
		}
		want := expect(ls)
		v := l.view("flannel.1", unix.AF_INET, cfg.Network)
		sameMap(t, stage+" neighbours", v.neigh, want.neigh)
		sameMap(t, stage+" fdb", v.fdb, want.fdb)
		sameMap(t, stage+" routes", v.routes, want.routes)
		out, err := exec.Command("ip", "-n", l.ns.Name, "nexthop", "show", "dev", "flannel.1").CombinedOutput()
		if err != nil {
			t.Fatalf("%s: ip nexthop show: %v\n%s", stage, err, out)
		}
		if n := strings.Count(string(out), "\n"); n != len(want.routes) {
			t.Errorf("%s: %d nexthop objects on flannel.1, want one per route (%d)", stage, n, len(want.routes))
		}
	}
	counts := func() (int, int) { return b.inc.rounds, b.inc.fallback }

	rng := rand.New(rand.NewPCG(7, 13))
	for x := 2; x < 202; x++ {
		cur[x] = spec{pub: rng.IntN(40), mac: nextMAC}
		nextMAC++
	}
	round("first")
	for step := range 40 {
		for range 1 + rng.IntN(12) {
			x := 2 + rng.IntN(240)
			s, ok := cur[x]
			switch op := rng.IntN(4); {
			case !ok:
				cur[x] = spec{pub: rng.IntN(40), mac: nextMAC}
				nextMAC++
			case op == 0:
				delete(cur, x)
			case op == 1:
				s.pub = (s.pub + 1 + rng.IntN(30)) % 40
				cur[x] = s
			case op == 2:
				s.mac = nextMAC
				nextMAC++
				cur[x] = s
			}
		}
		round(fmt.Sprintf("step %d", step))
	}
	inc, fb := counts()
	if inc < 35 {
		t.Errorf("%d incremental rounds of 40 churn rounds (%d fell back), want most", inc, fb)
	}

	// A MAC handed from one peer to another in one batch: full round.
	var from, to int
	for x := range cur {
		if from == 0 {
			from = x
		} else if to == 0 {
			to = x
		}
	}
	s := cur[to]
	s.mac = cur[from].mac
	delete(cur, from)
	cur[to] = s
	inc0, fb0 := counts()
	round("MAC changing hands")
	if inc, fb := counts(); inc != inc0 || fb != fb0+1 {
		t.Errorf("MAC changing hands: incremental %d->%d, fallbacks %d->%d; want a full round", inc0, inc, fb0, fb)
	}
	round("after the MAC changed hands")
	if inc, _ := counts(); inc != inc0+1 {
		t.Errorf("no incremental round after a full one")
	}

	// Leases a full round must settle: another backend's, two subnets sharing a MAC.
	for _, e := range [][]subnet.Lease{
		{{EnableIPv4: true, Subnet: netip.MustParsePrefix("10.5.250.0/24"), Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.99"), BackendType: "host-gw"}}},
		{peer("10.5.250.0/24", "192.0.2.98", "0e:00:00:00:ff:01"), peer("10.5.251.0/24", "192.0.2.98", "0e:00:00:00:ff:01")},
	} {
		extra = e
		inc0, _ := counts()
		round(fmt.Sprintf("special leases %d", len(e)))
		cur[3] = spec{pub: 1, mac: nextMAC}
		nextMAC++
		round(fmt.Sprintf("special leases %d, then a change", len(e)))
		if inc, _ := counts(); inc != inc0 {
			t.Errorf("special leases %d: %d incremental rounds, want none while they are there", len(e), inc-inc0)
		}
		extra = nil
		round(fmt.Sprintf("special leases %d gone", len(e)))
		delete(cur, 3)
		round(fmt.Sprintf("special leases %d gone, then a change", len(e)))
		if inc, _ := counts(); inc != inc0+1 {
			t.Errorf("special leases %d gone: %d incremental rounds, want 1", len(e), inc-inc0)
		}
	}

	// A change by someone else, or Invalidate: full round, with the kernel read.
	var gone int
	for x := range cur {
		gone = x
	}
	if out, err := exec.Command("ip", "-n", l.ns.Name, "neigh", "del", fmt.Sprintf("10.5.%d.0", gone), "dev", "flannel.1").CombinedOutput(); err != nil {
		t.Fatalf("ip neigh del: %v\n%s", err, out)
	}
	cur[4] = spec{pub: 2, mac: nextMAC}
	nextMAC++
	inc0, _ = counts()
	round("foreign change")
	b.Invalidate()
	delete(cur, 4)
	round("Invalidate")
	if inc, _ := counts(); inc != inc0 {
		t.Errorf("%d incremental rounds after a foreign change or Invalidate, want none", inc-inc0)
	}
}

// TestPrintOf: prints order by subnet, change with what the objects depend on, and take any
// lease without panicking.
func TestPrintOf(t *testing.T) {
	s := &incState{seed: maphash.MakeSeed()}
	base := peer("10.5.2.0/24", "192.0.2.2", "0e:00:00:00:00:02")
	v, ok := s.printOf(&base, 24)
	if !ok || v>>32 != 0x0a050200 {
		t.Fatalf("print of %v: %x, %v", base.Subnet, v, ok)
	}
	for _, tc := range []struct {
		name   string
		change func(l *subnet.Lease)
		ok     bool
		same   bool
	}{
		{"unchanged", func(*subnet.Lease) {}, true, true},
		{"public address", func(l *subnet.Lease) { l.Attrs.PublicIP = netip.MustParseAddr("192.0.2.3") }, true, false},
		{"backend data", func(l *subnet.Lease) { l.Attrs.BackendData = []byte(`{"VNI":1,"VtepMAC":"0e:00:00:00:00:03"}`) }, true, false},
		{"backend type", func(l *subnet.Lease) { l.Attrs.BackendType = "host-gw" }, true, false},
		{"no public address", func(l *subnet.Lease) { l.Attrs.PublicIP = netip.Addr{} }, true, false},
		{"IPv6 public address", func(l *subnet.Lease) { l.Attrs.PublicIP = netip.MustParseAddr("2001:db8::2") }, true, false},
		{"another length", func(l *subnet.Lease) { l.Subnet = netip.MustParsePrefix("10.5.2.0/25") }, false, false},
		{"no IPv4 subnet", func(l *subnet.Lease) { l.Subnet = netip.Prefix{} }, false, false},
		{"IPv6 subnet", func(l *subnet.Lease) { l.Subnet = netip.MustParsePrefix("2001:db8::/64") }, false, false},
	} {
		l := base
		tc.change(&l)
		w, ok := s.printOf(&l, 24)
		if ok != tc.ok || ok && (w == v) != tc.same {
			t.Errorf("%s: print %x (%v), base %x; want ok %v, same %v", tc.name, w, ok, v, tc.ok, tc.same)
		}
	}
}
