package daemon

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/claim"
	"github.com/flannel-go/flannel/pkg/control"
	"github.com/flannel-go/flannel/pkg/klogtest"
	"github.com/flannel-go/flannel/subnet"
)

// claimingBackend is a fakeBackend that claims vxlan's devices and port and counts its
// Prepare calls.
type claimingBackend struct {
	fakeBackend
	claims   claim.Set
	prepared atomic.Int32
}

func (b *claimingBackend) Claims() claim.Set { return b.claims }
func (b *claimingBackend) Prepare(ctx context.Context, prev *subnet.Lease) (*subnet.LeaseAttrs, error) {
	b.prepared.Add(1)
	return b.fakeBackend.Prepare(ctx, prev)
}

var vxlanClaims = func(vni int, dev string) claim.Set {
	return claim.Set{Devices: []claim.Device{{Name: dev, SetBy: "Backend.VNI"}},
		Ports: []claim.Port{{Family: claim.IPv4, Port: 8472, VNI: vni, SetBy: "Backend.Port"}}}
}

// other is the status of another running instance.
func other(prefix string, pid int, network string, claims *claim.Set, claimedAt time.Time, devices ...string) control.Found {
	in := control.Instance{PID: pid, Socket: "@flannel-go/etcd-prefix:" + prefix, Locks: []string{"etcd-prefix:" + prefix},
		Phase: control.PhaseRunning, BackendType: "vxlan", Devices: devices, Claims: claims, ClaimedAt: claimedAt,
		SubnetFile: "/run/flannel/" + strings.Trim(strings.ReplaceAll(prefix, "/", "-"), "-") + ".env"}
	if network != "" {
		in.Network = netip.MustParsePrefix(network)
	}
	return control.Found{Socket: in.Socket, Status: &control.Status{Instance: in}}
}

func TestCheckClaims(t *testing.T) {
	mine := vxlanClaims(1, "flannel.1")
	mine.Networks = []netip.Prefix{netip.MustParsePrefix("10.6.0.0/16")}
	long := time.Now().Add(-time.Hour)
	a1 := vxlanClaims(1, "flannel.1")
	a1.Networks = []netip.Prefix{netip.MustParsePrefix("10.5.0.0/16")}
	a2 := vxlanClaims(2, "flannel.2")
	a2.Networks = []netip.Prefix{netip.MustParsePrefix("10.5.0.0/16")}
	udp := claim.Set{Ports: []claim.Port{{Family: claim.IPv4, Port: 8472, Addr: netip.MustParseAddr("192.0.2.11"), SetBy: "Backend.Port"}}}
	tests := []struct {
		name   string
		others []control.Found
		want   string // the error; "" for none
	}{
		{"alone", nil, ""},
		{"another VNI", []control.Found{other("/vxlan-a/network", 100, "10.5.0.0/16", &a2, long, "flannel.2")}, ""},
		{"the same VNI", []control.Found{other("/vxlan-a/network", 100, "10.5.0.0/16", &a1, long, "flannel.1")},
			"device flannel.1 is taken by the flanneld of etcd-prefix:/vxlan-a/network (pid 100, backend vxlan, network 10.5.0.0/16, " +
				"subnet file /run/flannel/vxlan-a-network.env): set another Backend.VNI in this network's config " +
				"(also taken: VXLAN VNI 1 on UDP port 8472 (IPv4))"},
		{"a udp socket on our port", []control.Found{other("/udp/network", 101, "10.7.0.0/16", &udp, long, "flannel0")},
			"VXLAN VNI 1 on UDP port 8472 (IPv4) (theirs: UDP port 8472 (IPv4, 192.0.2.11)) is taken by the flanneld of etcd-prefix:/udp/network " +
				"(pid 101, backend vxlan, network 10.7.0.0/16, subnet file /run/flannel/udp-network.env): set another Backend.Port in this network's config"},
		{"an older daemon: devices and network only", []control.Found{other("/old/network", 102, "10.6.128.0/17", nil, time.Time{}, "flannel.1")},
			"device flannel.1 is taken by the flanneld of etcd-prefix:/old/network (pid 102, backend vxlan, network 10.6.128.0/17, " +
				"subnet file /run/flannel/old-network.env): set another Backend.VNI in this network's config (also taken: network 10.6.0.0/16 (theirs: 10.6.128.0/17))"},
		{"one that claimed later gives way", []control.Found{other("/vxlan-a/network", 100, "10.5.0.0/16", &a1, time.Now().Add(time.Hour), "flannel.1")}, ""},
		{"one that has not read its config", []control.Found{other("/vxlan-a/network", 100, "", nil, time.Time{})}, ""},
		{"the first collision is reported", []control.Found{
			other("/vxlan-a/network", 100, "10.5.0.0/16", &a2, long, "flannel.2"),
			other("/vxlan-c/network", 103, "10.6.0.0/24", &claim.Set{Networks: []netip.Prefix{netip.MustParsePrefix("10.6.0.0/24")}}, long)},
			"network 10.6.0.0/16 (theirs: 10.6.0.0/24) is taken by the flanneld of etcd-prefix:/vxlan-c/network (pid 103, backend vxlan, network 10.6.0.0/24, " +
				"subnet file /run/flannel/vxlan-c-network.env): set another Network, one that does not overlap theirs, in this network's config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := NewStatus(control.Status{Instance: control.Instance{Socket: "@flannel-go/etcd-prefix:/vxlan-b/network"}})
			deps := Deps{Status: st, Instances: func(context.Context) ([]control.Found, error) { return tt.others, nil }}
			found, err := checkClaims(context.Background(), deps, mine)
			var ce *ConflictError
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("err = %v, want none", err)
			case tt.want != "" && (!errors.As(err, &ce) || err.Error() != tt.want):
				t.Errorf("err =\n %v\nwant\n %s", err, tt.want)
			}
			if len(found) != len(tt.others) {
				t.Errorf("found %d instances, want %d", len(found), len(tt.others))
			}
			got, err := st.Get(context.Background())
			if err != nil || got.Instance.Claims == nil || len(claim.Conflicts(mine, *got.Instance.Claims)) != 3 || got.Instance.ClaimedAt.IsZero() {
				t.Errorf("claims not published before the check: %+v %v", got, err)
			}
		})
	}
}

