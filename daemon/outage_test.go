package daemon

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/flannel-go/flannel/pkg/healthz"
	"github.com/flannel-go/flannel/pkg/klogtest"
	"github.com/flannel-go/flannel/pkg/metrics"
	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

// One warning when the datastore is lost while running, one line with the outage's length
// when it is back, nothing between or before; a failed renewal ends only with a renewal.
func TestOutageLog(t *testing.T) {
	logs := klogtest.Capture(t, 0)
	now := time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC)
	o := newOutageLog(func() time.Time { return now })
	refused := errors.New("connecting to etcd: http://192.0.2.254:2379: connection refused (nothing listens on that address and port)")

	o.DatastoreError(observe.GetConfig, refused) // start-up: the loops log it
	o.WatchLive(observe.LeasesWatch)
	if got := logs.TakeLines(); len(got) != 0 {
		t.Fatalf("logged before the daemon runs: %q", got)
	}
	o.arm()
	o.WatchLive(observe.LeasesWatch)           // no outage: nothing to end
	o.DatastoreError(observe.Connect, refused) // one endpoint of several: no outage
	if got := logs.TakeLines(); len(got) != 0 {
		t.Fatalf("a failed connection attempt alone is logged: %q", got)
	}
	o.DatastoreError(observe.Watch, refused)
	o.DatastoreError(observe.Connect, refused)
	o.DatastoreError(observe.Watch, errors.New("other"))
	now = now.Add(12*time.Second + 340*time.Millisecond)
	o.WatchLive(observe.LeasesWatch)
	o.WatchLive(observe.OwnLeaseWatch)
	got := logs.TakeLines()
	if len(got) != 2 {
		t.Fatalf("lines %q, want a warning and a recovery", got)
	}
	if !strings.HasPrefix(got[0], "W") || !strings.HasSuffix(got[0], `] "`+msgDatastoreLost+`" op="watch" err="`+refused.Error()+`"`) {
		t.Errorf("warning %q", got[0])
	}
	if !strings.HasPrefix(got[1], "I") || !strings.HasSuffix(got[1], `] "`+msgDatastoreBack+`" outage="12.3s"`) {
		t.Errorf("recovery %q", got[1])
	}

	o.DatastoreError(observe.Renew, errors.New("renewing: permission denied"))
	o.WatchLive(observe.LeasesWatch) // the watch works; the lease is still not renewed
	if got := logs.TakeLines(); len(got) != 1 || !strings.Contains(got[0], `op="renew"`) {
		t.Fatalf("lines %q, want only the warning", got)
	}
	now = now.Add(time.Minute)
	o.LeaseExpiration(now.Add(24 * time.Hour))
	if got := logs.TakeLines(); len(got) != 1 || !strings.HasSuffix(got[0], `outage="1m0s"`) {
		t.Fatalf("lines %q, want the recovery", got)
	}
}

// blockingManager's GetNetworkConfig answers only when its context ends, as a call to an
// unreachable etcd does.
type blockingManager struct{ fakeManager }

func (m *blockingManager) GetNetworkConfig(ctx context.Context) (*subnet.Config, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// A config fetch that times out is a failed attempt like any other: it is counted.
func TestFetchConfigCountsTimeouts(t *testing.T) {
	m := metrics.New()
	ctx, cancel := context.WithCancel(context.Background())
	obs := observe.Tee{m, observe.Nop{}}
	done := make(chan error, 1)
	go func() {
		_, _, err := setupBackend(ctx, Deps{Manager: &blockingManager{}}, obs, healthz.NewReadiness(checkNetworkConfig), time.Millisecond)
		done <- err
	}()
	waitFor(t, "a timed-out attempt counted", func() bool {
		return counter(t, m, "flannel_datastore_errors_total", map[string]string{"op": "get_config"}) >= 1
	})
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("setupBackend: %v", err)
	}
}
