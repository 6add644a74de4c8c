package daemon

import (
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/pkg/logwarn"
	"github.com/flannel-go/flannel/pkg/observe"
)

// Log lines of a datastore outage while the daemon runs (Documentation/running.md).
const (
	msgDatastoreLost = "Datastore unavailable: the data path stays as it is, and lease changes wait until it is back"
	msgDatastoreBack = "Datastore available again"
)

// outageLog states a datastore outage and its end once each, after arm (a failed renewal ends only
// with a renewal); a failed Connect alone is no outage, as the client tries other endpoints.
type outageLog struct {
	observe.Nop
	now func() time.Time

	mu    sync.Mutex
	armed bool
	down  bool
	since time.Time
	renew bool // a renewal failed during the outage
}

func newOutageLog(now func() time.Time) *outageLog { return &outageLog{now: now} }

// arm starts stating outages: before, the start-up loops log each failure themselves.
func (o *outageLog) arm() {
	o.mu.Lock()
	o.armed = true
	o.mu.Unlock()
}

func (o *outageLog) DatastoreError(op observe.Op, err error) {
	if op == observe.Connect {
		return
	}
	o.mu.Lock()
	if !o.armed {
		o.mu.Unlock()
		return
	}
	o.renew = o.renew || op == observe.Renew
	if o.down {
		o.mu.Unlock()
		return
	}
	o.down, o.since = true, o.now()
	o.mu.Unlock()
	logwarn.S(msgDatastoreLost, "op", string(op), "err", err)
}

func (o *outageLog) WatchLive(observe.Kind)      { o.up(false) }
func (o *outageLog) LeaseExpiration(t time.Time) { o.up(true) }

// up ends the outage, if there is one that this success ends.
func (o *outageLog) up(renewed bool) {
	o.mu.Lock()
	if !o.down || (o.renew && !renewed) {
		o.mu.Unlock()
		return
	}
	d := o.now().Sub(o.since)
	o.down, o.renew = false, false
	o.mu.Unlock()
	klog.InfoS(msgDatastoreBack, "outage", d.Round(100*time.Millisecond).String())
}
