// Package kubeproc runs a real kube-apiserver for tests and the lab, on a real etcd,
// optionally in a netns, with generated certificates, an admin token and a client CA.
package kubeproc

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Version is the kube-apiserver release tools/kube-apiserver builds.
const Version = "v1.37.2"

// Binary returns $FLANNEL_TEST_KUBE_APISERVER, else the binary tools/kube-apiserver caches.
func Binary() (string, error) {
	if b := os.Getenv("FLANNEL_TEST_KUBE_APISERVER"); b != "" {
		if _, err := os.Stat(b); err != nil {
			return "", fmt.Errorf("FLANNEL_TEST_KUBE_APISERVER: %w", err)
		}
		return b, nil
	}
	cache := os.Getenv("FLANNEL_GO_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("kube-apiserver binary: no home directory: %w", err)
		}
		cache = filepath.Join(home, ".cache", "flannel-go")
	}
	b := filepath.Join(cache, "kube-apiserver-"+Version)
	if _, err := os.Stat(b); err != nil {
		return "", fmt.Errorf("kube-apiserver %s not built (run `make kube-apiserver`, or set FLANNEL_TEST_KUBE_APISERVER): %w", Version, err)
	}
	return b, nil
}

// Options describe one kube-apiserver.
type Options struct {
	Dir         string     // required: keys, certificates, token file, log
	EtcdServers string     // required: comma-separated etcd URLs
	Address     netip.Addr // to bind and advertise (default 127.0.0.1)
	Port        int        // required: the secure port
	Netns       string
	// Dial reaches the server; required with Netns.
	Dial              func(ctx context.Context, network, addr string) (net.Conn, error)
	AuthorizationMode string // default "Node,RBAC"
	ExtraArgs         []string
	ReadyTimeout      time.Duration // default 90s
}

// Proc is a running (or stopped) kube-apiserver.
type Proc struct {
	opts       Options
	token      string
	caPEM      []byte
	caFile     string
	clientCA   *x509.Certificate // signs the client certificates the server accepts
	clientKey  *ecdsa.PrivateKey
	logFile    string
	argv       []string // the server's command line
	mu         sync.Mutex
	cmd        *exec.Cmd
	done       chan struct{}
	httpClient *http.Client
}

// Start generates the credentials, launches the server and waits for /readyz.
func Start(ctx context.Context, opts Options) (*Proc, error) {
	if opts.Dir == "" || opts.EtcdServers == "" || opts.Port == 0 {
		return nil, errors.New("kubeproc: Dir, EtcdServers and Port are required")
	}
	if opts.Netns != "" && opts.Dial == nil {
		return nil, errors.New("kubeproc: Dial is required with Netns")
	}
	if !opts.Address.IsValid() {
		opts.Address = netip.MustParseAddr("127.0.0.1")
	}
	if opts.AuthorizationMode == "" {
		opts.AuthorizationMode = "Node,RBAC"
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 90 * time.Second
	}
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("kubeproc: %w", err)
	}
	p := &Proc{opts: opts, logFile: filepath.Join(opts.Dir, "kube-apiserver.log")}
	args, err := p.prepare()
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.caPEM)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	if opts.Dial != nil {
		tr.DialContext = opts.Dial
	}
	p.httpClient = &http.Client{Transport: tr, Timeout: 5 * time.Second}

	name := bin
	if opts.Netns != "" {
		args = append([]string{"netns", "exec", opts.Netns, bin}, args...)
		name = "ip"
	}
	p.argv = append([]string{name}, args...)
	if err := p.launch(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Proc) launch(ctx context.Context) error {
	logf, err := os.OpenFile(p.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("kubeproc: open log: %w", err)
	}
	cmd := exec.Command(p.argv[0], p.argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("kubeproc: start %s: %w", p.argv[0], err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	if err := p.waitReady(ctx, done); err != nil {
		p.Stop()
		return err
	}
	return nil
}

// Restart (re)starts the server with the same credentials, address and etcd and waits
// until ready; issued tokens and certificates keep working.
func (p *Proc) Restart(ctx context.Context) error {
	p.Stop()
	return p.launch(ctx)
}

func (p *Proc) prepare() ([]string, error) {
	dir := p.opts.Dir
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("kubeproc: service-account key: %w", err)
	}
	saFile := filepath.Join(dir, "sa.key")
	if err := writePEM(saFile, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(saKey)); err != nil {
		return nil, err
	}
	caPEM, certPEM, keyPEM, err := servingCert(p.opts.Address)
	if err != nil {
		return nil, err
	}
	p.caPEM = caPEM
	p.caFile = filepath.Join(dir, "ca.crt")
	certFile, keyFile := filepath.Join(dir, "serving.crt"), filepath.Join(dir, "serving.key")
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{{p.caFile, caPEM, 0o644}, {certFile, certPEM, 0o644}, {keyFile, keyPEM, 0o600}} {
		if err := os.WriteFile(f.path, f.data, f.mode); err != nil {
			return nil, fmt.Errorf("kubeproc: %w", err)
		}
	}
	tok := make([]byte, 16)
	if _, err := io.ReadFull(rand.Reader, tok); err != nil {
		return nil, fmt.Errorf("kubeproc: token: %w", err)
	}
	p.token = hex.EncodeToString(tok)
	tokenFile := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokenFile, []byte(p.token+`,kubeproc-admin,kubeproc-admin,"system:masters"`+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("kubeproc: %w", err)
	}
	p.clientCA, p.clientKey, err = newCA("kubeproc client CA")
	if err != nil {
		return nil, err
	}
	clientCAFile := filepath.Join(dir, "client-ca.crt")
	if err := writePEM(clientCAFile, "CERTIFICATE", p.clientCA.Raw); err != nil {
		return nil, err
	}
	addr := p.opts.Address.String()
	args := []string{
		"--client-ca-file=" + clientCAFile,
		"--etcd-servers=" + p.opts.EtcdServers,
		"--bind-address=" + addr,
		"--advertise-address=" + addr,
		"--secure-port=" + strconv.Itoa(p.opts.Port),
		"--cert-dir=" + filepath.Join(dir, "certs"),
		"--tls-cert-file=" + certFile,
		"--tls-private-key-file=" + keyFile,
		"--endpoint-reconciler-type=none",
		"--service-cluster-ip-range=10.96.0.0/16",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + saFile,
		"--service-account-signing-key-file=" + saFile,
		"--token-auth-file=" + tokenFile,
		"--authorization-mode=" + p.opts.AuthorizationMode,
		"--allow-privileged=true",
		"--profiling=false",
		"--enable-priority-and-fairness=false",
	}
	return append(args, p.opts.ExtraArgs...), nil
}

func writePEM(path, typ string, der []byte) error {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		return fmt.Errorf("kubeproc: %w", err)
	}
	return nil
}

