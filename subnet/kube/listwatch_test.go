package kube

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flannel-go/flannel/pkg/kubeapi"
	"github.com/flannel-go/flannel/subnet"
)

// fakeAPI is a scripted API server for the node list and watch: the n-th list answers
// lists[n], the n-th watch runs watches[n]; it records the resource versions asked for.
type fakeAPI struct {
	t       *testing.T
	lists   []string
	watches []func(w http.ResponseWriter, r *http.Request)

	mu                 sync.Mutex
	listRVs, watchRVs  []string
	bookmarks, timeout []string
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api/v1/nodes" {
		http.NotFound(w, r)
		return
	}
	q := r.URL.Query()
	f.mu.Lock()
	rv := "<none>"
	if q.Has("resourceVersion") {
		rv = q.Get("resourceVersion")
	}
	var (
		body  string
		watch func(w http.ResponseWriter, r *http.Request)
	)
	if q.Get("watch") == "true" {
		f.watchRVs = append(f.watchRVs, rv)
		f.bookmarks = append(f.bookmarks, q.Get("allowWatchBookmarks"))
		f.timeout = append(f.timeout, q.Get("timeoutSeconds"))
		if n := len(f.watchRVs) - 1; n < len(f.watches) {
			watch = f.watches[n]
		}
	} else {
		f.listRVs = append(f.listRVs, rv)
		if n := len(f.listRVs) - 1; n < len(f.lists) {
			body = f.lists[n]
		}
	}
	f.mu.Unlock()
	switch {
	case watch != nil:
		w.Header().Set("Content-Type", "application/json")
		watch(w, r)
	case q.Get("watch") == "true":
		<-r.Context().Done() // the script is over: an idle watch
	case body == "":
		f.t.Errorf("unexpected list %d", len(f.listRVs))
		http.Error(w, "no more lists", http.StatusInternalServerError)
	default:
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, body)
	}
}

func (f *fakeAPI) seen() (lists, watches, bookmarks, timeouts []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.listRVs...), append([]string(nil), f.watchRVs...), append([]string(nil), f.bookmarks...), append([]string(nil), f.timeout...)
}

func jsonNode(name, rv, cidr string, ann map[string]string) string {
	n := node(name, []string{cidr}, ann)
	n.Metadata.ResourceVersion = rv
	b, err := json.Marshal(n)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func nodeList(rv string, items ...string) string {
	return `{"kind":"NodeList","apiVersion":"v1","metadata":{"resourceVersion":"` + rv + `"},"items":[` + strings.Join(items, ",") + `]}`
}

// events writes watch events and ends the watch (the server's timeout).
func events(lines ...string) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		for _, l := range lines {
			fmt.Fprintln(w, l)
		}
	}
}

func event(typ, obj string) string { return `{"type":"` + typ + `","object":` + obj + `}` }

