package observe

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

// log records every call as a line.
type log struct{ calls []string }

func (l *log) KernelObjects(k Kind, op Op, n int) {
	l.calls = append(l.calls, fmt.Sprintf("kernel %s %s %d", k, op, n))
}
func (l *log) TxChecksumOffload(dev string, on bool) {
	l.calls = append(l.calls, fmt.Sprintf("csum %s %v", dev, on))
}
func (l *log) WireguardImplementation(impl string) {
	l.calls = append(l.calls, "wireguard "+impl)
}
func (l *log) DatastoreError(op Op, err error) {
	l.calls = append(l.calls, fmt.Sprintf("error %s %v", op, err))
}
func (l *log) WatchRestarted(w Kind, err error) {
	l.calls = append(l.calls, fmt.Sprintf("restarted %s %v", w, err))
}
func (l *log) WatchLive(w Kind) { l.calls = append(l.calls, "live "+string(w)) }
func (l *log) PacketsDropped(reason string, n int) {
	l.calls = append(l.calls, fmt.Sprintf("dropped %s %d", reason, n))
}
func (l *log) LeaseExpiration(t time.Time) {
	l.calls = append(l.calls, "expires "+t.UTC().Format(time.RFC3339))
}

func (l *log) PeerProgrammingFailures(reason string, n int) {
	l.calls = append(l.calls, fmt.Sprintf("refused %s %d", reason, n))
}

func (l *log) PeersSkipped(reason string, n int) {
	l.calls = append(l.calls, fmt.Sprintf("skipped %s %d", reason, n))
}

func TestTeeCountOr(t *testing.T) {
	a, b := &log{}, &log{}
	var o Observer = Tee{a, b}
	Count(o, Route, Add, 2)
	Count(o, FDB, Remove, 0) // nothing changed: not reported
	Count(nil, Route, Add, 1)
	o.TxChecksumOffload("flannel.1", false)
	o.WireguardImplementation("userspace")
	o.DatastoreError(Renew, errors.New("etcd down"))
	o.WatchRestarted(LeasesWatch, errors.New("compacted"))
	o.WatchLive(OwnLeaseWatch)
	o.LeaseExpiration(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	o.PacketsDropped("unknown_peer", 3)
	o.PeerProgrammingFailures(RefusedUnreachable, 2)
	o.PeersSkipped(SkippedOtherVNI, 1)
	want := []string{"kernel route add 2", "csum flannel.1 false", "wireguard userspace", "error renew etcd down",
		"restarted leases compacted", "live own_lease", "expires 2026-01-02T03:04:05Z", "dropped unknown_peer 3",
		"refused unreachable 2", "skipped other_vni 1"}
	for name, l := range map[string]*log{"first": a, "second": b} {
		if !slices.Equal(l.calls, want) {
			t.Errorf("%s observer heard %q, want %q", name, l.calls, want)
		}
	}
	if _, ok := Or(nil).(Nop); !ok {
		t.Error("Or(nil) is not Nop")
	}
	if Or(a) != Observer(a) {
		t.Error("Or(o) is not o")
	}
	if got := RefusalReasons(); len(got) != 3 || !slices.Contains(got, RefusedExists) {
		t.Errorf("RefusalReasons() = %v", got)
	}
	if got := SkipReasons(); !slices.Equal(got, []string{SkippedOtherBackend, SkippedOtherVNI}) {
		t.Errorf("SkipReasons() = %v", got)
	}
	if got := KernelKinds(); !slices.Contains(got, Rule) || slices.Contains(got, LeasesWatch) {
		t.Errorf("KernelKinds() = %v", got)
	}
}
