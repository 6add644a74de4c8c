package kube

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"

	"github.com/flannel-go/flannel/pkg/klogtest"
)

// scriptAPI is a scripted API server: the n-th list answers lists[n], the n-th watch runs
// watches[n] (past the end: the last list, an open watch). Streaming lists run streaming,
// or are refused when it is nil, so the Reflector lists. It records "list <rv>",
// "watch <rv>" and "stream <rv>".
type scriptAPI struct {
	t         *testing.T
	lists     []http.HandlerFunc
	watches   []http.HandlerFunc
	streaming http.HandlerFunc

	mu    sync.Mutex
	seen  []string
	nList int
	nWat  int
}

func (s *scriptAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api/v1/nodes" {
		http.NotFound(w, r)
		return
	}
	q := r.URL.Query()
	rv := q.Get("resourceVersion")
	if !q.Has("resourceVersion") {
		rv = "<none>"
	}
	if q.Get("watch") == "true" && q.Get("sendInitialEvents") == "true" && s.streaming == nil {
		writeStatus(w, http.StatusUnprocessableEntity, "Invalid", "sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled")
		return
	}
	s.mu.Lock()
	var h http.HandlerFunc
	switch {
	case q.Get("watch") == "true" && q.Get("sendInitialEvents") == "true":
		s.seen = append(s.seen, "stream "+rv)
		h = s.streaming
	case q.Get("watch") == "true":
		s.seen = append(s.seen, "watch "+rv)
		if q.Get("allowWatchBookmarks") != "true" || q.Get("timeoutSeconds") == "" {
			s.t.Errorf("watch without bookmarks or timeout: %s", r.URL.RawQuery)
		}
		if s.nWat < len(s.watches) {
			h = s.watches[s.nWat]
		} else {
			h = func(w http.ResponseWriter, r *http.Request) { w.(http.Flusher).Flush(); <-r.Context().Done() }
		}
		s.nWat++
	default:
		s.seen = append(s.seen, "list "+rv)
		h = s.lists[min(s.nList, len(s.lists)-1)]
		s.nList++
	}
	s.mu.Unlock()
	h(w, r)
}

func (s *scriptAPI) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.seen...)
}

func writeStatus(w http.ResponseWriter, code int, reason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": msg, "reason": reason, "code": code})
}

func status(code int, reason string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { writeStatus(w, code, reason, reason) }
}