// servingCert makes a CA and a certificate for addr, localhost and the service names.
func servingCert(addr netip.Addr) (caPEM, certPEM, keyPEM []byte, err error) {
	caCert, caKey, err := newCA("kubeproc test CA")
	if err != nil {
		return nil, nil, nil, err
	}
	now := time.Now()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("kubeproc: serving key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		IPAddresses:  []net.IP{net.IP(addr.AsSlice()), net.IPv4(127, 0, 0, 1), net.IPv4(10, 96, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("kubeproc: serving certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("kubeproc: serving key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caCert.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}

func newCA(name string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("kubeproc: %s key: %w", name, err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("kubeproc: %s certificate: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("kubeproc: %s certificate: %w", name, err)
	}
	return cert, key, nil
}

// ClientCert issues a day's PEM client certificate and key for user in groups.
func (p *Proc) ClientCert(user string, groups ...string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("kubeproc: client key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, nil, fmt.Errorf("kubeproc: serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: user, Organization: groups},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.clientCA, &key.PublicKey, p.clientKey)
	if err != nil {
		return nil, nil, fmt.Errorf("kubeproc: client certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("kubeproc: client key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}

func (p *Proc) waitReady(ctx context.Context, done <-chan struct{}) error {
	deadline := time.Now().Add(p.opts.ReadyTimeout)
	var last string
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("kubeproc: kube-apiserver exited during start-up (see %s)", p.logFile)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL()+"/readyz", nil)
		if err != nil {
			return fmt.Errorf("kubeproc: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+p.token)
		resp, err := p.httpClient.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, body)
		} else {
			last = err.Error()
		}
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("kubeproc: kube-apiserver not ready on %s after %v (last: %s; see %s)", p.URL(), p.opts.ReadyTimeout, last, p.logFile)
}

// URL is the server's base URL.
func (p *Proc) URL() string {
	return "https://" + net.JoinHostPort(p.opts.Address.String(), strconv.Itoa(p.opts.Port))
}

// AdminToken is the static bearer token of a system:masters user (test harness only).
func (p *Proc) AdminToken() string { return p.token }

// CAFile is the PEM file of the CA that signed the serving certificate.
func (p *Proc) CAFile() string { return p.caFile }

// CAPEM is the CA certificate, PEM encoded.
func (p *Proc) CAPEM() []byte { return p.caPEM }

// LogFile is the server's log.
func (p *Proc) LogFile() string { return p.logFile }

// PID is the server's process id (0 when stopped).
func (p *Proc) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// RESTConfig is a client config with token ("": the admin token), dialling via Options.Dial.
func (p *Proc) RESTConfig(token string) *rest.Config {
	if token == "" {
		token = p.token
	}
	cfg := &rest.Config{
		Host:            p.URL(),
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: p.caPEM},
		QPS:             200,
		Burst:           400,
	}
	if p.opts.Dial != nil {
		cfg.Dial = p.opts.Dial
	}
	return cfg
}

// WriteKubeconfig writes a kubeconfig trusting the server's CA, with token ("": admin).
func (p *Proc) WriteKubeconfig(path, token string) error {
	if token == "" {
		token = p.token
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["lab"] = &clientcmdapi.Cluster{Server: p.URL(), CertificateAuthorityData: p.caPEM}
	cfg.AuthInfos["user"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["lab"] = &clientcmdapi.Context{Cluster: "lab", AuthInfo: "user"}
	cfg.CurrentContext = "lab"
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return fmt.Errorf("kubeproc: kubeconfig: %w", err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("kubeproc: kubeconfig: %w", err)
	}
	return nil
}

// Stop sends SIGTERM, SIGKILL after 20 s; stop it before its etcd, without which it hangs.
func (p *Proc) Stop() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}