// fakeManager is a manager for the fake server, ready to watch (IPv4 network config).
func fakeManager(t *testing.T, handler http.Handler) *Manager {
	t.Helper()
	srv := httptest.NewTLSServer(handler)
	t.Cleanup(srv.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	m, err := New(Config{API: &kubeapi.Config{Server: srv.URL, CAData: ca, BearerToken: "t"}, NodeName: "own"})
	if err != nil {
		t.Fatal(err)
	}
	m.netCfg = &subnet.Config{EnableIPv4: true}
	m.lwTiming = listWatchTiming{minBackoff: 10 * time.Millisecond, maxBackoff: 50 * time.Millisecond, minWatch: time.Millisecond}
	return m
}

// leaseKeys is the sorted "<+|-><subnet>" of a result's events, or of its snapshot.
func leaseKeys(r subnet.WatchResult) string {
	var k []string
	for _, l := range r.Snapshot {
		k = append(k, l.Key())
	}
	for _, e := range r.Events {
		sign := "+"
		if e.Type == subnet.EventRemoved {
			sign = "-"
		}
		k = append(k, sign+e.Lease.Key())
	}
	sort.Strings(k)
	return strings.Join(k, " ")
}

// The watch resumes from the last resource version seen (events and bookmarks) when it
// ends or fails; an expired version (an ERROR event or an HTTP 410) makes it list again,
// from etcd, and the difference from the new list is sent as events.
func TestWatchLeasesResumeAndRelist(t *testing.T) {
	a1 := peerAnn("192.0.2.11", "0e:00:00:00:00:01")
	b1, b2 := peerAnn("192.0.2.12", "0e:00:00:00:00:02"), peerAnn("192.0.2.12", "0e:00:00:00:00:22")
	c1 := peerAnn("192.0.2.13", "0e:00:00:00:00:03")
	expired := event("ERROR", `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"too old resource version: 15 (18)","reason":"Expired","code":410}`)
	f := &fakeAPI{t: t,
		lists: []string{
			nodeList("10", jsonNode("a", "5", "10.244.1.0/24", a1), jsonNode("b", "6", "10.244.2.0/24", b1), jsonNode("c", "7", "10.244.3.0/24", nil)),
			nodeList("20", jsonNode("b", "11", "10.244.2.0/24", b2), jsonNode("c", "19", "10.244.3.0/24", c1)),
			nodeList("30", jsonNode("c", "19", "10.244.3.0/24", c1)),
		},
		watches: []func(http.ResponseWriter, *http.Request){
			events(event("MODIFIED", jsonNode("b", "11", "10.244.2.0/24", b2))),                                // then ends
			events(event("BOOKMARK", `{"kind":"Node","apiVersion":"v1","metadata":{"resourceVersion":"15"}}`)), // ends
			events(expired), // from 15: expired -> list from etcd
			func(w http.ResponseWriter, _ *http.Request) {
				http.Error(w, "overloaded", http.StatusServiceUnavailable)
			}, // retried from 20
			events(event("DELETED", jsonNode("b", "21", "10.244.2.0/24", b2))),
			func(w http.ResponseWriter, _ *http.Request) { // from 21: 410 as the HTTP status
				w.WriteHeader(http.StatusGone)
				fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"too old resource version","reason":"Expired","code":410}`)
			},
		},
	}
	m := fakeManager(t, f)
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan subnet.WatchResult, 16)
	done := make(chan error, 1)
	go func() { done <- m.WatchLeases(ctx, out) }()
	want := []string{
		"10.244.1.0-24 10.244.2.0-24",   // the snapshot of the first list
		"+10.244.2.0-24",                // b's new MAC
		"+10.244.3.0-24 -10.244.1.0-24", // the new list: a gone, c a peer now
		"-10.244.2.0-24",                // b deleted
	}
	for i, w := range want {
		r := watchNext(t, out)
		if r.IsSnapshot() != (i == 0) || leaseKeys(r) != w {
			t.Fatalf("result %d: snapshot=%v %q, want %q", i, r.IsSnapshot(), leaseKeys(r), w)
		}
		if i == 1 && !strings.Contains(string(r.Events[0].Lease.Attrs.BackendData), "0e:00:00:00:00:22") {
			t.Fatalf("b's event carries %s", r.Events[0].Lease.Attrs.BackendData)
		}
	}
	// The last relist (after the HTTP 410) changes nothing: no result.
	deadline := time.Now().Add(10 * time.Second)
	for {
		lists, _, _, _ := f.seen()
		if len(lists) == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no third list: %v", lists)
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case r := <-out:
		t.Fatalf("a relist without changes sent %q", leaseKeys(r))
	case <-time.After(200 * time.Millisecond):
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	lists, watches, bookmarks, timeouts := f.seen()
	if got := strings.Join(lists, ","); got != "0,<none>,<none>" {
		t.Errorf("list resource versions %s, want 0 (the cache) then none (etcd) after each expiry", got)
	}
	if got := strings.Join(watches[:min(7, len(watches))], ","); got != "10,11,15,20,20,21,30" {
		t.Errorf("watch resource versions %s", got)
	}
	for i := range bookmarks {
		if bookmarks[i] != "true" || timeouts[i] < "300" || timeouts[i] > "599" || len(timeouts[i]) != 3 {
			t.Errorf("watch %d: allowWatchBookmarks=%q timeoutSeconds=%q", i, bookmarks[i], timeouts[i])
		}
	}
}

// A failing list is retried; the error is logged with its hint and nothing is sent
// before a list succeeds.
func TestWatchLeasesRetriesList(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	m := fakeManager(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("watch") == "true" {
			<-r.Context().Done()
			return
		}
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n < 3 {
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `{"kind":"Status","status":"Failure","message":"nodes is forbidden","reason":"Forbidden","code":403}`)
			return
		}
		fmt.Fprint(w, nodeList("3", jsonNode("a", "1", "10.244.1.0/24", peerAnn("192.0.2.11", "0e:00:00:00:00:01"))))
	}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := make(chan subnet.WatchResult, 1)
	go func() { _ = m.WatchLeases(ctx, out) }()
	if r := watchNext(t, out); !r.IsSnapshot() || leaseKeys(r) != "10.244.1.0-24" {
		t.Fatalf("first result %q", leaseKeys(r))
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != 3 {
		t.Fatalf("%d lists, want 3", calls)
	}
}

// withHint recognises refusals from the HTTP status and the Status object, and
// unreachable servers.
func TestWithHintFromServer(t *testing.T) {
	m := fakeManager(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/v1/nodes/forbidden":
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `{"kind":"Status","status":"Failure","message":"nodes \"forbidden\" is forbidden: User \"x\" cannot get resource \"nodes\"","reason":"Forbidden","code":403}`)
		case "/api/v1/nodes/unauthorized":
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"kind":"Status","status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}`)
		case "/api/v1/namespaces/kube-flannel/pods/p":
			fmt.Fprint(w, `{"kind":"Pod","spec":{"nodeName":"node-7"}}`)
		case "/api/v1/namespaces/kube-flannel/pods/unscheduled":
			fmt.Fprint(w, `{"kind":"Pod","spec":{}}`)
		default:
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"kind":"Status","status":"Failure","message":"not found","reason":"NotFound","code":404}`)
		}
	}))
	ctx := context.Background()
	tests := []struct{ node, want string }{
		{"forbidden", `failed to get node "forbidden": nodes "forbidden" is forbidden: User "x" cannot get resource "nodes" (grant the flannel ClusterRole`},
		{"unauthorized", `failed to get node "unauthorized": Unauthorized (the API server refused the credentials`},
		{"missing", `failed to get node "missing": not found`},
	}
	for _, tt := range tests {
		_, err := m.getNode(ctx, tt.node)
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.node, err, tt.want)
		}
	}
	// The node name from the pod (POD_NAMESPACE/POD_NAME).
	m.nodeName, m.cfg.PodNamespace, m.cfg.PodName = "", "kube-flannel", "p"
	if name, err := m.NodeName(ctx); err != nil || name != "node-7" {
		t.Fatalf("node name from the pod: %q %v", name, err)
	}
	m.nodeName, m.cfg.PodName = "", "unscheduled"
	if _, err := m.NodeName(ctx); err == nil || err.Error() != "node name not present in pod spec 'kube-flannel/unscheduled'" {
		t.Fatalf("pod without a node: %v", err)
	}
	m.cfg.PodName = "gone"
	if _, err := m.NodeName(ctx); err == nil || !strings.HasPrefix(err.Error(), "error retrieving pod spec for 'kube-flannel/gone': not found") {
		t.Fatalf("missing pod: %v", err)
	}
	// Unreachable.
	u, err := New(Config{API: &kubeapi.Config{Server: "https://127.0.0.1:1"}, NodeName: "n"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.getNode(ctx, "n"); err == nil || !strings.Contains(err.Error(), "(cannot reach the API server") {
		t.Fatalf("unreachable: %v", err)
	}
}

// recordWaits makes m's back-off waits return at once and records how long they were;
// the n-th wait ends listWatch instead.
func recordWaits(m *Manager, n int) func() []time.Duration {
	var (
		mu    sync.Mutex
		waits []time.Duration
	)
	m.lwTiming.wait = func(ctx context.Context, d time.Duration) bool {
		mu.Lock()
		waits = append(waits, d)
		last := len(waits) >= n
		mu.Unlock()
		return ctx.Err() == nil && !last
	}
	return func() []time.Duration {
		mu.Lock()
		defer mu.Unlock()
		return append([]time.Duration(nil), waits...)
	}
}

// scriptAPI answers the n-th node list with lists[n] and the n-th watch with watches[n]
// and records the resource versions asked for; past the script a watch is held open
// and a list is an error.
type scriptAPI struct {
	t                 *testing.T
	lists, watches    []http.HandlerFunc
	mu                sync.Mutex
	listRVs, watchRVs []string
}

func (s *scriptAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s.mu.Lock()
	var h http.HandlerFunc
	if q.Get("watch") == "true" {
		s.watchRVs = append(s.watchRVs, q.Get("resourceVersion"))
		if n := len(s.watchRVs) - 1; n < len(s.watches) {
			h = s.watches[n]
		} else {
			h = func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }
		}
	} else {
		s.listRVs = append(s.listRVs, q.Get("resourceVersion"))
		if n := len(s.listRVs) - 1; n < len(s.lists) {
			h = s.lists[n]
		} else {
			s.t.Errorf("unexpected list %d", n+1)
			h = func(w http.ResponseWriter, _ *http.Request) {
				http.Error(w, "no more lists", http.StatusInternalServerError)
			}
		}
	}
	s.mu.Unlock()
	h(w, r)
}

func (s *scriptAPI) seen() (lists, watches []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.listRVs...), append([]string(nil), s.watchRVs...)
}

// runListWatch runs m.listWatch until it returns (its last wait, see recordWaits).
func runListWatch(t *testing.T, m *Manager) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.listWatch(ctx, newNodeQueue(), m.lwTiming)
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		cancel()
		<-done
		t.Fatal("listWatch did not reach the last wait in a minute")
	}
}

func status(code int, reason string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"%s","reason":"%s","code":%d}`, reason, reason, code)
	}
}

func listOK(rv string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, nodeList(rv)) }
}

