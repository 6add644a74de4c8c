package kubeapi

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// openWatch starts a watch that the test server holds open, and returns a channel that
// receives the error its body read ends with.
func openWatch(t *testing.T, c *Client) <-chan error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	body, err := c.Watch(ctx, "/api/v1/nodes", url.Values{})
	if err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() {
		defer body.Close()
		_, err := io.Copy(io.Discard, body)
		ended <- err
	}()
	return ended
}

// holdWatches answers watches by holding them open, and other requests with {} or, for
// a client certificate whose CN is in refuse, 401.
func holdWatches(refuse *atomic.Value) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("watch") == "true" {
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			return
		}
		if cn, _ := refuse.Load().(string); cn != "" && len(r.TLS.PeerCertificates) > 0 && r.TLS.PeerCertificates[0].Subject.CommonName == cn {
			writeStatus(w, http.StatusUnauthorized, "Unauthorized", "Unauthorized")
			return
		}
		fmt.Fprint(w, `{}`)
	}
}

// A rewritten certificate file is found from the request path within a minute; every
// connection (also the one a watch keeps busy) is closed and later requests present the
// new certificate. A 401 makes the client read the files again at once.
func TestClientCertFileRotation(t *testing.T) {
	var refuse atomic.Value
	_, cfg, requests := testServerAuth(t, tls.RequireAnyClientCert, holdWatches(&refuse))
	dir := t.TempDir()
	cfg.CertFile, cfg.KeyFile = filepath.Join(dir, "c.crt"), filepath.Join(dir, "c.key")
	write := func(cn string) {
		t.Helper()
		c, k := clientCert(t, cn)
		if err := os.WriteFile(cfg.CertFile, c, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cfg.KeyFile, k, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("old")
	c := newClient(t, cfg)
	var now atomic.Pointer[time.Time]
	start := time.Now()
	now.Store(&start)
	c.auth.now = func() time.Time { return *now.Load() }
	advance := func(d time.Duration) { t2 := now.Load().Add(d); now.Store(&t2) }
	get := func() error { return c.Get(context.Background(), "/api/v1/nodes/a", &struct{}{}) }
	lastCN := func() string { r := requests(); return r[len(r)-1].clientCN }

	watchEnded := openWatch(t, c)
	if err := get(); err != nil || lastCN() != "old" {
		t.Fatalf("first get: %v, CN %q", err, lastCN())
	}
	if n := c.conns.open(); n != 1 {
		t.Fatalf("%d connections open, want the one HTTP/2 connection", n)
	}
	write("new")
	if err := get(); err != nil || lastCN() != "old" {
		t.Fatalf("get within the minute: %v, CN %q (the files are not checked yet)", err, lastCN())
	}
	advance(certCheckPeriod + time.Second)
	for i := range 3 {
		if err := get(); err != nil || lastCN() != "new" {
			t.Fatalf("get %d after the check: %v, CN %q, want new", i, err, lastCN())
		}
	}
	select {
	case err := <-watchEnded:
		if err == nil {
			t.Fatal("the watch on the old connection ended cleanly; want a closed connection")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watch on the old connection is still open")
	}
	if n := c.conns.open(); n != 1 {
		t.Fatalf("%d connections tracked after the rotation, want 1 (closed ones are dropped)", n)
	}

	// The server refuses the certificate before the minute is over: the files are read
	// again at once.
	watchEnded = openWatch(t, c)
	write("third")
	refuse.Store("new")
	if err := get(); !IsUnauthorized(err) {
		t.Fatalf("refused: %v", err)
	}
	if err := get(); err != nil || lastCN() != "third" {
		t.Fatalf("get after the 401: %v, CN %q, want third", err, lastCN())
	}
	select {
	case <-watchEnded:
	case <-time.After(10 * time.Second):
		t.Fatal("the watch is still open after the 401")
	}

	// A file caught half-written keeps the last certificate in use.
	advance(certCheckPeriod + time.Second)
	if err := os.WriteFile(cfg.KeyFile, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := get(); err != nil || lastCN() != "third" {
		t.Fatalf("get with a broken key file: %v, CN %q", err, lastCN())
	}
}

// A new certificate from the exec plugin closes the busy connections too.
func TestExecCertRotation(t *testing.T) {
	var refuse atomic.Value
	_, cfg, requests := testServerAuth(t, tls.RequireAnyClientCert, holdWatches(&refuse))
	dir := t.TempDir()
	out := filepath.Join(dir, "credential.json")
	write := func(cn string) {
		t.Helper()
		c, k := clientCert(t, cn)
		b, err := json.Marshal(map[string]any{"apiVersion": execV1, "kind": "ExecCredential",
			"status": map[string]string{"clientCertificateData": string(c), "clientKeyData": string(k)}})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(out, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	plugin := filepath.Join(dir, "plugin.sh")
	if err := os.WriteFile(plugin, []byte("#!/bin/sh\ncat \"$1\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	write("old")
	cfg.Exec = &ExecConfig{Command: plugin, Args: []string{out}, APIVersion: execV1, InteractiveMode: "Never"}
	c := newClient(t, cfg)
	get := func() error { return c.Get(context.Background(), "/api/v1/nodes/a", &struct{}{}) }
	lastCN := func() string { r := requests(); return r[len(r)-1].clientCN }
	watchEnded := openWatch(t, c)
	if err := get(); err != nil || lastCN() != "old" {
		t.Fatalf("first get: %v, CN %q", err, lastCN())
	}
	write("new")
	refuse.Store("old")
	if err := get(); !IsUnauthorized(err) {
		t.Fatalf("refused: %v", err)
	}
	if err := get(); err != nil || lastCN() != "new" {
		t.Fatalf("get after the 401: %v, CN %q, want new", err, lastCN())
	}
	select {
	case <-watchEnded:
	case <-time.After(10 * time.Second):
		t.Fatal("the watch presenting the old certificate is still open")
	}
}
