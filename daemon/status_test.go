package daemon

import (
	"context"
	"encoding/json"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/control"
	"github.com/flannel-go/flannel/subnet"
)

func getStatus(t *testing.T, s *Status) *control.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := s.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// The status follows the daemon through its life: what it is, its phase, config,
// lease, devices, peers (from the reconcile loop), rejected leases and readiness.
func TestRunStatus(t *testing.T) {
	subnetFile := filepath.Join(t.TempDir(), "subnet.env")
	own := subnet.Lease{EnableIPv4: true, Subnet: netip.MustParsePrefix("10.5.85.0/24")}
	m := &fakeManager{
		configs:    []string{`{"Network":"10.5.0.0/30"}`, `{"Network":"10.5.0.0/16","Backend":{"Type":"fake","VNI":7}}`},
		acquireErr: 1 << 30, // until the test allows it
		lease:      own,
		results:    make(chan subnet.WatchResult),
		revoke:     make(chan struct{}),
	}
	be := &fakeBackend{}
	status := NewStatus(control.Status{
		Instance: control.Instance{PID: 42, Version: "test", Socket: "@flannel-go/x", Locks: []string{"x", "y"}, Datastore: "etcd", SubnetFile: subnetFile},
		Config:   control.Config{Options: json.RawMessage(`{"EtcdPassword":"<redacted>"}`)},
	})
	deps := Deps{
		Manager:        m,
		Backends:       map[string]backend.Constructor{"fake": func(*backend.ExternalInterface, *subnet.Config) (backend.Backend, error) { return be, nil }},
		LookupExtIface: func(*subnet.Config) (*backend.ExternalInterface, error) { return &backend.ExternalInterface{}, nil },
		Status:         status,
	}
	if st := getStatus(t, status); st.Instance.Phase != control.PhaseStarting || st.Lease != nil || st.Instance.PID != 42 {
		t.Fatalf("before Run: %+v", st)
	}
	tm := timings{configRetry: 5 * time.Millisecond, acquireRetry: time.Millisecond, acquireMax: 2 * time.Millisecond, resync: time.Hour, reconcileBack: time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- run(ctx, Config{SubnetFile: subnetFile}, deps, tm) }()

	waitFor(t, "phase acquiring", func() bool { return getStatus(t, status).Instance.Phase == control.PhaseAcquiring })
	st := getStatus(t, status)
	if st.Instance.Network != netip.MustParsePrefix("10.5.0.0/16") || st.Instance.BackendType != "fake" ||
		string(st.Instance.Backend) != `{"Type":"fake","VNI":7}` || st.Lease != nil || st.Readiness.Ready || len(st.Readiness.Checks) == 0 {
		t.Fatalf("acquiring: %+v", st)
	}
	var netCfg map[string]any
	if err := json.Unmarshal(st.Config.Network, &netCfg); err != nil || netCfg["Network"] != "10.5.0.0/16" || netCfg["SubnetLen"] != 24.0 {
		t.Errorf("config.network %s: %v", st.Config.Network, err)
	}
	m.mu.Lock()
	m.acquireErr = 0
	m.mu.Unlock()

	waitFor(t, "phase running", func() bool { return getStatus(t, status).Instance.Phase == control.PhaseRunning })
	st = getStatus(t, status)
	if st.Lease == nil || st.Lease.Key != "10.5.85.0-24" || st.Lease.Subnet != own.Subnet || st.Lease.PublicIP != netip.MustParseAddr("192.0.2.11") {
		t.Fatalf("running: lease %+v", st.Lease)
	}
	if len(st.Instance.Devices) != 1 || st.Instance.Devices[0] != "fake0" {
		t.Errorf("devices %q", st.Instance.Devices)
	}
	if st.Peers.Synced || len(st.Peers.Admitted) != 0 || len(st.Peers.Rejected) != 0 {
		t.Errorf("peers before the snapshot: %+v", st.Peers)
	}
	peer := subnet.Lease{EnableIPv4: true, Subnet: netip.MustParsePrefix("10.5.9.0/24"),
		Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.12"), BackendType: "fake", BackendData: json.RawMessage(`{"VNI":7}`)}}
	bad := peer
	bad.Subnet = netip.MustParsePrefix("10.5.9.0/25") // not SubnetLen long
	loser := peer                                     // its IPv4 subnet is the older peer's
	loser.IPv6Subnet = netip.MustParsePrefix("fd00::/64")
	m.results <- subnet.WatchResult{Snapshot: append(subnet.CandidatesOf(peer, bad),
		subnet.Candidate{Lease: loser, Origin: subnet.Origin{Seniority: 9}})}
	waitFor(t, "first reconcile", func() bool { return len(be.calls()) == 1 })
	st = getStatus(t, status)
	if !st.Peers.Synced || len(st.Peers.Admitted) != 1 || st.Peers.Admitted[0].Key != "10.5.9.0-24" ||
		st.Peers.Admitted[0].PublicIP != peer.Attrs.PublicIP || string(st.Peers.Admitted[0].BackendData) != `{"VNI":7}` {
		t.Errorf("peers: %+v", st.Peers)
	}
	if r := st.Peers.Rejected; len(r) != 2 || r[0].Key != "10.5.9.0-24&fd00::-64" || r[0].Reason != "overlaps_peer" || r[0].Lease == nil ||
		r[0].Lease.IPv6Subnet != loser.IPv6Subnet || r[1].Key != "10.5.9.0-25" || r[1].Reason != "wrong_length" || r[1].Lease != nil {
		t.Errorf("rejected: %+v", r)
	}
	waitFor(t, "ready", func() bool { return getStatus(t, status).Readiness.Ready })
	if _, err := json.Marshal(getStatus(t, status)); err != nil {
		t.Fatal(err)
	}

	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	// The loop is gone: Get answers at once, without peers.
	start := time.Now()
	st = getStatus(t, status)
	if st.Instance.Phase != control.PhaseStopping || len(st.Peers.Admitted) != 0 {
		t.Errorf("after Run: %+v", st)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Get after Run took %v", d)
	}
}

// A peer's backend data that is not JSON still makes a status that encodes.
func TestControlLeaseKeepsBadData(t *testing.T) {
	l := subnet.Lease{EnableIPv4: true, Subnet: netip.MustParsePrefix("10.5.9.0/24"), Attrs: subnet.LeaseAttrs{BackendData: json.RawMessage(`{not json`)}}
	cl := controlLease(&l)
	b, err := json.Marshal(cl)
	if err != nil {
		t.Fatal(err)
	}
	var back control.Lease
	if err := json.Unmarshal(b, &back); err != nil || string(back.BackendData) != `"{not json"` {
		t.Errorf("%s -> %+v %v", b, back, err)
	}
}