// cut writes the watch events, then breaks the stream (a failed watch, not an end).
func cut(lines ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		for _, l := range lines {
			fmt.Fprintln(w, l)
		}
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
}

func durations(ms ...int) []time.Duration {
	d := make([]time.Duration, len(ms))
	for i, m := range ms {
		d[i] = time.Duration(m) * time.Millisecond
	}
	return d
}

// The back-off starts again from the minimum after a successful list, after a watch
// that delivered node events (bookmarks do not count) and after a watch that ran at
// least minWatch, however they ended.
func TestListWatchBackoffResets(t *testing.T) {
	a := peerAnn("192.0.2.11", "0e:00:00:00:00:01")
	bookmark := func(rv string) string {
		return event("BOOKMARK", `{"kind":"Node","apiVersion":"v1","metadata":{"resourceVersion":"`+rv+`"}}`)
	}
	f := &scriptAPI{t: t,
		lists: []http.HandlerFunc{status(403, "Forbidden"), status(403, "Forbidden"), status(403, "Forbidden"), listOK("5")},
		watches: []http.HandlerFunc{
			status(503, "ServiceUnavailable"),
			status(503, "ServiceUnavailable"),
			cut(event("ADDED", jsonNode("a", "6", "10.244.1.0/24", a))), // an event, then broken
			events(bookmark("7")),                                       // ends at once with a bookmark only
			events(bookmark("8")),
			func(w http.ResponseWriter, _ *http.Request) { // runs past minWatch, then broken
				w.(http.Flusher).Flush()
				time.Sleep(1500 * time.Millisecond)
				panic(http.ErrAbortHandler)
			},
			status(503, "ServiceUnavailable"),
		},
	}
	m := fakeManager(t, f)
	m.lwTiming = listWatchTiming{minBackoff: 10 * time.Millisecond, maxBackoff: 10 * time.Second, minWatch: time.Second}
	waits := recordWaits(m, 10)
	runListWatch(t, m)
	want := durations(
		10, 20, 40, // lists refused
		10, 20, // the list reset it; watches refused
		10,     // the watch with an event reset it; it broke
		20, 40, // bookmarks only, ended at once
		10, 20, // the long watch reset it; it broke; refused
	)
	if got := waits(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("back-off waits %v, want %v", got, want)
	}
	if _, w := f.seen(); strings.Join(w, ",") != "5,5,5,6,7,8,8" {
		t.Errorf("watch resource versions %v", w)
	}
}

