package kubeapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"time"
)

// ExecConfig is a kubeconfig user's exec credential plugin (users[].user.exec): a command
// that prints an ExecCredential with a token or a client certificate.
type ExecConfig struct {
	Command string   `json:"command"`
	Args    []string `json:"args"`
	Env     []struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	} `json:"env"`
	// APIVersion is client.authentication.k8s.io/v1 or v1beta1.
	APIVersion  string `json:"apiVersion"`
	InstallHint string `json:"installHint"`
	// ProvideClusterInfo passes the cluster (server, CA) to the plugin in
	// KUBERNETES_EXEC_INFO.
	ProvideClusterInfo bool `json:"provideClusterInfo"`
	// InteractiveMode is Never, IfAvailable or Always; flanneld has no terminal, so
	// Always is refused and the plugin is always told it is not interactive.
	InteractiveMode string `json:"interactiveMode"`
}

const (
	execV1      = "client.authentication.k8s.io/v1"
	execV1beta1 = "client.authentication.k8s.io/v1beta1"
	// execTimeout bounds one run of the plugin.
	execTimeout = time.Minute
)

func (e *ExecConfig) validate() error {
	switch {
	case e.Command == "":
		return errors.New("exec: command is empty")
	case e.APIVersion != execV1 && e.APIVersion != execV1beta1:
		return fmt.Errorf("exec: apiVersion %q is not supported (%s or %s)", e.APIVersion, execV1, execV1beta1)
	case e.APIVersion == execV1 && e.InteractiveMode == "":
		return errors.New("exec: interactiveMode must be specified for " + execV1)
	case e.InteractiveMode == "Always":
		return errors.New("exec: interactiveMode Always needs a terminal, which flanneld does not have")
	case e.InteractiveMode != "" && e.InteractiveMode != "Never" && e.InteractiveMode != "IfAvailable":
		return fmt.Errorf("exec: invalid interactiveMode %q", e.InteractiveMode)
	}
	return nil
}

// execCredential is the plugin's input (spec) and output (status).
type execCredential struct {
	Kind       string `json:"kind"`
	APIVersion string `json:"apiVersion"`
	Spec       struct {
		Interactive bool         `json:"interactive"`
		Cluster     *execCluster `json:"cluster,omitempty"`
	} `json:"spec"`
	Status *struct {
		Token                 string     `json:"token"`
		ClientCertificateData string     `json:"clientCertificateData"`
		ClientKeyData         string     `json:"clientKeyData"`
		ExpirationTimestamp   *time.Time `json:"expirationTimestamp"`
	} `json:"status,omitempty"`
}

type execCluster struct {
	Server                   string `json:"server"`
	TLSServerName            string `json:"tls-server-name,omitempty"`
	InsecureSkipTLSVerify    bool   `json:"insecure-skip-tls-verify,omitempty"`
	CertificateAuthorityData []byte `json:"certificate-authority-data,omitempty"`
	ProxyURL                 string `json:"proxy-url,omitempty"`
}

// credential is what a run of the plugin gave.
type credential struct {
	token   string
	cert    *tls.Certificate
	expires time.Time // zero: until the server refuses it
}

// execPlugin runs the plugin when there is no valid credential, one run at a time.
type execPlugin struct {
	cfg       ExecConfig
	info      []byte // KUBERNETES_EXEC_INFO
	now       func() time.Time
	run       func(ctx context.Context, env []string) ([]byte, error)
	onNewCert func()

	mu    sync.Mutex
	cred  *credential
	stale bool
}

func newExecPlugin(e *ExecConfig, cfg *Config) *execPlugin {
	var in execCredential
	in.Kind, in.APIVersion = "ExecCredential", e.APIVersion
	if e.ProvideClusterInfo {
		in.Spec.Cluster = &execCluster{
			Server: cfg.Server, TLSServerName: cfg.TLSServerName, InsecureSkipTLSVerify: cfg.Insecure,
			CertificateAuthorityData: cfg.CAData, ProxyURL: cfg.ProxyURL,
		}
	}
	info, _ := json.Marshal(in) // plain strings and bytes: cannot fail
	p := &execPlugin{cfg: *e, info: info, now: time.Now}
	p.run = p.runCommand
	return p
}

