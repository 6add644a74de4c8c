package kubeapi

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// seen is what the test server saw of a request.
type seen struct {
	method, path, query, auth, agent, accept, ctype, body string
	clientCN                                              string
}

// testServer is a TLS server answering with handler and recording the requests.
func testServer(t *testing.T, handler http.HandlerFunc) (*httptest.Server, *Config, func() []seen) {
	t.Helper()
	return testServerAuth(t, tls.RequestClientCert, handler)
}

// testServerAuth is testServer with the given client certificate policy.
func testServerAuth(t *testing.T, clientAuth tls.ClientAuthType, handler http.HandlerFunc) (*httptest.Server, *Config, func() []seen) {
	t.Helper()
	var (
		mu  sync.Mutex
		got []seen
	)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s := seen{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("Authorization"), r.Header.Get("User-Agent"),
			r.Header.Get("Accept"), r.Header.Get("Content-Type"), string(body), ""}
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			s.clientCN = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		mu.Lock()
		got = append(got, s)
		mu.Unlock()
		handler(w, r)
	}))
	srv.TLS = &tls.Config{ClientAuth: clientAuth}
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	return srv, &Config{Server: srv.URL, CAData: ca}, func() []seen {
		mu.Lock()
		defer mu.Unlock()
		return append([]seen(nil), got...)
	}
}

func newClient(t *testing.T, c *Config) *Client {
	t.Helper()
	cl, err := New(c, "")
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func writeStatus(w http.ResponseWriter, code int, reason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": msg, "reason": reason, "code": code})
}

func TestClientRequests(t *testing.T) {
	_, cfg, requests := testServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/prefix/api/v1/nodes/a" && r.Method == http.MethodGet:
			fmt.Fprint(w, `{"metadata":{"name":"a"},"spec":{"podCIDR":"10.244.1.0/24"}}`)
		case r.URL.Path == "/prefix/api/v1/nodes/a/status" && r.Method == http.MethodPatch:
			fmt.Fprint(w, `{}`)
		case r.URL.Path == "/prefix/api/v1/nodes/forbidden":
			writeStatus(w, 403, "Forbidden", `nodes "forbidden" is forbidden: User "x" cannot get resource "nodes"`)
		case r.URL.Path == "/prefix/api/v1/nodes/gone":
			writeStatus(w, 410, "Expired", "too old")
		case r.URL.EscapedPath() == "/prefix/api/v1/nodes/a%2Fb":
			fmt.Fprint(w, `{"metadata":{"name":"a/b"}}`)
		case r.URL.Path == "/prefix/api/v1/nodes/plain":
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, "Unauthorized\n")
		default:
			writeStatus(w, 404, "NotFound", "not found")
		}
	})
	cfg.Server += "/prefix/"
	cfg.BearerToken = "tok"
	c := newClient(t, cfg)
	ctx := context.Background()
	var n struct {
		Metadata struct{ Name string }
	}
	if err := c.Get(ctx, "/api/v1/nodes/a", &n); err != nil || n.Metadata.Name != "a" {
		t.Fatalf("get: %v %+v", err, n)
	}
	if err := c.Patch(ctx, "/api/v1/nodes/a/status", "application/strategic-merge-patch+json", []byte(`{"x":1}`)); err != nil {
		t.Fatal(err)
	}
	err := c.Get(ctx, "/api/v1/nodes/forbidden", &n)
	if !IsForbidden(err) || IsUnauthorized(err) || !strings.Contains(err.Error(), `nodes "forbidden" is forbidden`) {
		t.Fatalf("forbidden: %v", err)
	}
	if err := c.Get(ctx, "/api/v1/nodes/gone", &n); !IsGone(err) {
		t.Fatalf("gone: %v", err)
	}
	err = c.Get(ctx, "/api/v1/nodes/plain", &n)
	if !IsUnauthorized(err) || !strings.Contains(err.Error(), "401 Unauthorized: Unauthorized") {
		t.Fatalf("plain 401: %v", err)
	}
	if err := c.Get(ctx, "/api/v1/nodes/x", &n); !IsNotFound(err) {
		t.Fatalf("not found: %v", err)
	}
	if err := c.Get(ctx, "/api/v1/nodes/"+url.PathEscape("a/b"), &n); err != nil || n.Metadata.Name != "a/b" {
		t.Fatalf("escaped name: %v %+v", err, n)
	}
	got := requests()
	if len(got) != 7 {
		t.Fatalf("requests %+v", got)
	}
	for _, s := range got {
		if s.auth != "Bearer tok" || s.agent != "flannel-go" || s.accept != "application/json" {
			t.Errorf("request headers %+v", s)
		}
	}
	if p := got[1]; p.method != http.MethodPatch || p.ctype != "application/strategic-merge-patch+json" || p.body != `{"x":1}` {
		t.Errorf("patch %+v", p)
	}

	// Unreachable: a *url.Error, as net/http returns it.
	bad := newClient(t, &Config{Server: "https://127.0.0.1:1", CAData: cfg.CAData})
	var uerr *url.Error
	if err := bad.Get(ctx, "/api/v1/nodes/a", &n); !errors.As(err, &uerr) {
		t.Fatalf("unreachable: %T %v", err, err)
	}
	// An untrusted server.
	other := newClient(t, &Config{Server: cfg.Server})
	if err := other.Get(ctx, "/api/v1/nodes/a", &n); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("untrusted server: %v", err)
	}
}