// A server answering 410 to every watch does not make a list loop: the back-off grows
// to the maximum across the lists. A single expiry after a watch that delivered events
// lists again at once.
func TestListWatchExpiredBacksOff(t *testing.T) {
	gone := status(http.StatusGone, "Expired")
	lists := make([]http.HandlerFunc, 9)
	watches := make([]http.HandlerFunc, 9)
	for i := range lists {
		lists[i], watches[i] = listOK(fmt.Sprint(10*(i+1))), gone
	}
	f := &scriptAPI{t: t, lists: lists, watches: watches}
	m := fakeManager(t, f)
	m.lwTiming = listWatchTiming{minBackoff: 10 * time.Millisecond, maxBackoff: 200 * time.Millisecond, minWatch: time.Millisecond}
	waits := recordWaits(m, 9)
	runListWatch(t, m)
	if got, want := waits(), durations(10, 20, 40, 80, 160, 200, 200, 200, 200); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("back-off waits %v, want %v", got, want)
	}

	a := peerAnn("192.0.2.11", "0e:00:00:00:00:01")
	added := events(event("ADDED", jsonNode("a", "11", "10.244.1.0/24", a)))
	f = &scriptAPI{t: t,
		lists: []http.HandlerFunc{listOK("10"), listOK("20"), listOK("30"), listOK("40"), listOK("50")},
		watches: []http.HandlerFunc{
			added, gone, // expired after events: listed again at once
			gone,        // right after the list: back-off
			gone,        // again: more
			added, gone, // events reset it: at once
			status(503, "ServiceUnavailable"), // the last wait: from the minimum again
		},
	}
	m = fakeManager(t, f)
	m.lwTiming = listWatchTiming{minBackoff: 10 * time.Millisecond, maxBackoff: time.Second, minWatch: time.Hour}
	waits = recordWaits(m, 3)
	runListWatch(t, m)
	if got, want := waits(), durations(10, 20, 10); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("back-off waits %v, want %v", got, want)
	}
	l, w := f.seen()
	if strings.Join(l, ",") != "0,,,," || strings.Join(w, ",") != "10,11,20,30,40,11,50" {
		t.Errorf("lists %q, watches %q", l, w)
	}
}