// Of two instances that claim the same at the same moment, exactly one goes first.
func TestYields(t *testing.T) {
	now := time.Now()
	in := func(at time.Time, socket string) control.Instance {
		return control.Instance{ClaimedAt: at, Socket: socket}
	}
	for _, tt := range []struct {
		name  string
		other control.Instance
		own   string
		want  bool
	}{
		{"earlier", in(now.Add(-time.Millisecond), "@b"), "@a", true},
		{"later", in(now.Add(time.Millisecond), "@a"), "@b", false},
		{"no time", in(time.Time{}, "@b"), "@a", true},
		{"same time, lower socket", in(now, "@a"), "@b", true},
		{"same time, higher socket", in(now, "@b"), "@a", false},
	} {
		if got := yields(tt.other, now, tt.own); got != tt.want {
			t.Errorf("%s: yields = %v, want %v", tt.name, got, tt.want)
		}
		// The other side judges the other way round.
		if back := yields(in(now, tt.own), tt.other.ClaimedAt, tt.other.Socket); !tt.other.ClaimedAt.IsZero() && back == tt.want {
			t.Errorf("%s: both sides judge %v", tt.name, back)
		}
	}
}

// The refusal comes before the backend touches anything, and a stale device another
// instance uses now is left to it.
func TestRunClaims(t *testing.T) {
	newDeps := func(be backend.Backend, others ...control.Found) (Deps, *fakeManager) {
		m := &fakeManager{configs: []string{`{"Network":"10.6.0.0/16","Backend":{"Type":"fake"}}`},
			lease:   subnet.Lease{EnableIPv4: true, Subnet: netip.MustParsePrefix("10.6.85.0/24")},
			results: make(chan subnet.WatchResult), revoke: make(chan struct{})}
		return Deps{
			Manager:        m,
			Backends:       map[string]backend.Constructor{"fake": func(*backend.ExternalInterface, *subnet.Config) (backend.Backend, error) { return be, nil }},
			LookupExtIface: func(*subnet.Config) (*backend.ExternalInterface, error) { return &backend.ExternalInterface{}, nil },
			Instances:      func(context.Context) ([]control.Found, error) { return others, nil },
		}, m
	}
	tm := timings{configRetry: 5 * time.Millisecond, acquireRetry: time.Millisecond, acquireMax: 2 * time.Millisecond, resync: time.Hour, reconcileBack: time.Millisecond}
	taken := vxlanClaims(1, "flannel.1")

	t.Run("refused", func(t *testing.T) {
		be := &claimingBackend{claims: vxlanClaims(1, "flannel.1")}
		deps, m := newDeps(be, other("/vxlan-a/network", 100, "10.5.0.0/16", &taken, time.Now().Add(-time.Minute), "flannel.1"))
		err := run(context.Background(), Config{SubnetFile: filepath.Join(t.TempDir(), "b.env")}, deps, tm)
		var ce *ConflictError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), "device flannel.1 is taken by the flanneld of etcd-prefix:/vxlan-a/network (pid 100") {
			t.Fatalf("run = %v, want a conflict over flannel.1", err)
		}
		if be.prepared.Load() != 0 || m.gotAttrs != nil {
			t.Errorf("the backend prepared (%d) or a lease was acquired (%v) before the refusal", be.prepared.Load(), m.gotAttrs)
		}
	})

	t.Run("stale device of another instance now", func(t *testing.T) {
		be := &claimingBackend{claims: vxlanClaims(2, "fake0")}
		deps, m := newDeps(be, other("/vxlan-a/network", 100, "10.5.0.0/16", &taken, time.Now().Add(-time.Minute), "flannel.1"))
		subnetFile := filepath.Join(t.TempDir(), "b.env")
		// This instance ran with VNI 1 before; flannel.1 is the other network's now.
		if err := writeState(statePath(subnetFile), &state{Key: "10.6.85.0-24", Devices: []string{"flannel.1", "fake-old", "fake0"}}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- run(ctx, Config{SubnetFile: subnetFile}, deps, tm) }()
		waitFor(t, "the state file of this run", func() bool {
			st, err := readState(statePath(subnetFile))
			return err == nil && st != nil && slices.Equal(st.Devices, []string{"fake0"})
		})
		cancel()
		if err := <-errc; err != nil {
			t.Fatalf("run = %v", err)
		}
		be.mu.Lock()
		defer be.mu.Unlock()
		if !slices.Equal(be.removed, []string{"fake-old"}) {
			t.Errorf("removed %q, want fake-old only", be.removed)
		}
		if m.gotAttrs == nil {
			t.Error("no lease acquired")
		}
	})
}

