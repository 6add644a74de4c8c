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
	h := Handler(r)
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