// A list from etcd is paged (limit, continue) and the pages are joined; an expired
// continue token makes it list again in one response. A list from the cache is one
// request.
func TestListSlimPages(t *testing.T) {
	all := testNodeList(5)
	page := func(from, to int, cont string) []byte {
		l := all.DeepCopy()
		l.Items, l.Continue = l.Items[from:to], cont
		return protoEncode(t, l)
	}
	var (
		mu      sync.Mutex
		queries []string
		expire  bool
	)
	m := fakeManager(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		queries = append(queries, r.URL.RawQuery)
		expire := expire
		mu.Unlock()
		q := r.URL.Query()
		var body []byte
		switch {
		case q.Get("continue") == "c1" && expire:
			status(http.StatusGone, "Expired")(w, r)
			return
		case q.Get("continue") == "c1":
			body = page(2, 4, "c2")
		case q.Get("continue") == "c2":
			body = page(4, 5, "")
		case q.Get("limit") == "2":
			body = page(0, 2, "c1")
		default: // the cache, or no limit
			body = page(0, 5, "")
		}
		w.Header().Set("Content-Type", "application/vnd.kubernetes.protobuf")
		_, _ = w.Write(body)
	}))
	m.pageSize = 2
	ctx := context.Background()
	names := func(l *peerNodeList) string {
		var n []string
		for _, p := range l.Items {
			n = append(n, p.Name)
		}
		return strings.Join(n, ",")
	}
	check := func(name, rv string, wantQueries ...string) {
		t.Helper()
		mu.Lock()
		queries = nil
		mu.Unlock()
		l, err := m.listSlim(ctx, rv)
		if err != nil || names(l) != "n0,n1,n2,n3,n4" || l.ResourceVersion != "4711" || l.Continue != "" {
			t.Fatalf("%s: %v %q rv=%q", name, err, names(l), l.ResourceVersion)
		}
		mu.Lock()
		defer mu.Unlock()
		if strings.Join(queries, " ") != strings.Join(wantQueries, " ") {
			t.Errorf("%s: queries %q, want %q", name, queries, wantQueries)
		}
	}
	check("from etcd", "", "limit=2", "continue=c1&limit=2", "continue=c2&limit=2")
	check("from the cache", "0", "resourceVersion=0")
	mu.Lock()
	expire = true
	mu.Unlock()
	check("continue expired", "", "limit=2", "continue=c1&limit=2", "")
}
