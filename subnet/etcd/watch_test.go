package etcd

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-go/flannel/subnet"
)

const subnets = DefaultPrefix + "/subnets/"

func leaseValue(pub string) string {
	return fmt.Sprintf(`{"PublicIP":%q,"PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"4e:7c:fc:75:67:c4"}}`, pub)
}

func startWatch(t *testing.T, m *Manager) <-chan subnet.WatchResult {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan subnet.WatchResult)
	done := make(chan error, 1)
	go func() { done <- m.WatchLeases(ctx, out) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("WatchLeases = %v, want nil after cancel", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("WatchLeases did not return after cancel")
		}
	})
	return out
}

func next(t *testing.T, ch <-chan subnet.WatchResult, d time.Duration) subnet.WatchResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(d):
		t.Fatalf("no watch result within %v", d)
		return subnet.WatchResult{}
	}
}

func byKey(cs []subnet.Candidate) map[string]subnet.Lease {
	m := map[string]subnet.Lease{}
	for _, c := range cs {
		m[c.Lease.Key()] = c.Lease
	}
	return m
}

// diff is what a consumer derives from a new snapshot: keys added (or changed) and removed.
func diff(old, cur map[string]subnet.Lease) (added, removed []string) {
	for k, l := range cur {
		o, ok := old[k]
		if !ok || o.Attrs.PublicIP != l.Attrs.PublicIP || string(o.Attrs.BackendData) != string(l.Attrs.BackendData) {
			added = append(added, k)
		}
	}
	for k := range old {
		if _, ok := cur[k]; !ok {
			removed = append(removed, k)
		}
	}
	slices.Sort(added)
	slices.Sort(removed)
	return added, removed
}

func TestWatchLeasesSnapshotAndEvents(t *testing.T) {
	cli, p := setup(t, `{"Network":"10.5.0.0/16"}`)
	mustPut(t, cli, subnets+"10.5.1.0-24", leaseValue("198.51.100.1"))
	mustPut(t, cli, subnets+"10.5.2.0-24&fd00:0:0:2::-64", leaseValue("198.51.100.2"))
	mustPut(t, cli, subnets+"garbage", leaseValue("198.51.100.9"))
	mustPut(t, cli, subnets+"10.5.9.0-24", `{"PublicIP":`) // bad value: delivered as such
	m := newManager(t, Config{Endpoints: []string{p.Endpoint()}})
	out := startWatch(t, m)

	r := next(t, out, 30*time.Second)
	if !r.IsSnapshot() || len(r.Events) != 0 {
		t.Fatalf("first result is not a snapshot: %+v", r)
	}
	got := slices.Sorted(maps.Keys(byKey(r.Snapshot)))
	if want := []string{"10.5.1.0-24", "10.5.2.0-24&fd00:0:0:2::-64", "10.5.9.0-24"}; !slices.Equal(got, want) {
		t.Fatalf("snapshot %v, want %v", got, want)
	}
	for _, c := range r.Snapshot {
		if bad := c.Lease.Key() == "10.5.9.0-24"; bad != (c.Origin.Defect != nil) || bad && c.Origin.Defect.Reason != subnet.BadJSON {
			t.Fatalf("%s: defect %v", c.Lease.Key(), c.Origin.Defect)
		}
		if c.Origin.Name != "" || c.Origin.Seniority == 0 || c.Origin.Version < c.Origin.Seniority {
			t.Fatalf("%s: origin %+v", c.Lease.Key(), c.Origin)
		}
	}
	dual := byKey(r.Snapshot)["10.5.2.0-24&fd00:0:0:2::-64"]
	if !dual.EnableIPv4 || !dual.EnableIPv6 || dual.Attrs.PublicIP.String() != "198.51.100.2" {
		t.Fatalf("dual lease %+v", dual)
	}

	// A batch in one transaction arrives as one result.
	if _, err := cli.Txn(tctx(t, 5*time.Second)).Then(
		clientv3.OpPut(subnets+"10.5.3.0-24", leaseValue("198.51.100.3")),
		clientv3.OpDelete(subnets+"10.5.1.0-24"),
		clientv3.OpPut(subnets+"bad-key", leaseValue("198.51.100.4")),
	).Commit(); err != nil {
		t.Fatal(err)
	}
	r = next(t, out, 30*time.Second)
	if r.IsSnapshot() || len(r.Events) != 2 {
		t.Fatalf("want 2 events, got %+v", r)
	}
	if e := r.Events[0]; e.Type != subnet.EventAdded || e.Lease.Key() != "10.5.3.0-24" || e.Lease.Attrs.PublicIP.String() != "198.51.100.3" {
		t.Fatalf("event 0 %+v", e)
	}
	if e := r.Events[1]; e.Type != subnet.EventRemoved || e.Lease.Subnet != netip.MustParsePrefix("10.5.1.0/24") || !e.Lease.EnableIPv4 {
		t.Fatalf("event 1 %+v", e)
	}
	g, err := cli.Grant(tctx(t, 5*time.Second), 1)
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, cli, subnets+"10.5.4.0-24", leaseValue("198.51.100.5"), clientv3.WithLease(g.ID))
	r = next(t, out, 30*time.Second)
	if len(r.Events) != 1 || r.Events[0].Type != subnet.EventAdded || r.Events[0].Lease.Key() != "10.5.4.0-24" {
		t.Fatalf("want added 10.5.4.0-24, got %+v", r)
	}
	r = next(t, out, 30*time.Second)
	if len(r.Events) != 1 || r.Events[0].Type != subnet.EventRemoved || r.Events[0].Lease.Key() != "10.5.4.0-24" {
		t.Fatalf("want expiry of 10.5.4.0-24, got %+v", r)
	}
}

