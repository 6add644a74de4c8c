package vxlan

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flannel-go/flannel/pkg/kernelwatch"
	"github.com/flannel-go/flannel/subnet"
)

// TestIntegrationCacheNeverHidesDrift: rounds skip the dumps, and Settled holds, while only
// our writes touched the kernel; a change by someone else, Invalidate or a device change
// forces a read.
func TestIntegrationCacheNeverHidesDrift(t *testing.T) { cacheNeverHidesDrift(t, false) }

// TestIntegrationCacheSharesFeedWithWatch: the same while the kernel watch shares the
// feed: every foreign change kicks it, and the cache decides as when alone.
func TestIntegrationCacheSharesFeedWithWatch(t *testing.T) { cacheNeverHidesDrift(t, true) }

func cacheNeverHidesDrift(t *testing.T, watch bool) {
	l := newLab(t)
	ctx := context.Background()
	cfg := testConfig(t, `{"Type":"vxlan"}`, false)
	b, nw := l.started(cfg)
	if !b.kc.on {
		t.Fatal("no change subscription")
	}
	kicks := make(chan struct{}, 1)
	if watch {
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			done <- kernelwatch.Run(wctx, kernelwatch.Config{Filter: nw.WatchFilter(), Namespace: &l.ns.NsH,
				Settle:  time.Millisecond,
				Backoff: kernelwatch.Backoff{Window: time.Second, Threshold: 1 << 20, Base: time.Millisecond, Max: time.Millisecond, LargeBatch: 1 << 20}},
				func() {
					select {
					case kicks <- struct{}{}:
					default:
					}
				})
		}()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("kernel watch: %v", err)
			}
		})
	}
	// kicked waits for the watch's kick after a change by someone else (watch only).
	kicked := func(stage string) {
		t.Helper()
		if !watch {
			return
		}
		select {
		case <-kicks:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the kernel watch did not kick", stage)
		}
	}
	// quiet lets the watch take the echo of our own writes and forgets its kicks.
	quiet := func() {
		if !watch {
			return
		}
		time.Sleep(50 * time.Millisecond)
		select {
		case <-kicks:
		default:
		}
	}
	p2 := peer("10.5.2.0/24", "192.0.2.2", "0e:00:00:00:00:02")
	p3 := peer("10.5.3.0/24", "198.51.100.3", "0e:00:00:00:00:03")
	p4 := peer("10.5.4.0/24", "192.0.2.4", "0e:00:00:00:00:04")
	viewOf := func(peers ...subnet.Lease) kernelView {
		v := kernelView{neigh: map[string]string{}, fdb: map[string]string{}, routes: map[string]string{}}
		for _, p := range peers {
			gw := p.Subnet.Addr().String()
			mac := string(p.Attrs.BackendData[len(`{"VNI":1,"VtepMAC":"`) : len(p.Attrs.BackendData)-2])
			v.neigh[gw] = mac
			v.fdb[mac] = p.Attrs.PublicIP.String()
			v.routes[p.Subnet.String()] = "via " + gw + " dev flannel.1 onlink"
		}
		return v
	}
	settled := func(stage string, want bool) {
		t.Helper()
		if got := b.Settled(); got != want {
			t.Errorf("%s: Settled() = %v, want %v", stage, got, want)
		}
	}
	round := func(stage string, wantRead bool, peers ...subnet.Lease) {
		t.Helper()
		before := b.kc.reads
		if err := nw.Reconcile(ctx, subnet.PeersOf(peers...)); err != nil {
			t.Fatalf("%s: Reconcile: %v", stage, err)
		}
		if read := b.kc.reads != before; read != wantRead {
			t.Errorf("%s: read the kernel = %v, want %v", stage, read, wantRead)
		}
		want := viewOf(peers...)
		v := l.view("flannel.1", unix.AF_INET, cfg.Network)
		sameMap(t, stage+" neighbours", v.neigh, want.neigh)
		sameMap(t, stage+" fdb", v.fdb, want.fdb)
		sameMap(t, stage+" routes", v.routes, want.routes)
		settled(stage+": after the round", true)
	}
	ip := func(args ...string) {
		t.Helper()
		cmd := args[0]
		out, err := exec.Command(cmd, append([]string{"-n", l.ns.Name}, args[1:]...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}

	round("first", true, p2, p3)
	round("unchanged", false, p2, p3)
	round("lease delta", false, p2, p4)
	round("lease delta back", false, p2, p3)

	for _, d := range []struct {
		name string
		do   []string
	}{
		{"neighbour deleted", []string{"ip", "neigh", "del", "10.5.2.0", "dev", "flannel.1"}},
		{"neighbour changed", []string{"ip", "neigh", "replace", "10.5.2.0", "lladdr", "0e:00:00:00:00:99", "dev", "flannel.1", "nud", "permanent"}},
		{"neighbour made dynamic", []string{"ip", "neigh", "replace", "10.5.3.0", "lladdr", "0e:00:00:00:00:03", "dev", "flannel.1", "nud", "reachable"}},
		{"fdb deleted", []string{"bridge", "fdb", "del", "0e:00:00:00:00:02", "dev", "flannel.1", "dst", "192.0.2.2", "self"}},
		{"fdb changed", []string{"bridge", "fdb", "replace", "0e:00:00:00:00:03", "dev", "flannel.1", "dst", "192.0.2.77", "self", "permanent"}},
		{"fdb remote appended", []string{"bridge", "fdb", "append", "0e:00:00:00:00:03", "dev", "flannel.1", "dst", "192.0.2.78", "self", "permanent"}},
		{"route deleted", []string{"ip", "route", "del", "10.5.2.0/24"}},
		{"foreign route", []string{"ip", "route", "add", "10.5.9.0/24", "dev", "flannel.1"}},
		{"nexthop deleted", []string{"ip", "nexthop", "flush", "dev", "flannel.1"}},
		{"device down and up", []string{"sh", "-c", "ip -n " + l.ns.Name + " link set flannel.1 down && ip -n " + l.ns.Name + " link set flannel.1 up"}},
	} {
		quiet()
		if d.do[0] == "sh" {
			if out, err := exec.Command(d.do[0], d.do[1:]...).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", d.name, err, out)
			}
		} else {
			ip(d.do...)
		}
		kicked(d.name)
		settled(d.name, false)
		round(d.name, true, p2, p3)
		round(d.name+", then unchanged", false, p2, p3)
	}

	// Unrelated changes leave the cache valid.
	ip("ip", "link", "add", "fgv7", "type", "veth", "peer", "fgv8")
	ip("ip", "neigh", "replace", "192.0.2.99", "lladdr", "0e:00:00:00:00:98", "dev", "u0")
	settled("unrelated changes", true)
	round("unrelated changes", false, p2, p3)

	b.Invalidate()
	settled("after Invalidate", false)
	round("after Invalidate", true, p2, p3)
	round("after Invalidate, then unchanged", false, p2, p3)
}
