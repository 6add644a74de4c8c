// Package healthz serves flanneld's /healthz (alive) and /readyz (every check passes).
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

// Readiness is a concurrency-safe set of named checks; a check passes when its recorded
// state (failing until Set(name, nil)) and its optional probe pass.
type Readiness struct {
	mu     sync.Mutex
	checks map[string]error
	probes map[string]func() error
	notes  map[string]func() string
}

var errPending = errors.New("not done yet")

// NewReadiness creates a Readiness whose checks start failing.
func NewReadiness(names ...string) *Readiness {
	r := &Readiness{checks: map[string]error{}, probes: map[string]func() error{}, notes: map[string]func() string{}}
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

// SetProbe attaches a probe, run unlocked on every query once the recorded state passes
// (alone deciding a check with none); it must be cheap and not block.
func (r *Readiness) SetProbe(name string, probe func() error) {
	r.mu.Lock()
	r.probes[name] = probe
	if _, ok := r.checks[name]; !ok {
		r.checks[name] = nil
	}
	r.mu.Unlock()
}

// SetNote attaches a note for the verbose output, run unlocked; it must not block.
func (r *Readiness) SetNote(name string, note func() string) {
	r.mu.Lock()
	r.notes[name] = note
	r.mu.Unlock()
}

// Check is one check's outcome.
type Check struct {
	Name string
	Err  error  // nil: passing
	Note string // SetNote's, if any
}

// Checks evaluates every check, sorted by name.
func (r *Readiness) Checks() []Check {
	r.mu.Lock()
	out := make([]Check, 0, len(r.checks))
	probes := make([]func() error, 0, len(r.checks))
	notes := make([]func() string, 0, len(r.checks))
	for n, err := range r.checks {
		out = append(out, Check{Name: n, Err: err})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	for _, c := range out {
		probes = append(probes, r.probes[c.Name])
		notes = append(notes, r.notes[c.Name])
	}
	r.mu.Unlock()
	for i := range out {
		if out[i].Err == nil && probes[i] != nil {
			out[i].Err = probes[i]()
		}
		if notes[i] != nil {
			out[i].Note = notes[i]()
		}
	}
	return out
}

// Handler returns the mux with /healthz, /readyz and, if metrics is set, /metrics. Bodies
// start with upstream's texts; /readyz?verbose lists every check.
func Handler(r *Readiness, metrics http.Handler) http.Handler {
	mux := http.NewServeMux()
	if metrics != nil {
		mux.Handle("/metrics", metrics)
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "flanneld is running")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, req *http.Request) {
		checks := r.Checks()
		var failing, all []string
		for _, c := range checks {
			note := ""
			if c.Note != "" {
				note = " (" + c.Note + ")"
			}
			if c.Err != nil {
				failing = append(failing, c.Name+": "+c.Err.Error())
				all = append(all, "[-]"+c.Name+": "+c.Err.Error()+note)
			} else {
				all = append(all, "[+]"+c.Name+" ok"+note)
			}
		}
		lines := failing
		if req.URL.Query().Has("verbose") {
			lines = all
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if len(failing) == 0 {
			if len(lines) == 0 {
				fmt.Fprint(w, "flanneld is ready")
				return
			}
			fmt.Fprint(w, "flanneld is ready\n"+strings.Join(lines, "\n")+"\n")
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, "flanneld is not ready yet\n"+strings.Join(lines, "\n")+"\n")
	})
	return mux
}

// Serve serves h on addr until ctx ends, then shuts down within 3 s.
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
