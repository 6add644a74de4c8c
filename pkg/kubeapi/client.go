package kubeapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// Client sends requests to one API server with one identity. It is safe for concurrent
// use.
type Client struct {
	base      *url.URL
	hc        *http.Client
	userAgent string
	auth      *authenticator
	conns     *connTracker
	// Timeout bounds Get and Patch (not Stream and Watch, which the caller's context
	// bounds).
	Timeout time.Duration
}

// DefaultTimeout is Client.Timeout as New sets it.
const DefaultTimeout = 30 * time.Second

// New builds a client for cfg. It does not contact the server; files named by cfg (a
// token file, client certificate files) are read when requests need them.
func New(cfg *Config, userAgent string) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	base, err := cfg.serverURL()
	if err != nil {
		return nil, err
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.TLSServerName, InsecureSkipVerify: cfg.Insecure} //nolint:gosec // only when the kubeconfig asks for it
	if len(cfg.CAData) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(cfg.CAData) {
			return nil, errors.New("invalid configuration: the CA data holds no PEM certificate")
		}
		tlsCfg.RootCAs = pool
	}
	a := &authenticator{
		bearer: cfg.BearerToken, tokenFile: cfg.TokenFile,
		username: cfg.Username, password: cfg.Password,
		now: time.Now,
	}
	switch {
	case len(cfg.CertData) > 0:
		cert, err := tls.X509KeyPair(cfg.CertData, cfg.KeyData)
		if err != nil {
			return nil, fmt.Errorf("invalid configuration: client certificate: %w", err)
		}
		tlsCfg.Certificates = []tls.Certificate{cert}
	case cfg.CertFile != "":
		a.certFile, a.keyFile = cfg.CertFile, cfg.KeyFile
		if err := a.loadCert(); err != nil { // fail early on a bad file; it is checked again later
			return nil, fmt.Errorf("invalid configuration: client certificate: %w", err)
		}
		tlsCfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return a.fileCert(), nil }
	}
	// As client-go: a static credential (token, token file, basic auth, client
	// certificate) wins over an exec plugin, which then never runs.
	static := cfg.BearerToken != "" || cfg.TokenFile != "" || cfg.Username != "" || cfg.Password != "" ||
		len(cfg.CertData) > 0 || cfg.CertFile != ""
	if cfg.Exec != nil && !static {
		a.exec = newExecPlugin(cfg.Exec, cfg)
		if tlsCfg.GetClientCertificate == nil && len(tlsCfg.Certificates) == 0 {
			tlsCfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				return a.exec.certificate(context.Background())
			}
		}
	}
	if a.tokenFile != "" && a.bearer == "" {
		if _, err := a.fileToken(); err != nil {
			return nil, fmt.Errorf("invalid configuration: %w", err)
		}
	}
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         dialer.DialContext,
		TLSClientConfig:     tlsCfg,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 25,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   true,
		// Dead connections (a watch on a vanished server) are found by HTTP/2 pings.
		HTTP2: &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second},
	}
	if cfg.ProxyURL != "" {
		u, _ := url.Parse(cfg.ProxyURL) // checked by Validate
		tr.Proxy = http.ProxyURL(u)
	}
	if cfg.Dial != nil {
		tr.DialContext = cfg.Dial
	}
	// A new client certificate (a rewritten file, or a new one from the exec plugin) is
	// only presented in a new handshake: every open connection is closed, also the busy
	// ones a watch keeps (as client-go's connection rotation does).
	conns := newConnTracker(tr.DialContext)
	tr.DialContext = conns.DialContext
	a.onNewCert = conns.closeAll
	if a.exec != nil {
		a.exec.onNewCert = conns.closeAll
	}
	if userAgent == "" {
		userAgent = "flannel-go"
	}
	return &Client{base: base, hc: &http.Client{Transport: tr}, userAgent: userAgent, auth: a, conns: conns, Timeout: DefaultTimeout}, nil
}

// Request is one API call.
type Request struct {
	Method string
	// Path is the API path, e.g. "/api/v1/nodes/a" (escaped by the caller where a name
	// may need it); it is appended to the server's path.
	Path        string
	Query       url.Values
	Body        []byte
	ContentType string // of Body
	Accept      string // default application/json
}

