package daemon

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/subnet"
)

// permanentManager fails every acquisition with a PermanentError and offers a previous lease.
type permanentManager struct {
	fakeManager
	acquires int
	prev     *subnet.Lease
}

func (m *permanentManager) AcquireLease(ctx context.Context, cfg *subnet.Config, attrs *subnet.LeaseAttrs) (*subnet.Lease, error) {
	m.mu.Lock()
	m.acquires++
	m.mu.Unlock()
	return nil, &subnet.PermanentError{Err: errors.New("pod CIDR outside Network")}
}

func (m *permanentManager) PreviousLease() *subnet.Lease { return m.prev }

// prevRecorder records the previous lease Prepare receives.
type prevRecorder struct {
	fakeBackend
	got *subnet.Lease
}

func (b *prevRecorder) Prepare(ctx context.Context, prev *subnet.Lease) (*subnet.LeaseAttrs, error) {
	b.got = prev
	return b.fakeBackend.Prepare(ctx, prev)
}

func TestRunStopsOnPermanentAcquireError(t *testing.T) {
	prev := &subnet.Lease{EnableIPv4: true, Subnet: netip.MustParsePrefix("10.5.3.0/24"),
		Attrs: subnet.LeaseAttrs{BackendType: "fake", BackendData: []byte(`{"VtepMAC":"0e:00:00:00:00:01"}`)}}
	m := &permanentManager{fakeManager: fakeManager{configs: []string{`{"Network":"10.5.0.0/16","Backend":{"Type":"fake"}}`}}, prev: prev}
	be := &prevRecorder{}
	deps := Deps{
		Manager:  m,
		Backends: map[string]backend.Constructor{"fake": func(*backend.ExternalInterface, *subnet.Config) (backend.Backend, error) { return be, nil }},
		LookupExtIface: func(*subnet.Config) (*backend.ExternalInterface, error) {
			return &backend.ExternalInterface{}, nil
		},
	}
	tm := timings{configRetry: time.Millisecond, acquireRetry: time.Millisecond, acquireMax: time.Millisecond, resync: time.Hour, reconcileBack: time.Millisecond}
	errc := make(chan error, 1)
	go func() {
		errc <- run(context.Background(), Config{SubnetFile: filepath.Join(t.TempDir(), "s.env")}, deps, tm)
	}()
	select {
	case err := <-errc:
		if !subnet.IsPermanent(err) {
			t.Fatalf("run returned %v, want the permanent error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run kept retrying a permanent error")
	}
	if m.acquires != 1 {
		t.Errorf("%d acquisitions, want 1", m.acquires)
	}
	if be.got != prev {
		t.Errorf("Prepare got previous lease %+v, want the manager's (no state file)", be.got)
	}
}
