package etcd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/pkg/redact"
)

var errHalfPair = errors.New("a client certificate and its key go together: CertFile and KeyFile must both be set or both be empty")

// cleanEndpoints returns the endpoints without user information and whether any had some.
func cleanEndpoints(eps []string) ([]string, bool) {
	out := make([]string, len(eps))
	stripped := false
	for i, ep := range eps {
		var had bool
		out[i], had = redact.StripUserinfo(ep)
		stripped = stripped || had
	}
	return out, stripped
}

func scheme(ep string) string {
	if s, _, ok := strings.Cut(ep, "://"); ok {
		return strings.ToLower(s)
	}
	if strings.HasPrefix(ep, "unixs:") {
		return "unixs"
	}
	if strings.HasPrefix(ep, "unix:") {
		return "unix"
	}
	return ""
}

// usesTLS reports whether the client uses TLS for eps: by the first's scheme, else tlsConfigured.
func usesTLS(eps []string, tlsConfigured bool) bool {
	if len(eps) == 0 {
		return false
	}
	switch scheme(eps[0]) {
	case "https", "unixs":
		return true
	case "http", "unix":
		return false
	}
	return tlsConfigured
}

// tlsConfig has the client certificate if both files are set and trusts caFile, else system roots.
func tlsConfig(certFile, keyFile, caFile string) (*tls.Config, error) {
	if (certFile == "") != (keyFile == "") {
		return nil, errHalfPair
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("loading etcd client certificate %s and key %s: %w", certFile, keyFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("reading etcd CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcd CA file %s holds no PEM certificate", caFile)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

// secure sets up m.ccfg's security from cfg and logs once what the operator should know.
func (m *Manager) secure(cfg Config, hadUserinfo bool) error {
	if hadUserinfo {
		klog.InfoS("User information in an etcd endpoint URL is ignored, as the etcd client does; give credentials as --etcd-username and --etcd-password",
			"endpoints", cfg.Endpoints)
	}
	tlsFiles := cfg.CertFile != "" || cfg.KeyFile != "" || cfg.CAFile != ""
	var tc *tls.Config
	if tlsFiles {
		var err error
		if tc, err = tlsConfig(cfg.CertFile, cfg.KeyFile, cfg.CAFile); err != nil {
			return err
		}
	}
	if schemes := distinctSchemes(cfg.Endpoints); len(schemes) > 1 {
		klog.InfoS("The etcd endpoints mix schemes: the etcd client uses the first endpoint's scheme for all of them",
			"schemes", schemes, "endpoints", cfg.Endpoints)
	}
	if !usesTLS(cfg.Endpoints, tlsFiles) {
		if tlsFiles {
			klog.InfoS("The etcd TLS files are not used: the first etcd endpoint is not https://", "endpoints", cfg.Endpoints)
		} else {
			klog.InfoS("no certificate provided: connecting to etcd with http. This is insecure")
		}
		if cfg.Username != "" && cfg.Password != "" {
			klog.InfoS("The etcd password is sent unencrypted over http://: use https:// endpoints", "endpoints", cfg.Endpoints)
		}
		return nil
	}
	if tc == nil {
		tc = &tls.Config{MinVersion: tls.VersionTLS12} // verified against the system roots
	}
	m.tls = tc
	m.ccfg.DialOptions = append(m.ccfg.DialOptions, grpc.WithTransportCredentials(&handshakeRecorder{
		TransportCredentials: credentials.NewTLS(tc), last: &m.handshake, endpoints: cfg.Endpoints, failed: m.connectFailed}))
	return nil
}

func distinctSchemes(eps []string) []string {
	var out []string
	for _, ep := range eps {
		s := scheme(ep)
		if s == "" {
			s = "none"
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// lastHandshake is the last TLS handshake failure, cleared by a successful handshake.
type lastHandshake struct {
	mu  sync.Mutex
	err error
}

func (l *lastHandshake) set(err error) {
	l.mu.Lock()
	l.err = err
	l.mu.Unlock()
}

func (l *lastHandshake) get() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// handshakeRecorder is the client's TLS credentials, remembering why the last handshake
// failed: the client's calls just hit their deadline, which names no certificate problem.
type handshakeRecorder struct {
	credentials.TransportCredentials
	last      *lastHandshake
	endpoints []string
	failed    func(endpoint string, err error) // reports a failed handshake (connectFailed)
}

func (h *handshakeRecorder) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	c, info, err := h.TransportCredentials.ClientHandshake(ctx, authority, conn)
	if err != nil {
		if ctx.Err() == nil {
			ep := h.endpoint(authority)
			h.last.set(fmt.Errorf("TLS handshake with etcd endpoint %s failed: %w", ep, err))
			h.failed(ep, err)
		}
		return c, info, err
	}
	h.last.set(nil)
	return c, info, nil
}

func (h *handshakeRecorder) Clone() credentials.TransportCredentials {
	return &handshakeRecorder{TransportCredentials: h.TransportCredentials.Clone(), last: h.last, endpoints: h.endpoints, failed: h.failed}
}

func (h *handshakeRecorder) endpoint(authority string) string {
	for _, ep := range h.endpoints {
		host := ep
		if _, rest, ok := strings.Cut(ep, "://"); ok {
			host = rest
		}
		host, _, _ = strings.Cut(host, "/")
		if host == authority {
			return ep
		}
	}
	return authority
}

func (m *Manager) withConnError(err error) error {
	if err == nil {
		return nil
	}
	if herr := m.handshake.get(); herr != nil {
		return fmt.Errorf("%w (%v)", err, herr)
	}
	return err
}