func (p *execPlugin) runCommand(ctx context.Context, env []string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, execTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.cfg.Command, p.cfg.Args...)
	cmd.Env = env
	cmd.Stderr = os.Stderr
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		if errors.Is(err, exec.ErrNotFound) && p.cfg.InstallHint != "" {
			return nil, fmt.Errorf("exec plugin %s: %w\n%s", p.cfg.Command, err, p.cfg.InstallHint)
		}
		return nil, fmt.Errorf("exec plugin %s: %w", p.cfg.Command, err)
	}
	return out.Bytes(), nil
}

// invalidate makes the next request run the plugin again (the credential was refused).
func (p *execPlugin) invalidate() {
	p.mu.Lock()
	p.stale = true
	p.mu.Unlock()
}

func (p *execPlugin) get(ctx context.Context) (*credential, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c := p.cred; c != nil && !p.stale && (c.expires.IsZero() || p.now().Before(c.expires)) {
		return c, nil
	}
	env := os.Environ()
	for _, e := range p.cfg.Env {
		env = append(env, e.Name+"="+e.Value)
	}
	env = append(env, "KUBERNETES_EXEC_INFO="+string(p.info))
	out, err := p.run(ctx, env)
	if err != nil {
		return nil, err
	}
	c, err := parseExecCredential(out, p.cfg.APIVersion)
	if err != nil {
		return nil, fmt.Errorf("exec plugin %s: %w", p.cfg.Command, err)
	}
	newCert := c.cert != nil && (p.cred == nil || p.cred.cert == nil || !bytes.Equal(p.cred.cert.Certificate[0], c.cert.Certificate[0]))
	p.cred, p.stale = c, false
	if newCert && p.onNewCert != nil {
		p.onNewCert() // new connections present the new certificate
	}
	return c, nil
}

func (p *execPlugin) token(ctx context.Context) (string, error) {
	c, err := p.get(ctx)
	if err != nil {
		return "", err
	}
	return c.token, nil
}

func (p *execPlugin) certificate(ctx context.Context) (*tls.Certificate, error) {
	c, err := p.get(ctx)
	if err != nil {
		return nil, err
	}
	if c.cert == nil {
		return &tls.Certificate{}, nil // none: the handshake goes on without one
	}
	return c.cert, nil
}

// parseExecCredential reads a plugin's output: an ExecCredential of apiVersion with a
// token or a client certificate and key.
func parseExecCredential(out []byte, apiVersion string) (*credential, error) {
	var ec execCredential
	if err := json.Unmarshal(out, &ec); err != nil {
		return nil, fmt.Errorf("decode ExecCredential: %w", err)
	}
	switch {
	case ec.Kind != "ExecCredential":
		return nil, fmt.Errorf("output is a %q, not an ExecCredential", ec.Kind)
	case ec.APIVersion != apiVersion:
		return nil, fmt.Errorf("ExecCredential apiVersion %q, want %q as configured", ec.APIVersion, apiVersion)
	case ec.Status == nil:
		return nil, errors.New("ExecCredential without status")
	}
	s := ec.Status
	c := &credential{token: s.Token}
	if s.ExpirationTimestamp != nil {
		c.expires = *s.ExpirationTimestamp
	}
	switch {
	case s.ClientCertificateData != "" || s.ClientKeyData != "":
		if s.ClientCertificateData == "" || s.ClientKeyData == "" {
			return nil, errors.New("ExecCredential: clientCertificateData and clientKeyData must both be set")
		}
		cert, err := tls.X509KeyPair([]byte(s.ClientCertificateData), []byte(s.ClientKeyData))
		if err != nil {
			return nil, fmt.Errorf("ExecCredential client certificate: %w", err)
		}
		c.cert = &cert
	case s.Token == "":
		return nil, errors.New("ExecCredential: status holds neither a token nor a client certificate")
	}
	return c, nil
}
