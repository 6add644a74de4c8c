package healthz

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(b)
}

func TestEndpoints(t *testing.T) {
	r := NewReadiness("subnet-file", "lease-watch")
	h := Handler(r, nil)
	if code, body := get(t, h, "/healthz"); code != 200 || body != "flanneld is running" {
		t.Fatalf("/healthz = %d %q", code, body)
	}
	code, body := get(t, h, "/readyz")
	if code != 503 || !strings.HasPrefix(body, "flanneld is not ready yet") || !strings.Contains(body, "lease-watch: not done yet") || !strings.Contains(body, "subnet-file") {
		t.Fatalf("/readyz = %d %q", code, body)
	}
	r.Set("subnet-file", nil)
	r.Set("lease-watch", errors.New("etcd unreachable"))
	if code, body = get(t, h, "/readyz"); code != 503 || strings.Contains(body, "subnet-file") || !strings.Contains(body, "lease-watch: etcd unreachable") {
		t.Fatalf("/readyz = %d %q", code, body)
	}
	r.Set("lease-watch", nil)
	if code, body = get(t, h, "/readyz"); code != 200 || body != "flanneld is ready" {
		t.Fatalf("/readyz = %d %q", code, body)
	}
}

func TestProbesAndVerbose(t *testing.T) {
	r := NewReadiness("subnet-file")
	var watchErr error = errors.New("etcd connection is TRANSIENT_FAILURE")
	r.SetProbe("lease-watch", func() error { return watchErr })
	leaseCalls := 0
	r.Set("lease-valid", errors.New("no lease yet"))
	r.SetProbe("lease-valid", func() error { leaseCalls++; return nil })
	h := Handler(r, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "m 1\n") }))

	tests := []struct {
		name       string
		prep       func()
		path       string
		code       int
		has, lacks []string
	}{
		{"recorded failure hides the probe", nil, "/readyz", 503,
			[]string{"lease-valid: no lease yet", "lease-watch: etcd connection is TRANSIENT_FAILURE", "subnet-file: not done yet"}, nil},
		{"probe failing", func() { r.Set("lease-valid", nil); r.Set("subnet-file", nil) }, "/readyz", 503,
			[]string{"flanneld is not ready yet\nlease-watch: etcd connection is TRANSIENT_FAILURE\n"}, []string{"lease-valid", "subnet-file"}},
		{"verbose names every check", nil, "/readyz?verbose", 503,
			[]string{"[+]lease-valid ok", "[-]lease-watch: etcd connection", "[+]subnet-file ok"}, nil},
		{"all pass", func() { watchErr = nil }, "/readyz", 200, []string{"flanneld is ready"}, []string{"\n"}},
		{"verbose when ready", nil, "/readyz?verbose", 200, []string{"flanneld is ready\n[+]lease-valid ok\n[+]lease-watch ok\n[+]subnet-file ok\n"}, nil},
		{"metrics served", nil, "/metrics", 200, []string{"m 1"}, nil},
	}
	for _, tt := range tests {
		if tt.prep != nil {
			tt.prep()
		}
		code, body := get(t, h, tt.path)
		if code != tt.code {
			t.Errorf("%s: %s = %d %q, want %d", tt.name, tt.path, code, body, tt.code)
		}
		for _, s := range tt.has {
			if !strings.Contains(body, s) {
				t.Errorf("%s: body %q lacks %q", tt.name, body, s)
			}
		}
		for _, s := range tt.lacks {
			if strings.Contains(body, s) {
				t.Errorf("%s: body %q has %q", tt.name, body, s)
			}
		}
	}
	if leaseCalls == 0 {
		t.Error("the lease-valid probe was never called once its recorded state passed")
	}
	if code, _ := get(t, Handler(r, nil), "/metrics"); code != 404 {
		t.Errorf("/metrics without metrics = %d", code)
	}
}

// A note shows beside its check in the verbose output only, passing or failing.
func TestNotes(t *testing.T) {
	r := NewReadiness()
	var health error
	r.SetProbe("wireguard", func() error { return health })
	r.SetNote("wireguard", func() string { return "userspace WireGuard: flannel-wg" })
	h := Handler(r, nil)
	if code, body := get(t, h, "/readyz"); code != 200 || body != "flanneld is ready" {
		t.Errorf("/readyz = %d %q", code, body)
	}
	if code, body := get(t, h, "/readyz?verbose"); code != 200 || body != "flanneld is ready\n[+]wireguard ok (userspace WireGuard: flannel-wg)\n" {
		t.Errorf("/readyz?verbose = %d %q", code, body)
	}
	health = errors.New("the userspace WireGuard device flannel-wg has stopped")
	if code, body := get(t, h, "/readyz"); code != 503 || body != "flanneld is not ready yet\nwireguard: the userspace WireGuard device flannel-wg has stopped\n" {
		t.Errorf("/readyz = %d %q", code, body)
	}
	if code, body := get(t, h, "/readyz?verbose"); code != 503 ||
		!strings.Contains(body, "[-]wireguard: the userspace WireGuard device flannel-wg has stopped (userspace WireGuard: flannel-wg)\n") {
		t.Errorf("/readyz?verbose = %d %q", code, body)
	}
}
