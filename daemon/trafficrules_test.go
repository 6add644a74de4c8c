package daemon

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/trafficrules"
	"github.com/flannel-go/flannel/subnet"
)

// fakeRules records how the daemon drives the traffic-rules seam.
type fakeRules struct {
	subnetFile string
	setupErr   error

	mu            sync.Mutex
	nets          *trafficrules.Networks
	fileAtSetup   bool
	running, done bool
}

func (r *fakeRules) Setup(ctx context.Context, n trafficrules.Networks) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nets = &n
	_, err := os.Stat(r.subnetFile)
	r.fileAtSetup = err == nil
	return r.setupErr
}

func (r *fakeRules) Run(ctx context.Context) error {
	r.mu.Lock()
	r.running = true
	r.mu.Unlock()
	<-ctx.Done()
	r.mu.Lock()
	r.done = true
	r.mu.Unlock()
	return nil
}

func trafficDeps(m *fakeManager, rules *fakeRules) Deps {
	be := &fakeBackend{}
	return Deps{
		Manager:  m,
		Backends: map[string]backend.Constructor{"fake": func(*backend.ExternalInterface, *subnet.Config) (backend.Backend, error) { return be, nil }},
		LookupExtIface: func(*subnet.Config) (*backend.ExternalInterface, error) {
			return &backend.ExternalInterface{}, nil
		},
		TrafficRules: rules,
	}
}

func TestTrafficRulesSetupBeforeSubnetFileAndRunOwnedByDaemon(t *testing.T) {
	subnetFile := filepath.Join(t.TempDir(), "subnet.env")
	m := &fakeManager{
		configs: []string{`{"Network":"10.5.0.0/16","EnableNFTables":true,"Backend":{"Type":"fake"}}`},
		lease:   subnet.Lease{EnableIPv4: true, Subnet: netip.MustParsePrefix("10.5.85.0/24")},
		results: make(chan subnet.WatchResult),
		revoke:  make(chan struct{}),
	}
	rules := &fakeRules{subnetFile: subnetFile}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, Config{SubnetFile: subnetFile, IPMasq: true}, trafficDeps(m, rules), defaultTimings)
	}()
	waitFor(t, "subnet file", func() bool { _, err := os.Stat(subnetFile); return err == nil })
	waitFor(t, "rules keeper running", func() bool { rules.mu.Lock(); defer rules.mu.Unlock(); return rules.running })
	rules.mu.Lock()
	if rules.fileAtSetup {
		t.Error("subnet file existed before the traffic rules were set up")
	}
	if n := rules.nets; n == nil || !n.NFTables || n.Subnet.String() != "10.5.85.0/24" || n.Network.String() != "10.5.0.0/16" || n.IPv6Network.IsValid() {
		t.Errorf("Setup got %+v", n)
	}
	rules.mu.Unlock()
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not end")
	}
	rules.mu.Lock()
	defer rules.mu.Unlock()
	if !rules.done {
		t.Error("run returned before the rules keeper ended")
	}
}

func TestTrafficRulesSetupErrorStopsDaemon(t *testing.T) {
	subnetFile := filepath.Join(t.TempDir(), "subnet.env")
	m := &fakeManager{
		configs: []string{`{"Network":"10.5.0.0/16","EnableNFTables":true,"Backend":{"Type":"fake"}}`},
		lease:   subnet.Lease{EnableIPv4: true, Subnet: netip.MustParsePrefix("10.5.85.0/24")},
	}
	rules := &fakeRules{subnetFile: subnetFile, setupErr: errors.New("EnableNFTables is true but nftables is not usable on this host")}
	err := run(context.Background(), Config{SubnetFile: subnetFile}, trafficDeps(m, rules), defaultTimings)
	if err == nil || !strings.Contains(err.Error(), "failed to set up traffic rules: EnableNFTables is true but nftables is not usable") {
		t.Fatalf("run: %v", err)
	}
	if _, err := os.Stat(subnetFile); err == nil {
		t.Error("subnet file written although the traffic rules failed")
	}
}
