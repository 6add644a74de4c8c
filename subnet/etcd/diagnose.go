package etcd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/flannel-go/flannel/pkg/connerr"
)

const probeTimeout = 2 * time.Second

type callError struct {
	err  error // as the etcd client returned it
	text string
}

func (e *callError) Error() string { return e.text }
func (e *callError) Unwrap() error { return e.err }

// explain names the cause of err, a failed etcd call: refused credentials or permission, the
// last TLS handshake failure, or each endpoint's problem by probing; others pass unchanged.
// The probes stop when ctx is cancelled, not when its deadline passes (the call's own).
func (m *Manager) explain(ctx context.Context, err error) error { return m.explainCall(ctx, err, nil) }

// explainCall is explain for a call to only those endpoints (nil: any): it probes just them and
// ignores the client's last handshake failure, perhaps another endpoint's.
func (m *Manager) explainCall(ctx context.Context, err error, only []string) error {
	var ce *callError
	switch {
	case err == nil || errors.As(err, &ce) || errors.Is(err, context.Canceled):
		return err
	case errors.Is(err, rpctypes.ErrAuthFailed):
		return &callError{err, err.Error() + " (etcd refused the user name or password: check --etcd-username and --etcd-password)"}
	case errors.Is(err, rpctypes.ErrUserEmpty):
		return &callError{err, err.Error() + " (etcd has authentication enabled: set --etcd-username and --etcd-password)"}
	case errors.Is(err, rpctypes.ErrInvalidAuthToken):
		return &callError{err, err.Error() + " (etcd refused the authentication token: a new one is fetched at the next attempt)"}
	case errors.Is(err, rpctypes.ErrPermissionDenied):
		return &callError{err, err.Error() + " (permission denied: the etcd user's roles must grant readwrite on the prefix " + m.cfg.Prefix + "/)"}
	case noAnswer(err):
		if herr := m.handshake.get(); herr != nil && only == nil {
			return &callError{err, fmt.Sprintf("no answer (%v): %v (%s)", err, herr, connerr.Classify(herr))}
		}
		if only == nil {
			only = m.cfg.Endpoints
		}
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), probeTimeout)
		defer cancel()
		stop := context.AfterFunc(ctx, func() {
			if errors.Is(ctx.Err(), context.Canceled) {
				cancel()
			}
		})
		defer stop()
		return &callError{err, "no answer (" + err.Error() + "): " + m.diagnose(pctx, only)}
	}
	return err
}

func noAnswer(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, clientv3.ErrNoAvailableEndpoints) {
		return true
	}
	if s, ok := status.FromError(err); ok {
		return s.Code() == codes.Unavailable || s.Code() == codes.DeadlineExceeded
	}
	return false
}

// diagnose probes eps at once and says why each cannot be used, grouped by cause.
func (m *Manager) diagnose(ctx context.Context, eps []string) string {
	results := make([]error, len(eps))
	var wg sync.WaitGroup
	for i, ep := range eps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			network, addr, tc := m.dialTarget(ep)
			results[i] = connerr.Probe(ctx, network, addr, tc)
		}()
	}
	wg.Wait()
	if errors.Is(ctx.Err(), context.Canceled) {
		return "the probes of " + strings.Join(eps, ", ") + " were interrupted"
	}
	var causes []string // in endpoint order, each once
	byCause := map[string][]string{}
	for i, err := range results {
		cause := "etcd accepted the connection but did not answer in time (is it without a leader, or overloaded?)"
		if err != nil {
			cause = err.Error()
		}
		if _, ok := byCause[cause]; !ok {
			causes = append(causes, cause)
		}
		byCause[cause] = append(byCause[cause], eps[i])
	}
	parts := make([]string, 0, len(causes))
	for _, c := range causes {
		parts = append(parts, strings.Join(byCause[c], ", ")+": "+c)
	}
	return strings.Join(parts, "; ")
}

// dialTarget is how the etcd client reaches ep: network, address and TLS config (nil: plain).
func (m *Manager) dialTarget(ep string) (network, addr string, tc *tls.Config) {
	addr = dialAddr(ep)
	network = "tcp"
	if p, ok := strings.CutPrefix(addr, "unix://"); ok {
		network, addr = "unix", p
	} else if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, addr = "unix", p
	} else if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(addr, "2379")
	}
	return network, addr, m.tls
}
