package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/kernelwatch"
	"github.com/flannel-go/flannel/pkg/metrics"
	"github.com/flannel-go/flannel/subnet"
)

// fakeManager is an in-memory subnet manager: the edge the daemon talks to.
type fakeManager struct {
	mu         sync.Mutex
	configs    []string // returned in turn by GetNetworkConfig; the last one sticks
	acquireErr int      // fail this many acquisitions first
	lease      subnet.Lease
	gotAttrs   *subnet.LeaseAttrs
	results    chan subnet.WatchResult
	revoke     chan struct{}
}

func (m *fakeManager) Name() string { return "fake" }
func (m *fakeManager) GetNetworkConfig(ctx context.Context) (*subnet.Config, error) {
	m.mu.Lock()
	s := m.configs[0]
	if len(m.configs) > 1 {
		m.configs = m.configs[1:]
	}
	m.mu.Unlock()
	return subnet.ParseConfig(s)
}
func (m *fakeManager) AcquireLease(ctx context.Context, cfg *subnet.Config, attrs *subnet.LeaseAttrs) (*subnet.Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.acquireErr > 0 {
		m.acquireErr--
		return nil, errors.New("etcd unreachable")
	}
	m.gotAttrs = attrs
	l := m.lease
	l.Attrs = *attrs
	return &l, nil
}
func (m *fakeManager) KeepLease(ctx context.Context, l *subnet.Lease) error {
	select {
	case <-ctx.Done():
		return nil
	case <-m.revoke:
		return fmt.Errorf("own lease deleted: %w", subnet.ErrLeaseRevoked)
	}
}
func (m *fakeManager) WatchLeases(ctx context.Context, out chan<- subnet.WatchResult) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case r := <-m.results:
			select {
			case out <- r:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

type fakeBackend struct {
	mu         sync.Mutex
	reconciles [][]subnet.Lease
	removed    []string // RemoveDevices' names
}

func (b *fakeBackend) Prepare(ctx context.Context, prev *subnet.Lease) (*subnet.LeaseAttrs, error) {
	return &subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.11"), BackendType: "fake"}, nil
}
func (b *fakeBackend) Start(ctx context.Context, l *subnet.Lease) (backend.Network, error) {
	return b, nil
}
func (b *fakeBackend) MTU() int          { return 1450 }
func (b *fakeBackend) Devices() []string { return []string{"fake0"} }
func (b *fakeBackend) RemoveDevices(names []string) error {
	b.mu.Lock()
	b.removed = append(b.removed, names...)
	b.mu.Unlock()
	return nil
}
func (b *fakeBackend) WatchFilter() kernelwatch.Filter {
	return kernelwatch.Filter{Devices: []string{"fake0"}}
}

// Reconcile records a copy of the peers: the collection is valid only during the call.
func (b *fakeBackend) Reconcile(ctx context.Context, peers subnet.Peers) error {
	b.mu.Lock()
	b.reconciles = append(b.reconciles, peers.Leases())
	b.mu.Unlock()
	return nil
}
func (b *fakeBackend) calls() [][]subnet.Lease {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([][]subnet.Lease(nil), b.reconciles...)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRunLifeCycle(t *testing.T) {
	dir := t.TempDir()
	subnetFile := filepath.Join(dir, "subnet.env")
	own := subnet.Lease{EnableIPv4: true, Subnet: netip.MustParsePrefix("10.5.85.0/24")}
	m := &fakeManager{
		configs:    []string{`{"Network":"10.5.0.0/30"}`, `{"Network":"10.5.0.0/16","Backend":{"Type":"fake"}}`},
		acquireErr: 2,
		lease:      own,
		results:    make(chan subnet.WatchResult),
		revoke:     make(chan struct{}),
	}
	be := &fakeBackend{}
	notified := make(chan string, 1)
	deps := Deps{
		Manager:  m,
		Backends: map[string]backend.Constructor{"fake": func(*backend.ExternalInterface, *subnet.Config) (backend.Backend, error) { return be, nil }},
		LookupExtIface: func(*subnet.Config) (*backend.ExternalInterface, error) {
			return &backend.ExternalInterface{}, nil
		},
		Notify: func(state string) error {
			notified <- state
			return nil
		},
		Metrics: metrics.New(),
	}
	// An earlier run with another config left flannel.1, which this network does not use.
	if err := writeState(statePath(subnetFile), &state{Key: "10.5.85.0-24", Devices: []string{"flannel.1", "fake0"}}); err != nil {
		t.Fatal(err)
	}
	tm := timings{configRetry: 5 * time.Millisecond, acquireRetry: time.Millisecond, acquireMax: 2 * time.Millisecond, resync: time.Hour, reconcileBack: time.Millisecond}
	errc := make(chan error, 1)
	go func() { errc <- run(context.Background(), Config{SubnetFile: subnetFile, IPMasq: true}, deps, tm) }()

	waitFor(t, "subnet file", func() bool { _, err := os.Stat(subnetFile); return err == nil })
	data, _ := os.ReadFile(subnetFile)
	if want := "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.85.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"; string(data) != want {
		t.Fatalf("subnet file:\n%s", data)
	}
	st, err := readState(statePath(subnetFile))
	if err != nil || st == nil || st.Key != "10.5.85.0-24" || len(st.Devices) != 1 || st.Devices[0] != "fake0" {
		t.Fatalf("state %+v %v", st, err)
	}
	be.mu.Lock()
	removed := slices.Clone(be.removed)
	be.mu.Unlock()
	if !slices.Equal(removed, []string{"flannel.1"}) {
		t.Fatalf("devices removed through the backend: %q, want the earlier run's flannel.1 only", removed)
	}
	select {
	case state := <-notified:
		if state != "READY=1" {
			t.Fatalf("notified %q, want READY=1", state)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the service manager was not told READY=1")
	}
	if len(be.calls()) != 0 {
		t.Fatal("reconciled before the first snapshot")
	}
	peer := subnet.Lease{EnableIPv4: true, Subnet: netip.MustParsePrefix("10.5.9.0/24"),
		Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.9"), BackendType: "fake", BackendData: json.RawMessage(`{}`)}}
	bad := peer
	bad.Subnet = netip.MustParsePrefix("10.5.85.128/25") // inside our own, and not /24: rejected
	m.results <- subnet.WatchResult{Snapshot: subnet.CandidatesOf(bad, peer)}
	waitFor(t, "first reconcile", func() bool { return len(be.calls()) == 1 })
	if c := be.calls()[0]; len(c) != 1 || c[0].Key() != "10.5.9.0-24" {
		t.Fatalf("first reconcile peers %v", c)
	}
	if got := counter(t, deps.Metrics, "flannel_leases_rejected_total", map[string]string{"reason": "wrong_length"}); got != 1 {
		t.Fatalf("flannel_leases_rejected_total{reason=\"wrong_length\"} = %v, want 1", got)
	}
	m.results <- subnet.WatchResult{Events: []subnet.Event{{Type: subnet.EventRemoved, Lease: peer}}}
	waitFor(t, "second reconcile", func() bool { return len(be.calls()) == 2 })
	if c := be.calls()[1]; len(c) != 0 {
		t.Fatalf("second reconcile peers %v", c)
	}
	close(m.revoke)
	select {
	case err := <-errc:
		if !errors.Is(err, subnet.ErrLeaseRevoked) {
			t.Fatalf("run returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not end after the lease was revoked")
	}
}

func TestRunCancelledWhileWaitingForConfig(t *testing.T) {
	m := &fakeManager{configs: []string{`{}`}}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	tm := defaultTimings
	tm.configRetry = 5 * time.Millisecond
	if err := run(ctx, Config{SubnetFile: filepath.Join(t.TempDir(), "s.env")}, Deps{Manager: m}, tm); err != nil {
		t.Fatalf("got %v", err)
	}
}

func TestStatePath(t *testing.T) {
	for in, want := range map[string]string{
		"/run/flannel/subnet.env": "/run/flannel/subnet.state.json",
		"/vxlan.env":              "/vxlan.state.json",
		"/x/sub":                  "/x/sub.state.json",
	} {
		if got := statePath(in); got != want {
			t.Errorf("statePath(%s) = %s", in, got)
		}
	}
}

// The running line names the subnets the lease has, and no placeholder for the others.
func TestLeaseValues(t *testing.T) {
	v4, v6 := netip.MustParsePrefix("10.5.1.0/24"), netip.MustParsePrefix("2001:db8:1::/64")
	cases := []struct {
		lease subnet.Lease
		want  string
	}{
		{subnet.Lease{Subnet: v4}, "[type vxlan subnet 10.5.1.0/24]"},
		{subnet.Lease{IPv6Subnet: v6}, "[type vxlan ipv6Subnet 2001:db8:1::/64]"},
		{subnet.Lease{Subnet: v4, IPv6Subnet: v6}, "[type vxlan subnet 10.5.1.0/24 ipv6Subnet 2001:db8:1::/64]"},
	}
	for _, c := range cases {
		if got := fmt.Sprint(leaseValues("vxlan", &c.lease)); got != c.want {
			t.Errorf("leaseValues(%v, %v) = %s, want %s", c.lease.Subnet, c.lease.IPv6Subnet, got, c.want)
		}
	}
}

// The forwarding settings the config's families need are checked, and only "0" is off.
func TestForwardingOff(t *testing.T) {
	v4 := &subnet.Config{EnableIPv4: true}
	v6 := &subnet.Config{EnableIPv6: true}
	dual := &subnet.Config{EnableIPv4: true, EnableIPv6: true}
	sysctls := func(kv map[string]string) func(string) (string, error) {
		return func(name string) (string, error) {
			v, ok := kv[name]
			if !ok {
				return "", os.ErrNotExist
			}
			return v, nil
		}
	}
	cases := []struct {
		cfg  *subnet.Config
		kv   map[string]string
		want []string
	}{
		{v4, map[string]string{"net.ipv4.ip_forward": "1\n", "net.ipv6.conf.all.forwarding": "0\n"}, nil},
		{v4, map[string]string{"net.ipv4.ip_forward": "0\n"}, []string{"net.ipv4.ip_forward"}},
		{v6, map[string]string{"net.ipv4.ip_forward": "0\n", "net.ipv6.conf.all.forwarding": "0\n"}, []string{"net.ipv6.conf.all.forwarding"}},
		{dual, map[string]string{"net.ipv4.ip_forward": "0\n", "net.ipv6.conf.all.forwarding": "0\n"}, []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"}},
		{dual, map[string]string{"net.ipv4.ip_forward": "1\n"}, nil}, // IPv6 unreadable (disabled): not reported
	}
	for _, c := range cases {
		if got := forwardingOff(c.cfg, sysctls(c.kv)); !slices.Equal(got, c.want) {
			t.Errorf("forwardingOff(%+v, %v) = %v, want %v", *c.cfg, c.kv, got, c.want)
		}
	}
}