func TestClientWatch(t *testing.T) {
	_, cfg, requests := testServer(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"type":"ADDED","object":{"metadata":{"name":"a"}}}`+"\n")
		w.(http.Flusher).Flush()
		fmt.Fprint(w, `{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired","message":"too old resource version"}}`)
	})
	c := newClient(t, cfg)
	body, err := c.Watch(context.Background(), "/api/v1/nodes", url.Values{"resourceVersion": {"7"}})
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	d := NewWatchDecoder(body)
	if ev, err := d.Next(); err != nil || ev.Type != Added {
		t.Fatalf("first event %v %v", ev, err)
	}
	if _, err := d.Next(); !IsGone(err) {
		t.Fatalf("second event: %v", err)
	}
	if q := requests()[0].query; q != "resourceVersion=7&watch=true" {
		t.Fatalf("query %q", q)
	}
}

func TestClientTokenFileRotation(t *testing.T) {
	_, cfg, requests := testServer(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `{}`) })
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte("one\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.TokenFile = tokFile
	c := newClient(t, cfg)
	now := time.Now()
	c.auth.now = func() time.Time { return now }
	get := func() {
		t.Helper()
		if err := c.Get(context.Background(), "/api/v1/nodes/a", &struct{}{}); err != nil {
			t.Fatal(err)
		}
	}
	get()
	if err := os.WriteFile(tokFile, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	get() // within the minute: still the token read before
	now = now.Add(tokenPeriod + time.Second)
	get() // read again
	if err := os.Remove(tokFile); err != nil {
		t.Fatal(err)
	}
	now = now.Add(tokenPeriod + time.Second)
	get() // unreadable: the last token read
	var auth []string
	for _, s := range requests() {
		auth = append(auth, s.auth)
	}
	if strings.Join(auth, ",") != "Bearer one,Bearer one,Bearer two,Bearer two" {
		t.Fatalf("tokens sent: %v", auth)
	}
	// A token file that cannot be read, with no token to fall back on: refused at New.
	if _, err := New(&Config{Server: cfg.Server, TokenFile: tokFile}, ""); err == nil {
		t.Fatal("New with an unreadable token file and no token: no error")
	}
}

func TestClientBasicAuth(t *testing.T) {
	_, cfg, requests := testServer(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `{}`) })
	cfg.Username, cfg.Password = "admin", "secret"
	if err := newClient(t, cfg).Get(context.Background(), "/api/v1/nodes/a", &struct{}{}); err != nil {
		t.Fatal(err)
	}
	if a := requests()[0].auth; a != "Basic YWRtaW46c2VjcmV0" {
		t.Fatalf("auth %q", a)
	}
}