// A device of ours that a stopped instance's state file records is adopted with a
// warning; our own state file and a running instance's are not warned about.
func TestWarnRecordedDevices(t *testing.T) {
	buf := klogtest.Capture(t, 0)

	dir := t.TempDir()
	ownState := statePath(filepath.Join(dir, "b.env"))
	// "lo" exists in every network namespace; "fg-absent0" nowhere.
	for file, devs := range map[string][]string{
		"b.env":       {"lo"},
		"a.env":       {"lo", "fg-absent0"},
		"running.env": {"lo"},
	} {
		if err := writeState(statePath(filepath.Join(dir, file)), &state{Devices: devs}); err != nil {
			t.Fatal(err)
		}
	}
	running := other("/running/network", 100, "10.9.0.0/16", nil, time.Time{})
	running.Status.Instance.SubnetFile = filepath.Join(dir, "running.env")
	mine := claim.Set{Devices: []claim.Device{{Name: "lo", SetBy: "Backend.VNI"}, {Name: "fg-absent0", SetBy: "Backend.VNI"}}}
	warnRecordedDevices(ownState, mine, []control.Found{running})
	klog.Flush()
	out := buf.String()
	if n := strings.Count(out, "Adopting a device recorded by the state file of a flanneld instance that is not running"); n != 1 ||
		!strings.Contains(out, `device="lo"`) || !strings.Contains(out, `stateFile="`+statePath(filepath.Join(dir, "a.env"))+`"`) ||
		!strings.Contains(out, "give one of the two networks another Backend.VNI") {
		t.Errorf("%d warnings, want one about lo in a.state.json:\n%s", n, out)
	}
}