func jsonNode(name, rv, cidr string, ann map[string]string) string {
	n := node(name, []string{cidr}, ann)
	n.ResourceVersion = rv
	n.Kind, n.APIVersion = "Node", "v1"
	b, err := json.Marshal(n)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func listOf(rv string, items ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"kind":"NodeList","apiVersion":"v1","metadata":{"resourceVersion":"`+rv+`"},"items":[`+strings.Join(items, ",")+`]}`)
	}
}

// events writes watch events and ends the watch (the server's timeout).
func events(lines ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		for _, l := range lines {
			fmt.Fprintln(w, l)
		}
	}
}

func event(typ, obj string) string { return `{"type":"` + typ + `","object":` + obj + `}` }

func bookmark(rv string) string {
	return event("BOOKMARK", `{"kind":"Node","apiVersion":"v1","metadata":{"resourceVersion":"`+rv+`"}}`)
}

// fakeManager is a manager for the fake server, ready to watch (IPv4 network config).
func fakeManager(t *testing.T, handler http.Handler) *Manager {
	t.Helper()
	srv := httptest.NewTLSServer(handler)
	t.Cleanup(srv.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	m, err := New(Config{REST: &rest.Config{Host: srv.URL, TLSClientConfig: rest.TLSClientConfig{CAData: ca}, BearerToken: "t"}, NodeName: "own"})
	if err != nil {
		t.Fatal(err)
	}
	m.netCfg = &subnet.Config{EnableIPv4: true}
	return m
}

func leaseKeys(r subnet.WatchResult) string {
	var k []string
	for _, c := range r.Snapshot {
		k = append(k, c.Lease.Key())
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

func runWatch(t *testing.T, m *Manager) <-chan subnet.WatchResult {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan subnet.WatchResult, 16)
	done := make(chan error, 1)
	go func() { done <- m.WatchLeases(ctx, out) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("WatchLeases: %v", err)
		}
	})
	return out
}

// A streaming list (a watch with sendInitialEvents) is slimmed node by node as it
// arrives, its end (the initial-events-end bookmark) sends the snapshot without a list,
// and the same watch goes on.
func TestWatchLeasesStreamingList(t *testing.T) {
	a1, b1 := peerAnn("192.0.2.11", "0e:00:00:00:00:01"), peerAnn("192.0.2.12", "0e:00:00:00:00:02")
	f := &scriptAPI{t: t,
		lists: []http.HandlerFunc{func(w http.ResponseWriter, _ *http.Request) {
			t.Errorf("a list after a streaming list")
			writeStatus(w, http.StatusInternalServerError, "InternalError", "no list")
		}},
		streaming: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			for _, l := range []string{
				event("ADDED", jsonNode("a", "5", "10.244.1.0/24", a1)),
				event("ADDED", jsonNode("c", "7", "10.244.3.0/24", nil)),
				event("BOOKMARK", `{"kind":"Node","apiVersion":"v1","metadata":{"resourceVersion":"10","annotations":{"k8s.io/initial-events-end":"true"}}}`),
				event("ADDED", jsonNode("b", "11", "10.244.2.0/24", b1)),
			} {
				fmt.Fprintln(w, l)
			}
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		},
	}
	m := fakeManager(t, f)
	out := runWatch(t, m)
	r := watchNext(t, out)
	got := leaseKeys(r)
	if r.IsSnapshot() && got == "10.244.1.0-24" { // b, watched after the list, may come with it
		r = watchNext(t, out)
		got += " then " + leaseKeys(r)
	}
	if got != "10.244.1.0-24 then +10.244.2.0-24" && got != "10.244.1.0-24 10.244.2.0-24" {
		t.Fatalf("results %q: want the snapshot of a, then b (requests %v)", got, f.requests())
	}
	if got := strings.Join(f.requests(), ","); got != "stream <none>" && got != "stream " {
		t.Errorf("requests %s: want one streaming list", got)
	}
	n := &apiNode{ObjectMeta: metav1.ObjectMeta{Name: "a", ResourceVersion: "5", Annotations: a1}}
	n.Spec.PodCIDRs = []string{"10.244.1.0/24"}
	if got, err := (&nodeSink{m: m}).Transformer()(n); err != nil || !reflect.DeepEqual(got, m.slim(n)) {
		t.Errorf("a streamed node transformed into %#v, want its slim form %#v", got, m.slim(n))
	}
}

// The first list comes from the cache (rv 0); watches resume from the last rv seen
// without listing; an expired rv (ERROR event or 410) relists, sending the difference as
// events; a relist changing nothing sends nothing.
func TestWatchLeasesResumeAndRelist(t *testing.T) {
	a1 := peerAnn("192.0.2.11", "0e:00:00:00:00:01")
	b1, b2 := peerAnn("192.0.2.12", "0e:00:00:00:00:02"), peerAnn("192.0.2.12", "0e:00:00:00:00:22")
	c1 := peerAnn("192.0.2.13", "0e:00:00:00:00:03")
	expired := event("ERROR", `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"too old resource version: 15 (18)","reason":"Expired","code":410}`)
	f := &scriptAPI{t: t,
		lists: []http.HandlerFunc{
			listOf("10", jsonNode("a", "5", "10.244.1.0/24", a1), jsonNode("b", "6", "10.244.2.0/24", b1), jsonNode("c", "7", "10.244.3.0/24", nil)),
			listOf("20", jsonNode("b", "11", "10.244.2.0/24", b2), jsonNode("c", "19", "10.244.3.0/24", c1)),
			listOf("30", jsonNode("c", "19", "10.244.3.0/24", c1)),
		},
		watches: []http.HandlerFunc{
			events(event("MODIFIED", jsonNode("b", "11", "10.244.2.0/24", b2))), // then ends
			events(bookmark("15")), // ends
			events(expired),        // from 15: expired -> list
			events(event("DELETED", jsonNode("b", "21", "10.244.2.0/24", b2))),
			status(http.StatusGone, "Expired"), // from 21: 410 as the HTTP status -> list
		},
	}
	out := runWatch(t, fakeManager(t, f))
	want := []string{
		"10.244.1.0-24 10.244.2.0-24",   // the snapshot of the first list
		"+10.244.2.0-24",                // b's new MAC
		"+10.244.3.0-24 -10.244.1.0-24", // the new list: a gone, c a peer now
		"-10.244.2.0-24",                // b deleted
	}
	for i, w := range want {
		r := watchNext(t, out)
		if r.IsSnapshot() != (i == 0) || leaseKeys(r) != w {
			t.Fatalf("result %d: snapshot=%v %q, want %q (requests %v)", i, r.IsSnapshot(), leaseKeys(r), w, f.requests())
		}
		if i == 1 && !strings.Contains(string(r.Events[0].Lease.Attrs.BackendData), "0e:00:00:00:00:22") {
			t.Fatalf("b's event carries %s", r.Events[0].Lease.Attrs.BackendData)
		}
	}
	// The last relist (after the HTTP 410) changes nothing: no result.
	waitFor(t, func() bool { return strings.Count(strings.Join(f.requests(), ","), "list") >= 3 }, "a third list")
	select {
	case r := <-out:
		t.Fatalf("a relist without changes sent %q", leaseKeys(r))
	case <-time.After(300 * time.Millisecond):
	}
	got := strings.Join(f.requests(), ",")
	if !strings.HasPrefix(got, "list 0,watch 10,watch 11,watch 15,list ") {
		t.Errorf("requests %s: want the cache list, then watches resuming at 10, 11 (event), 15 (bookmark), then a list", got)
	}
	if !strings.Contains(got, "watch 20,watch 21,list ") {
		t.Errorf("requests %s: want watches resuming at 20 and 21 after the second list, then a list", got)
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 30s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type watchRecorder struct {
	observe.Nop
	mu              sync.Mutex
	errs            []string // op: error
	restarts, lives int
}

func (r *watchRecorder) DatastoreError(op observe.Op, err error) {
	r.mu.Lock()
	r.errs = append(r.errs, string(op)+": "+err.Error())
	r.mu.Unlock()
}
func (r *watchRecorder) WatchRestarted(observe.Kind, error) { r.mu.Lock(); r.restarts++; r.mu.Unlock() }
func (r *watchRecorder) WatchLive(observe.Kind)             { r.mu.Lock(); r.lives++; r.mu.Unlock() }

// A failing list is retried and nothing is sent before one succeeds; each failure is
// reported with the hint, the watch restarted once and then live; the Reflector's own
// error lines stay below the default verbosity.
func TestWatchLeasesRetriesList(t *testing.T) {
	logs := klogtest.Capture(t, 0)
	f := &scriptAPI{t: t, lists: []http.HandlerFunc{
		status(http.StatusForbidden, "Forbidden"), status(http.StatusServiceUnavailable, "ServiceUnavailable"),
		listOf("3", jsonNode("a", "1", "10.244.1.0/24", peerAnn("192.0.2.11", "0e:00:00:00:00:01"))),
	}}
	m := fakeManager(t, f)
	rec := &watchRecorder{}
	m.SetObserver(rec)
	out := runWatch(t, m)
	if r := watchNext(t, out); !r.IsSnapshot() || leaseKeys(r) != "10.244.1.0-24" {
		t.Fatalf("first result %q", leaseKeys(r))
	}
	if got := f.requests(); len(got) < 3 || strings.Join(got[:3], ",") != "list 0,list 0,list 0" {
		t.Fatalf("requests %v, want three lists from the cache", got)
	}
	waitFor(t, func() bool { rec.mu.Lock(); defer rec.mu.Unlock(); return rec.lives > 0 }, "the watch reported live")
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.errs) != 2 || !strings.HasPrefix(rec.errs[0], "list: Forbidden (permission denied by the API server "+m.server) ||
		!strings.HasPrefix(rec.errs[1], "list: ServiceUnavailable") {
		t.Errorf("errors reported %q", rec.errs)
	}
	if rec.restarts != 1 {
		t.Errorf("watch restarts %d, want 1 for one outage", rec.restarts)
	}
	klog.Flush()
	if l := logs.String(); strings.Contains(l, "Failed to watch") || strings.Contains(l, "Forbidden") {
		t.Errorf("the Reflector's lines are logged at -v=0:\n%s", l)
	}
}

// A paged list is joined; an expired continue token makes it list again in one response.
func TestWatchLeasesPagedList(t *testing.T) {
	var items []string
	for i := range 5 {
		items = append(items, jsonNode(fmt.Sprintf("n%d", i), fmt.Sprint(i+1), fmt.Sprintf("10.244.%d.0/24", i+1), peerAnn(fmt.Sprintf("192.0.2.%d", 11+i), "0e:00:00:00:00:01")))
	}
	page := func(from, to int, cont string) string {
		return `{"kind":"NodeList","apiVersion":"v1","metadata":{"resourceVersion":"9","continue":"` + cont + `"},"items":[` + strings.Join(items[from:to], ",") + `]}`
	}
	var (
		mu      sync.Mutex
		queries []string
	)
	m := fakeManager(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Get("watch") == "true" {
			if q.Get("sendInitialEvents") == "true" {
				writeStatus(w, http.StatusUnprocessableEntity, "Invalid", "sendInitialEvents is forbidden")
				return
			}
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			return
		}
		mu.Lock()
		queries = append(queries, fmt.Sprintf("limit=%s continue=%s", q.Get("limit"), q.Get("continue")))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch q.Get("continue") {
		case "":
			if q.Get("limit") == "" {
				fmt.Fprint(w, page(0, 5, ""))
				return
			}
			fmt.Fprint(w, page(0, 2, "c1"))
		case "c1":
			fmt.Fprint(w, page(2, 4, "c2"))
		default:
			status(http.StatusGone, "Expired")(w, r)
		}
	}))
	out := runWatch(t, m)
	if r := watchNext(t, out); !r.IsSnapshot() || len(r.Snapshot) != 5 {
		t.Fatalf("first result %q, want the 5 nodes", leaseKeys(r))
	}
	mu.Lock()
	defer mu.Unlock()
	if got := strings.Join(queries, ","); got != "limit=500 continue=,limit=500 continue=c1,limit=500 continue=c2,limit= continue=" {
		t.Fatalf("list queries %s", got)
	}
}

// withHint recognises refusals from the Status object, and unreachable servers.
func TestWithHintFromServer(t *testing.T) {
	m := fakeManager(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path + "?" + r.URL.Query().Get("fieldSelector") {
		case "/api/v1/nodes?metadata.name=forbidden":
			writeStatus(w, http.StatusForbidden, "Forbidden", `nodes is forbidden: User "x" cannot list resource "nodes"`)
			return
		case "/api/v1/nodes?metadata.name=unauthorized":
			writeStatus(w, http.StatusUnauthorized, "Unauthorized", "Unauthorized")
			return
		case "/api/v1/nodes?metadata.name=missing":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"kind":"NodeList","apiVersion":"v1","metadata":{},"items":[]}`)
			return
		}
		switch r.URL.Path {
		case "/api/v1/namespaces/kube-flannel/pods/p":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"kind":"Pod","apiVersion":"v1","spec":{"nodeName":"node-7"}}`)
		case "/api/v1/namespaces/kube-flannel/pods/unscheduled":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"kind":"Pod","apiVersion":"v1","spec":{}}`)
		default:
			writeStatus(w, http.StatusNotFound, "NotFound", "not found")
		}
	}))
	ctx := context.Background()
	tests := []struct{ node, want string }{
		{"forbidden", `failed to get node "forbidden": nodes is forbidden: User "x" cannot list resource "nodes" (permission denied by the API server ` + m.server + `: grant the flannel ClusterRole`},
		{"unauthorized", `failed to get node "unauthorized": Unauthorized (the API server ` + m.server + ` refused the credentials`},
		{"missing", `failed to get node "missing": nodes "missing" not found (API server ` + m.server + `)`},
	}
	for _, tt := range tests {
		_, err := m.getNode(ctx, tt.node)
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.node, err, tt.want)
		}
	}
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
	u, err := New(Config{REST: &rest.Config{Host: "https://127.0.0.1:1"}, NodeName: "n"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.getNode(ctx, "n"); err == nil || !strings.Contains(err.Error(), "(cannot reach the API server, connection refused (nothing listens on that address and port): check --kube-api-url") {
		t.Fatalf("unreachable: %v", err)
	}
	// A server certificate no trusted CA signed (no CA given: the system's).
	other := httptest.NewTLSServer(http.NotFoundHandler())
	t.Cleanup(other.Close)
	v, err := New(Config{REST: &rest.Config{Host: other.URL}, NodeName: "n"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.getNode(ctx, "n"); err == nil || !strings.Contains(err.Error(), "(TLS: the server's certificate is signed by an unknown authority: check the server URL and the certificate-authority of the kubeconfig") {
		t.Fatalf("unknown authority: %v", err)
	}
	// The list's errors carry the hint too (the Reflector logs them).
	if _, err := m.cs.listNodes(ctx, metav1.ListOptions{}, m.slimNode); err == nil || !strings.Contains(m.withHint(err).Error(), "not found") {
		t.Fatalf("list: %v", err)
	}
}
