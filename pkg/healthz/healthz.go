// Package healthz serves flanneld's /healthz (the process is alive) and /readyz (the
// node is ready: every readiness check passes) endpoints.
package healthz

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// Readiness is a set of named checks. A check is failing until Set(name, nil) is called.
// It is safe for concurrent use.
type Readiness struct {
	mu     sync.Mutex
	checks map[string]error
}

var errPending = errors.New("not done yet")

// NewReadiness creates a Readiness whose named checks all start as failing.
func NewReadiness(names ...string) *Readiness {
	r := &Readiness{checks: map[string]error{}}
	for _, n := range names {
		r.checks[n] = errPending
	}
	return r
}

// Set records the outcome of a check (nil = passing).
func (r *Readiness) Set(name string, err error) {
	r.mu.Lock()
	r.checks[name] = err
	r.mu.Unlock()
}

// Failing lists the failing checks as "name: reason", sorted by name.
func (r *Readiness) Failing() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for n, err := range r.checks {
		if err != nil {
			out = append(out, n+": "+err.Error())
		}
	}
	sort.Strings(out)
	return out
}

// Handler returns the mux with /healthz and /readyz. The bodies start with upstream's
// texts ("flanneld is running", "flanneld is ready", "flanneld is not ready yet"); a
// failing /readyz adds one line per failing check.
func Handler(r *Readiness) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "flanneld is running")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		failing := r.Failing()
		if len(failing) == 0 {
			fmt.Fprint(w, "flanneld is ready")
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, "flanneld is not ready yet\n"+strings.Join(failing, "\n")+"\n")
	})
	return mux
}

// Serve listens on addr and serves h until ctx ends, then shuts down within 3 s.
// A listen error is returned at once.
func Serve(ctx context.Context, addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("healthz: listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	klog.InfoS("Start healthz server", "address", ln.Addr().String())
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "healthz server stopped")
		}
	}()
	return nil
}