// clientCert makes a self-signed client certificate and key (PEM).
func clientCert(t *testing.T, cn string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func TestClientCertificates(t *testing.T) {
	_, cfg, requests := testServer(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `{}`) })
	certPEM, keyPEM := clientCert(t, "from-data")
	data := *cfg
	data.CertData, data.KeyData = certPEM, keyPEM
	if err := newClient(t, &data).Get(context.Background(), "/api/v1/nodes/a", &struct{}{}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := *cfg
	files.CertFile, files.KeyFile = filepath.Join(dir, "c.crt"), filepath.Join(dir, "c.key")
	fileCert, fileKey := clientCert(t, "from-file")
	if err := os.WriteFile(files.CertFile, fileCert, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(files.KeyFile, fileKey, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := newClient(t, &files).Get(context.Background(), "/api/v1/nodes/a", &struct{}{}); err != nil {
		t.Fatal(err)
	}
	got := requests()
	if got[0].clientCN != "from-data" || got[1].clientCN != "from-file" || got[0].auth != "" {
		t.Fatalf("client certificates seen: %+v", got)
	}
	bad := *cfg
	bad.CertData, bad.KeyData = certPEM, fileKey
	if _, err := New(&bad, ""); err == nil {
		t.Fatal("mismatched certificate and key: no error")
	}
}

func TestExecPlugin(t *testing.T) {
	var refuse atomic.Bool
	_, cfg, requests := testServer(t, func(w http.ResponseWriter, r *http.Request) {
		if refuse.Load() {
			writeStatus(w, 401, "Unauthorized", "Unauthorized")
			return
		}
		fmt.Fprint(w, `{}`)
	})
	dir := t.TempDir()
	// The plugin counts its runs in a file and prints a token with the count; it checks
	// that it got its environment and KUBERNETES_EXEC_INFO.
	plugin := filepath.Join(dir, "plugin.sh")
	script := `#!/bin/sh
n=$(cat "$COUNT" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$COUNT"
case "$KUBERNETES_EXEC_INFO" in *'"interactive":false'*'"server":"https://'*) ;; *) echo "bad exec info: $KUBERNETES_EXEC_INFO" >&2; exit 1;; esac
[ "$1" = "--flag" ] || exit 1
echo "{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{\"token\":\"tok-$n\",\"expirationTimestamp\":\"$EXPIRES\"}}"
`
	if err := os.WriteFile(plugin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	expires := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	cfg.Exec = &ExecConfig{Command: plugin, Args: []string{"--flag"}, APIVersion: execV1, InteractiveMode: "Never", ProvideClusterInfo: true}
	cfg.Exec.Env = append(cfg.Exec.Env,
		struct {
			Name  string `json:"name"`
			Value string `json:"value"`
		}{"COUNT", filepath.Join(dir, "count")},
		struct {
			Name  string `json:"name"`
			Value string `json:"value"`
		}{"EXPIRES", expires})
	c := newClient(t, cfg)
	now := time.Now()
	c.auth.exec.now = func() time.Time { return now }
	get := func() error { return c.Get(context.Background(), "/api/v1/nodes/a", &struct{}{}) }
	for range 2 {
		if err := get(); err != nil {
			t.Fatal(err)
		}
	}
	refuse.Store(true)
	if err := get(); !IsUnauthorized(err) {
		t.Fatalf("refused: %v", err)
	}
	refuse.Store(false)
	if err := get(); err != nil { // run again after the 401
		t.Fatal(err)
	}
	now = now.Add(2 * time.Hour)
	if err := get(); err != nil { // expired: run again
		t.Fatal(err)
	}
	var auth []string
	for _, s := range requests() {
		auth = append(auth, s.auth)
	}
	if strings.Join(auth, ",") != "Bearer tok-1,Bearer tok-1,Bearer tok-1,Bearer tok-2,Bearer tok-3" {
		t.Fatalf("tokens sent: %v", auth)
	}

	// A failing plugin fails the request, saying which plugin.
	cfg.Exec = &ExecConfig{Command: filepath.Join(dir, "missing"), APIVersion: execV1beta1, InstallHint: "install it"}
	if err := newClient(t, cfg).Get(context.Background(), "/x", &struct{}{}); err == nil || !strings.Contains(err.Error(), "exec plugin") {
		t.Fatalf("missing plugin: %v", err)
	}
}

func TestParseExecCredential(t *testing.T) {
	certPEM, keyPEM := clientCert(t, "exec")
	pemJSON := func(b []byte) string { s, _ := json.Marshal(string(b)); return string(s) }
	tests := []struct {
		name, out, err string
		token          string
		cert, expires  bool
	}{
		{"token", `{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"t"}}`, "", "t", false, false},
		{"expiring", `{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"t","expirationTimestamp":"2030-01-01T00:00:00Z"}}`, "", "t", false, true},
		{"certificate", `{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"clientCertificateData":` + pemJSON(certPEM) + `,"clientKeyData":` + pemJSON(keyPEM) + `}}`, "", "", true, false},
		{"wrong version", `{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","status":{"token":"t"}}`, "apiVersion", "", false, false},
		{"wrong kind", `{"apiVersion":"client.authentication.k8s.io/v1","kind":"Status"}`, "not an ExecCredential", "", false, false},
		{"no status", `{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential"}`, "without status", "", false, false},
		{"empty status", `{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{}}`, "neither", "", false, false},
		{"key only", `{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"clientKeyData":"k"}}`, "both", "", false, false},
		{"bad certificate", `{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"clientCertificateData":"c","clientKeyData":"k"}}`, "client certificate", "", false, false},
		{"not json", `token`, "decode", "", false, false},
	}
	for _, tt := range tests {
		c, err := parseExecCredential([]byte(tt.out), execV1)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: err %v, want %q", tt.name, err, tt.err)
			}
			continue
		}
		if err != nil || c.token != tt.token || (c.cert != nil) != tt.cert || c.expires.IsZero() == tt.expires {
			t.Errorf("%s: %+v %v", tt.name, c, err)
		}
	}
}

func FuzzParseExecCredential(f *testing.F) {
	f.Add([]byte(`{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"t","expirationTimestamp":"2030-01-01T00:00:00Z"}}`))
	f.Add([]byte(`{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"clientCertificateData":"x","clientKeyData":"y"}}`))
	f.Fuzz(func(t *testing.T, out []byte) {
		c, err := parseExecCredential(out, execV1)
		if err != nil {
			return
		}
		if c.token == "" && c.cert == nil {
			t.Fatal("a credential with neither a token nor a certificate")
		}
	})
}

func TestStatusError(t *testing.T) {
	tests := []struct {
		code                          int
		body, msg                     string
		forbidden, unauthorized, gone bool
	}{
		{403, `{"kind":"Status","status":"Failure","message":"nodes is forbidden","reason":"Forbidden","code":403}`, "nodes is forbidden", true, false, false},
		{401, `{"kind":"Status","status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}`, "Unauthorized", false, true, false},
		{410, `{"kind":"Status","message":"too old resource version","reason":"Expired","code":410}`, "too old resource version", false, false, true},
		{500, `{"kind":"Status","message":"gone away","reason":"Gone"}`, "gone away", false, false, true},
		{403, `<html>nope</html>`, "the server responded with status 403 Forbidden: <html>nope</html>", true, false, false},
		{502, ``, "the server responded with status 502 Bad Gateway", false, false, false},
		{401, `{"kind":"Node"}`, `the server responded with status 401 Unauthorized: {"kind":"Node"}`, false, true, false},
	}
	for _, tt := range tests {
		err := error(statusError(tt.code, []byte(tt.body)))
		wrapped := fmt.Errorf("failed to get node: %w", err)
		if err.Error() != tt.msg || IsForbidden(wrapped) != tt.forbidden || IsUnauthorized(wrapped) != tt.unauthorized || IsGone(wrapped) != tt.gone {
			t.Errorf("%d %s: %q forbidden=%v unauthorized=%v gone=%v", tt.code, tt.body, err, IsForbidden(wrapped), IsUnauthorized(wrapped), IsGone(wrapped))
		}
	}
	if IsForbidden(errors.New("403")) || IsGone(nil) {
		t.Error("not a StatusError")
	}
}

// As client-go: a static credential wins over an exec plugin, which never runs (here it
// would fail: its command does not exist).
func TestStaticCredentialsWinOverExec(t *testing.T) {
	_, cfg, requests := testServer(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `{}`) })
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "token")
	certFile, keyFile := filepath.Join(dir, "c.crt"), filepath.Join(dir, "c.key")
	certPEM, keyPEM := clientCert(t, "static")
	for f, b := range map[string][]byte{tokFile: []byte("from-file"), certFile: certPEM, keyFile: keyPEM} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	exec := &ExecConfig{Command: filepath.Join(dir, "missing"), APIVersion: execV1, InteractiveMode: "Never"}
	tests := []struct {
		name       string
		set        func(c *Config)
		auth, cert string
	}{
		{"token", func(c *Config) { c.BearerToken = "static" }, "Bearer static", ""},
		{"token file", func(c *Config) { c.TokenFile = tokFile }, "Bearer from-file", ""},
		{"basic", func(c *Config) { c.Username, c.Password = "u", "p" }, "Basic dTpw", ""},
		{"certificate data", func(c *Config) { c.CertData, c.KeyData = certPEM, keyPEM }, "", "static"},
		{"certificate files", func(c *Config) { c.CertFile, c.KeyFile = certFile, keyFile }, "", "static"},
	}
	for _, tt := range tests {
		c := *cfg
		c.Exec = exec
		tt.set(&c)
		if err := newClient(t, &c).Get(context.Background(), "/api/v1/nodes/a", &struct{}{}); err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		r := requests()
		if got := r[len(r)-1]; got.auth != tt.auth || got.clientCN != tt.cert {
			t.Errorf("%s: auth %q, certificate %q; want %q, %q", tt.name, got.auth, got.clientCN, tt.auth, tt.cert)
		}
	}
	// Alone, the plugin runs (and fails).
	c := *cfg
	c.Exec = exec
	if err := newClient(t, &c).Get(context.Background(), "/api/v1/nodes/a", &struct{}{}); err == nil || !strings.Contains(err.Error(), "exec plugin") {
		t.Fatalf("exec alone: %v", err)
	}
}