// Do sends r and returns the response of a successful (2xx) call, whose body the caller
// must close. A refusal is returned as a *StatusError; a failure to reach the server is
// a *url.Error (as net/http returns it).
func (c *Client) Do(ctx context.Context, r Request) (*http.Response, error) {
	path, err := url.PathUnescape(r.Path)
	if err != nil {
		return nil, fmt.Errorf("request path %q: %w", r.Path, err)
	}
	u := *c.base
	u.Path, u.RawPath = c.base.Path+path, c.base.EscapedPath()+r.Path
	u.RawQuery = r.Query.Encode()
	var body io.Reader
	if r.Body != nil {
		body = bytes.NewReader(r.Body)
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	accept := r.Accept
	if accept == "" {
		accept = "application/json"
	}
	req.Header.Set("Accept", accept)
	req.Header.Set("User-Agent", c.userAgent)
	if r.ContentType != "" {
		req.Header.Set("Content-Type", r.ContentType)
	}
	if err := c.auth.apply(ctx, req); err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized {
		c.auth.refused()
	}
	return nil, statusError(resp.StatusCode, data)
}

// Get reads the object at path into out (JSON), within Timeout.
func (c *Client) Get(ctx context.Context, path string, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	resp, err := c.Do(ctx, Request{Method: http.MethodGet, Path: path})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return nil
}

// Patch sends a patch of patchType (e.g. "application/strategic-merge-patch+json") to
// path, within Timeout; the object returned is discarded.
func (c *Client) Patch(ctx context.Context, path, patchType string, patch []byte) error {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	resp, err := c.Do(ctx, Request{Method: http.MethodPatch, Path: path, Body: patch, ContentType: patchType})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return err
}

// Watch starts a watch of the collection at path with the given parameters (watch=true is
// added) and returns the response body, a JSON event stream for NewWatchDecoder. It runs
// until ctx ends or the server closes it.
func (c *Client) Watch(ctx context.Context, path string, query url.Values) (io.ReadCloser, error) {
	q := url.Values{}
	for k, v := range query {
		q[k] = v
	}
	q.Set("watch", "true")
	resp, err := c.Do(ctx, Request{Method: http.MethodGet, Path: path, Query: q, Accept: "application/json"})
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// authenticator puts the credentials on each request.
type authenticator struct {
	bearer             string // static token (also the fallback while tokenFile cannot be read)
	tokenFile          string
	username, password string
	certFile, keyFile  string
	exec               *execPlugin
	now                func() time.Time
	onNewCert          func() // the certificate from certFile/keyFile changed

	mu        sync.Mutex
	fileTok   string
	tokRead   time.Time
	cert      *tls.Certificate
	certPEM   []byte // the files cert was loaded from
	keyPEM    []byte
	certCheck time.Time // when the files were last compared
}

// Token files are read again after tokenPeriod (client-go's period for bound
// service-account tokens); certificate files are checked for a change after
// certCheckPeriod (client-go's period too).
const (
	tokenPeriod     = time.Minute
	certCheckPeriod = time.Minute
)

func (a *authenticator) apply(ctx context.Context, req *http.Request) error {
	if a.certFile != "" {
		a.checkCert(false)
	}
	switch {
	case a.exec != nil:
		tok, err := a.exec.token(ctx)
		if err != nil {
			return err
		}
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
	case a.tokenFile != "":
		tok, err := a.fileToken()
		if err != nil || tok == "" {
			tok = a.bearer
		}
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
	case a.bearer != "":
		req.Header.Set("Authorization", "Bearer "+a.bearer)
	case a.username != "" || a.password != "":
		req.SetBasicAuth(a.username, a.password)
	}
	return nil
}

// refused is told about a 401: an exec credential is fetched again; certificate files
// are read again at once and every connection is closed, so that the next request
// handshakes with whatever certificate the files hold now.
func (a *authenticator) refused() {
	if a.exec != nil {
		a.exec.invalidate()
	}
	if a.certFile != "" {
		if !a.checkCert(true) && a.onNewCert != nil {
			a.onNewCert()
		}
	}
}

// fileToken returns the token file's content, read at most once per tokenPeriod; when it
// cannot be read again, the last token read.
func (a *authenticator) fileToken() (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fileTok != "" && a.now().Sub(a.tokRead) < tokenPeriod {
		return a.fileTok, nil
	}
	data, err := os.ReadFile(a.tokenFile)
	if err == nil && strings.TrimSpace(string(data)) == "" {
		err = fmt.Errorf("token file %s is empty", a.tokenFile)
	}
	if err != nil {
		if a.fileTok != "" {
			return a.fileTok, nil
		}
		return "", fmt.Errorf("read token: %w", err)
	}
	a.fileTok, a.tokRead = strings.TrimSpace(string(data)), a.now()
	return a.fileTok, nil
}

// fileCert returns the client certificate last loaded from certFile/keyFile.
func (a *authenticator) fileCert() *tls.Certificate {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cert
}

// loadCert loads the client certificate from certFile/keyFile.
func (a *authenticator) loadCert() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, err := a.readCertLocked()
	return err
}

// readCertLocked reads certFile/keyFile and, when they differ from what was loaded and
// hold a valid pair, loads them; it reports whether the certificate changed.
func (a *authenticator) readCertLocked() (bool, error) {
	a.certCheck = a.now()
	certPEM, err := os.ReadFile(a.certFile)
	if err != nil {
		return false, err
	}
	keyPEM, err := os.ReadFile(a.keyFile)
	if err != nil {
		return false, err
	}
	if a.cert != nil && bytes.Equal(certPEM, a.certPEM) && bytes.Equal(keyPEM, a.keyPEM) {
		return false, nil
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// Possibly caught between the writes of the certificate and the key: the next
		// check tries again; until then the last valid pair is used.
		return false, err
	}
	a.cert, a.certPEM, a.keyPEM = &cert, certPEM, keyPEM
	return true, nil
}

// checkCert compares certFile/keyFile with the loaded certificate, at most once per
// certCheckPeriod unless force, and when they hold a new valid certificate loads it and
// calls onNewCert (which closes the connections that present the old one). Files that
// cannot be read or parsed leave the last certificate in use. It reports whether
// onNewCert was called.
func (a *authenticator) checkCert(force bool) bool {
	a.mu.Lock()
	if !force && a.now().Sub(a.certCheck) < certCheckPeriod {
		a.mu.Unlock()
		return false
	}
	changed, err := a.readCertLocked()
	a.mu.Unlock()
	if err != nil {
		klog.ErrorS(err, "Cannot load the client certificate again; the last one stays in use", "certFile", a.certFile, "keyFile", a.keyFile)
	}
	if changed {
		klog.InfoS("Client certificate changed; closing the connections that present the old one", "certFile", a.certFile)
	}
	if changed && a.onNewCert != nil {
		a.onNewCert()
	}
	return changed
}
