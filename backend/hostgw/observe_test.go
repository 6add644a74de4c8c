package hostgw

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/flannel-go/flannel/pkg/netlinkx"
	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

type countObserver map[string]int

func (c countObserver) KernelObjects(kind observe.Kind, op observe.Op, n int) {
	c[string(kind)+"/"+string(op)] += n
}
func (c countObserver) TxChecksumOffload(string, bool)     {}
func (c countObserver) WireguardImplementation(string)     {}
func (c countObserver) DatastoreError(observe.Op, error)   {}
func (c countObserver) WatchRestarted(observe.Kind, error) {}
func (c countObserver) WatchLive(observe.Kind)             {}
func (c countObserver) LeaseExpiration(time.Time)          {}
func (c countObserver) PacketsDropped(string, int)         {}
func (c countObserver) PeerProgrammingFailures(reason string, n int) {
	c["refused/"+reason] += n
}
func (c countObserver) PeersSkipped(reason string, n int) {
	if n == 0 {
		delete(c, "skipped/"+reason) // a state: 0 is no entry
		return
	}
	c["skipped/"+reason] = n
}

// TestReconcileReportsChanges: added, re-added and removed routes are reported; an idle
// round reports nothing.
func TestReconcileReportsChanges(t *testing.T) {
	l := newNSLab(t)
	ctx := context.Background()
	cfg, err := subnet.ParseConfig(`{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}`)
	if err != nil {
		t.Fatal(err)
	}
	be, err := NewWithHandle(l.h, l.ext, cfg)
	if err != nil {
		t.Fatal(err)
	}
	obs := countObserver{}
	be.(observe.Setter).SetObserver(obs)
	attrs, err := be.Prepare(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	own := subnet.Lease{EnableIPv4: true, Subnet: netip.MustParsePrefix("10.5.1.0/24"), Attrs: *attrs}
	nw, err := be.Start(ctx, &own)
	if err != nil {
		t.Fatal(err)
	}
	peers := []subnet.Lease{lease("10.5.2.0/24", "192.0.2.2", BackendType), lease("10.5.3.0/24", "192.0.2.3", BackendType)}
	steps := []struct {
		name  string
		prep  func()
		peers []subnet.Lease
		want  countObserver
	}{
		{"two peers", nil, peers, countObserver{"route/add": 2}},
		{"idle", nil, peers, countObserver{"route/add": 2}},
		{"a route deleted by hand", func() {
			if err := l.h.RouteDel(&netlink.Route{LinkIndex: l.u0.Attrs().Index, Dst: netlinkx.IPNet(netip.MustParsePrefix("10.5.2.0/24"))}); err != nil {
				t.Fatal(err)
			}
		}, peers, countObserver{"route/add": 3}},
		{"a lease gone", nil, peers[1:], countObserver{"route/add": 3, "route/remove": 1}},
		// 198.51.100.0/24 is behind a router: the kernel refuses the route, once.
		{"a peer not on-link", nil, append(peers[1:], lease("10.5.4.0/24", "198.51.100.4", BackendType)),
			countObserver{"route/add": 3, "route/remove": 1, "refused/unreachable": 1}},
		{"held back", nil, append(peers[1:], lease("10.5.4.0/24", "198.51.100.4", BackendType)),
			countObserver{"route/add": 3, "route/remove": 1, "refused/unreachable": 1}},
		// a peer on vxlan is skipped and counted while it lasts
		{"a peer on vxlan", nil, append(peers[1:], lease("10.5.5.0/24", "192.0.2.5", "vxlan")),
			countObserver{"route/add": 3, "route/remove": 1, "refused/unreachable": 1, "skipped/other_backend": 1}},
		{"it switched to host-gw", nil, append(peers[1:], lease("10.5.5.0/24", "192.0.2.5", BackendType)),
			countObserver{"route/add": 4, "route/remove": 1, "refused/unreachable": 1}},
	}
	for _, s := range steps {
		if s.prep != nil {
			s.prep()
		}
		if err := nw.Reconcile(ctx, subnet.PeersOf(s.peers...)); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if len(obs) != len(s.want) {
			t.Fatalf("%s: reported %v, want %v", s.name, obs, s.want)
		}
		for k, v := range s.want {
			if obs[k] != v {
				t.Fatalf("%s: reported %v, want %v", s.name, obs, s.want)
			}
		}
	}
}