func TestWatchLeasesEmptySnapshot(t *testing.T) {
	_, p := setup(t, `{"Network":"10.5.0.0/16"}`)
	out := startWatch(t, newManager(t, Config{Endpoints: []string{p.Endpoint()}}))
	r := next(t, out, 30*time.Second)
	if !r.IsSnapshot() || len(r.Snapshot) != 0 {
		t.Fatalf("want an empty, non-nil snapshot, got %#v", r)
	}
}

// Leases change and history is compacted before the watch opens: the fresh snapshot
// differs from the first by exactly the changes.
func TestWatchLeasesCompaction(t *testing.T) {
	cli, p := setup(t, `{"Network":"10.5.0.0/16"}`)
	mustPut(t, cli, subnets+"10.5.1.0-24", leaseValue("198.51.100.1"))
	mustPut(t, cli, subnets+"10.5.2.0-24", leaseValue("198.51.100.2"))
	mustPut(t, cli, subnets+"10.5.3.0-24", leaseValue("198.51.100.3"))
	m := newManager(t, Config{Endpoints: []string{p.Endpoint()}})
	paused, resume := make(chan int64), make(chan struct{})
	calls := 0
	m.beforeWatch = func(rev int64) {
		calls++
		if calls == 1 {
			paused <- rev
			<-resume
		}
	}
	out := startWatch(t, m)
	first := next(t, out, 30*time.Second)
	if !first.IsSnapshot() || len(first.Snapshot) != 3 {
		t.Fatalf("first snapshot %+v", first)
	}
	var watchRev int64
	select {
	case watchRev = <-paused:
	case <-time.After(10 * time.Second):
		t.Fatal("watcher did not reach the watch")
	}

	if _, err := cli.Delete(tctx(t, 5*time.Second), subnets+"10.5.1.0-24"); err != nil {
		t.Fatal(err)
	}
	mustPut(t, cli, subnets+"10.5.2.0-24", leaseValue("198.51.100.22")) // changed
	mustPut(t, cli, subnets+"10.5.4.0-24", leaseValue("198.51.100.4"))  // new
	last := mustPut(t, cli, subnets+"10.5.5.0-24", leaseValue("198.51.100.5"))
	if _, err := cli.Delete(tctx(t, 5*time.Second), subnets+"10.5.5.0-24"); err != nil { // came and went
		t.Fatal(err)
	}
	if _, err := cli.Compact(tctx(t, 5*time.Second), last.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	if watchRev >= last.Header.Revision {
		t.Fatalf("watch revision %d not below the compaction %d", watchRev, last.Header.Revision)
	}
	close(resume)

	second := next(t, out, 30*time.Second)
	if !second.IsSnapshot() {
		t.Fatalf("after compaction want a snapshot, got events %+v", second.Events)
	}
	added, removed := diff(byKey(first.Snapshot), byKey(second.Snapshot))
	if want := []string{"10.5.2.0-24", "10.5.4.0-24"}; !slices.Equal(added, want) {
		t.Errorf("added %v, want %v", added, want)
	}
	if want := []string{"10.5.1.0-24"}; !slices.Equal(removed, want) {
		t.Errorf("removed %v, want %v", removed, want)
	}
	if got := byKey(second.Snapshot)["10.5.2.0-24"].Attrs.PublicIP.String(); got != "198.51.100.22" {
		t.Errorf("changed lease has PublicIP %s", got)
	}
	mustPut(t, cli, subnets+"10.5.6.0-24", leaseValue("198.51.100.6"))
	r := next(t, out, 30*time.Second)
	if len(r.Events) != 1 || r.Events[0].Lease.Key() != "10.5.6.0-24" {
		t.Fatalf("after resync: %+v", r)
	}
}

// A lease written after etcd restarts is delivered.
func TestWatchLeasesSurvivesRestart(t *testing.T) {
	cli, p := setup(t, `{"Network":"10.5.0.0/16"}`)
	mustPut(t, cli, subnets+"10.5.1.0-24", leaseValue("198.51.100.1"))
	out := startWatch(t, newManager(t, Config{Endpoints: []string{p.Endpoint()}}))
	if r := next(t, out, 30*time.Second); !r.IsSnapshot() || len(r.Snapshot) != 1 {
		t.Fatalf("snapshot %+v", r)
	}
	p.Kill()
	time.Sleep(2 * time.Second)
	if err := p.Restart(tctx(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	mustPut(t, cli, subnets+"10.5.2.0-24", leaseValue("198.51.100.2"))
	deadline := time.After(20 * time.Second)
	for {
		select {
		case r := <-out:
			if r.IsSnapshot() {
				if _, ok := byKey(r.Snapshot)["10.5.2.0-24"]; ok {
					return
				}
				continue
			}
			for _, e := range r.Events {
				if e.Type == subnet.EventAdded && e.Lease.Key() == "10.5.2.0-24" {
					return
				}
			}
		case <-deadline:
			t.Fatal("lease written after the restart was not delivered")
		}
	}
}

// Nobody reads; cancel must still end it.
func TestWatchLeasesHonoursCancelWhileSending(t *testing.T) {
	_, p := setup(t, `{"Network":"10.5.0.0/16"}`)
	m := newManager(t, Config{Endpoints: []string{p.Endpoint()}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.WatchLeases(ctx, make(chan subnet.WatchResult)) }()
	time.Sleep(500 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WatchLeases blocked on send after cancel")
	}
}

// etcd returns with its data wiped (an older backup): the progress notification reveals
// the rewind and a new snapshot is sent.
func TestWatchLeasesDataWiped(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	p := startEtcdIn(t, dataDir, nil, "--experimental-watch-progress-notify-interval=500ms")
	cli := rawClient(t, p.Endpoint(), nil)
	mustPut(t, cli, subnets+"10.5.1.0-24", leaseValue("198.51.100.1"))
	for i := range 20 {
		mustPut(t, cli, "/elsewhere", fmt.Sprint(i)) // move the revision well ahead
	}
	out := startWatch(t, newManager(t, Config{Endpoints: []string{p.Endpoint()}}))
	if r := next(t, out, 30*time.Second); !r.IsSnapshot() || len(r.Snapshot) != 1 {
		t.Fatalf("snapshot %+v", r)
	}
	p.Kill()
	if err := os.RemoveAll(dataDir); err != nil {
		t.Fatal(err)
	}
	if err := p.Restart(tctx(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	mustPut(t, cli, subnets+"10.5.2.0-24", leaseValue("198.51.100.2"))
	// A snapshot without the lost lease, and the new lease (in it or in events after it).
	var known map[string]subnet.Lease
	deadline := time.After(20 * time.Second)
	for {
		select {
		case r := <-out:
			if r.IsSnapshot() {
				known = byKey(r.Snapshot)
				if _, ok := known["10.5.1.0-24"]; ok {
					t.Fatal("snapshot after the wipe still has the lost lease")
				}
			} else {
				if known == nil {
					t.Fatalf("events before the resync: %+v", r.Events)
				}
				for _, e := range r.Events {
					if e.Type == subnet.EventAdded {
						known[e.Lease.Key()] = e.Lease
					} else {
						delete(known, e.Lease.Key())
					}
				}
			}
			if got := slices.Sorted(maps.Keys(known)); known != nil && slices.Equal(got, []string{"10.5.2.0-24"}) {
				return
			}
		case <-deadline:
			t.Fatalf("no resync after etcd lost its data (known: %v)", slices.Sorted(maps.Keys(known)))
		}
	}
}

// A paged snapshot (3 keys per request) holds every lease once, bad ones skipped; later
// writes arrive as events.
func TestWatchLeasesSnapshotPaged(t *testing.T) {
	cli, p := setup(t, `{"Network":"10.5.0.0/16"}`)
	var want []string
	for i := range 10 {
		k := fmt.Sprintf("10.5.%d.0-24", 10+i)
		mustPut(t, cli, subnets+k, leaseValue(fmt.Sprintf("198.51.100.%d", 10+i)))
		want = append(want, k)
	}
	mustPut(t, cli, subnets+"garbage", leaseValue("198.51.100.9"))
	mustPut(t, cli, subnets+"10.5.99.0-24", `{"PublicIP":`)
	want = append(want, "10.5.99.0-24") // a bad value is delivered for the admission rule
	m := newManager(t, Config{Endpoints: []string{p.Endpoint()}})
	m.page = 3
	out := startWatch(t, m)
	r := next(t, out, 30*time.Second)
	got := byKey(r.Snapshot)
	if !r.IsSnapshot() || len(r.Snapshot) != len(want) || !slices.Equal(slices.Sorted(maps.Keys(got)), want) {
		t.Fatalf("paged snapshot %v, want %v", slices.Sorted(maps.Keys(got)), want)
	}
	if l := got["10.5.13.0-24"]; l.Attrs.PublicIP.String() != "198.51.100.13" || l.Attrs.BackendType != "vxlan" {
		t.Errorf("lease 10.5.13.0-24 = %+v", l)
	}
	mustPut(t, cli, subnets+"10.5.50.0-24", leaseValue("198.51.100.50"))
	r = next(t, out, 30*time.Second)
	if len(r.Events) != 1 || r.Events[0].Lease.Key() != "10.5.50.0-24" {
		t.Fatalf("want the new lease as an event, got %+v", r)
	}
}

// The first snapshot after AcquireLease is its listing; a peer written since arrives as an
// event; our own new lease never does (KeepLease watches it).
func TestWatchLeasesStartsFromAcquireListing(t *testing.T) {
	cli, p := setup(t, `{"Network":"10.5.0.0/16"}`)
	mustPut(t, cli, subnets+"10.5.10.0-24", leaseValue("198.51.100.10"))
	mustPut(t, cli, subnets+"10.5.11.0-24", leaseValue("198.51.100.11"))
	// Pinned apart from the peer below, which a random pick would hit once in a hundred.
	m := newManager(t, Config{Endpoints: []string{p.Endpoint()}, PrevSubnet: netip.MustParsePrefix("10.5.20.0/24")})
	cfg, err := m.GetNetworkConfig(tctx(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	own, err := m.AcquireLease(tctx(t, 10*time.Second), cfg, attrsFor("198.51.100.1"))
	if err != nil {
		t.Fatal(err)
	}
	if own.Key() != "10.5.20.0-24" {
		t.Fatalf("own lease %s, want the previous subnet 10.5.20.0-24", own.Key())
	}
	mustPut(t, cli, subnets+"10.5.12.0-24", leaseValue("198.51.100.12"))
	out := startWatch(t, m)
	r := next(t, out, 30*time.Second)
	got := slices.Sorted(maps.Keys(byKey(r.Snapshot)))
	if want := []string{"10.5.10.0-24", "10.5.11.0-24"}; !r.IsSnapshot() || !slices.Equal(got, want) {
		t.Fatalf("first snapshot %v, want the acquisition's listing %v", got, want)
	}
	seen := map[string]bool{}
	for !seen["10.5.12.0-24"] {
		r := next(t, out, 30*time.Second)
		if r.IsSnapshot() {
			t.Fatalf("unexpected second snapshot %v", r.Snapshot)
		}
		for _, e := range r.Events {
			seen[e.Lease.Key()] = true
		}
	}
	// Our own lease, rewritten now, still arrives in no event nor listing.
	if _, err := m.AcquireLease(tctx(t, 10*time.Second), cfg, attrsFor("198.51.100.1")); err != nil {
		t.Fatal(err)
	}
	mustPut(t, cli, subnets+"10.5.13.0-24", leaseValue("198.51.100.13"))
	for !seen["10.5.13.0-24"] {
		for _, e := range next(t, out, 30*time.Second).Events {
			seen[e.Lease.Key()] = true
		}
	}
	if seen[own.Key()] {
		t.Fatalf("events %v hold our own lease %s", seen, own.Key())
	}
	for i, n := range []int{3, 4} { // the acquisition's listing (primed), then a new one
		snap, _, err := m.snapshot(tctx(t, 10*time.Second), mustClient(t, m))
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := byKey(snap)[own.Key()]; ok || len(snap) != n {
			t.Fatalf("listing %d: %v, want %d peers without our own %s", i, slices.Sorted(maps.Keys(byKey(snap))), n, own.Key())
		}
	}
}

func mustClient(t *testing.T, m *Manager) *clientv3.Client {
	t.Helper()
	cli, err := m.client()
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

// A listing holds at most the receive limit of values at once: oversized pages are read
// again smaller, a lone oversized value by key only; values over subnet.MaxValueSize
// arrive as TooLarge, the others whole, each once.
func TestListingBoundedByReceiveLimit(t *testing.T) {
	cli, p := setup(t, `{"Network":"10.5.0.0/16"}`)
	const limit = 64 << 10
	big := func(n int) string {
		return `{"PublicIP":"198.51.100.9","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VtepMAC":"0e:00:00:00:00:09","pad":"` + strings.Repeat("x", n) + `"}}`
	}
	want := map[string]subnet.Reason{}
	for i := range 40 {
		k := fmt.Sprintf("10.5.%d.0-24", 10+i)
		switch {
		case i%10 == 3:
			mustPut(t, cli, subnets+k, big(40<<10)) // two of them pass the limit together
			want[k] = subnet.TooLarge
		case i == 25:
			mustPut(t, cli, subnets+k, big(100<<10)) // passes it alone
			want[k] = subnet.TooLarge
		default:
			mustPut(t, cli, subnets+k, leaseValue(fmt.Sprintf("198.51.100.%d", 10+i)))
			want[k] = ""
		}
	}
	m := newManager(t, Config{Endpoints: []string{p.Endpoint()}, maxResponse: limit})
	m.page = 16
	out := startWatch(t, m)
	r := next(t, out, 30*time.Second)
	if !r.IsSnapshot() || len(r.Snapshot) != len(want) {
		t.Fatalf("snapshot of %d leases, want %d", len(r.Snapshot), len(want))
	}
	for _, c := range r.Snapshot {
		k := c.Lease.Key()
		w, ok := want[k]
		switch {
		case !ok:
			t.Errorf("unexpected %s", k)
		case w == "" && c.Origin.Defect != nil:
			t.Errorf("%s: %v", k, c.Origin.Defect)
		case w != "" && (c.Origin.Defect == nil || c.Origin.Defect.Reason != w || len(c.Lease.Attrs.BackendData) > 0):
			t.Errorf("%s: %+v, want %s without content", k, c, w)
		}
		delete(want, k)
	}
	// A watch response over the limit: the leases are listed again, in bounded pages.
	if _, err := cli.Txn(tctx(t, 10*time.Second)).Then(
		clientv3.OpPut(subnets+"10.5.200.0-24", big(40<<10)),
		clientv3.OpPut(subnets+"10.5.201.0-24", big(40<<10)),
	).Commit(); err != nil {
		t.Fatal(err)
	}
	for {
		r = next(t, out, 30*time.Second)
		if r.IsSnapshot() {
			break
		}
		for _, e := range r.Events {
			t.Fatalf("the oversized watch response became events: %s", e.Lease.Key())
		}
	}
	got := byKey(r.Snapshot)
	if _, ok := got["10.5.201.0-24"]; !ok || len(r.Snapshot) != 42 {
		t.Fatalf("the listing after the oversized response: %d leases, 10.5.201.0-24 in it: %v", len(r.Snapshot), ok)
	}
	mustPut(t, cli, subnets+"10.5.202.0-24", leaseValue("198.51.100.202"))
	if r := next(t, out, 30*time.Second); len(r.Events) != 1 || r.Events[0].Lease.Key() != "10.5.202.0-24" {
		t.Fatalf("after the listing: %+v", r)
	}
}

// Health is nil while the watch is live, an error while etcd is down, nil again after; a
// lease written then arrives at once (reconnect backoff capped at 1 s).
func TestWatchHealthFollowsOutage(t *testing.T) {
	_, p := setup(t, `{"Network":"10.5.0.0/16"}`)
	m := newManager(t, Config{Endpoints: []string{p.Endpoint()}})
	out := startWatch(t, m)
	if r := next(t, out, 30*time.Second); !r.IsSnapshot() {
		t.Fatalf("first result %+v", r)
	}
	waitHealth := func(want bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for (m.Health() == nil) != want {
			if time.Now().After(deadline) {
				t.Fatalf("Health = %v after 20 s, want healthy=%v", m.Health(), want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitHealth(true)
	p.Kill()
	waitHealth(false)
	t.Logf("during the outage: %v", m.Health())
	time.Sleep(3 * time.Second) // let the reconnect backoff grow
	if err := p.Restart(tctx(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	// A fresh client: the old one waits out grpc's default reconnect backoff.
	mustPut(t, rawClient(t, p.Endpoint(), nil), subnets+"10.5.3.0-24", leaseValue("198.51.100.3"))
	t.Logf("lease written %v after etcd's return", time.Since(back).Round(time.Millisecond))
	deadline := time.After(20 * time.Second)
	for got := false; !got; {
		select {
		case r := <-out:
			if r.IsSnapshot() {
				_, got = byKey(r.Snapshot)["10.5.3.0-24"]
			}
			for _, e := range r.Events {
				got = got || (e.Type == subnet.EventAdded && e.Lease.Key() == "10.5.3.0-24")
			}
		case <-deadline:
			t.Fatal("lease written after etcd came back was not delivered")
		}
	}
	t.Logf("lease written after etcd came back delivered %v after its return", time.Since(back).Round(time.Millisecond))
	waitHealth(true)
}
