package kubeapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

// Config says where the API server is and how to authenticate to it. Tests fill it
// directly; flanneld builds it with Load.
type Config struct {
	// Server is the API server's base URL (https://host:port, optionally with a path
	// prefix that a front proxy strips), or a bare host:port (https when any TLS setting
	// is given, else http, as client-go does).
	Server string
	// CAData is the PEM bundle the server's certificate must chain to; empty means the
	// system's roots.
	CAData []byte
	// TLSServerName is the name the server's certificate is checked against, when it is
	// not the host of Server.
	TLSServerName string
	// Insecure skips the verification of the server's certificate (not with CAData).
	Insecure bool
	// CertData and KeyData are the PEM client certificate and key.
	CertData, KeyData []byte
	// CertFile and KeyFile, when set, hold the client certificate and key instead; they
	// are checked for a change every minute and after a 401 (certificates rotated on
	// disk), and a new certificate closes the open connections.
	CertFile, KeyFile string
	// BearerToken is sent as "Authorization: Bearer".
	BearerToken string
	// TokenFile, when set, holds the bearer token; it is read again every minute (bound
	// service-account tokens rotate). BearerToken is used while it cannot be read.
	TokenFile string
	// Username and Password are sent as basic authentication (not with a token).
	Username, Password string
	// Exec is a credential plugin run for a token or client certificate.
	Exec *ExecConfig
	// ProxyURL is an http(s) proxy for every request; empty means the proxy of the
	// environment (HTTPS_PROXY, NO_PROXY).
	ProxyURL string
	// Dial, when set, makes the connections (tests reaching a server inside a network
	// namespace).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// The files of the pod's service account (in-cluster configuration).
const (
	serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"
	inClusterToken    = serviceAccountDir + "/token"
	inClusterCA       = serviceAccountDir + "/ca.crt"
)

// ErrNotInCluster is returned by InCluster outside a pod.
var ErrNotInCluster = errors.New("unable to load in-cluster configuration, KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be defined")

// Load builds the configuration from flanneld's flags as client-go's
// BuildConfigFromFlags does: both empty means the in-cluster configuration; a kubeconfig
// file is read with its current context, and apiURL (when set) replaces its server; apiURL
// alone is that server with no credentials.
func Load(apiURL, kubeconfigPath string) (*Config, error) {
	if apiURL == "" && kubeconfigPath == "" {
		cfg, err := InCluster()
		if err != nil {
			return nil, fmt.Errorf("neither --kube-api-url nor --kubeconfig-file is set and the in-cluster configuration failed: %w", err)
		}
		return cfg, nil
	}
	if kubeconfigPath == "" {
		return &Config{Server: apiURL}, nil
	}
	data, err := os.ReadFile(kubeconfigPath)
	if err != nil {
		return nil, fmt.Errorf("read kubeconfig: %w", err)
	}
	dir, err := filepath.Abs(filepath.Dir(kubeconfigPath))
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfigPath, err)
	}
	cfg, err := ParseKubeconfig(data, dir, apiURL)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfigPath, err)
	}
	return cfg, nil
}

// InCluster is the configuration of a pod: the kubernetes service from
// KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT, the service account's token
// (re-read every minute) and CA certificate.
func InCluster() (*Config, error) {
	return inCluster(os.Getenv, inClusterToken, inClusterCA)
}

func inCluster(getenv func(string) string, tokenFile, caFile string) (*Config, error) {
	host, port := getenv("KUBERNETES_SERVICE_HOST"), getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, ErrNotInCluster
	}
	token, err := os.ReadFile(tokenFile)
	if err != nil {
		return nil, err
	}
	cfg := &Config{
		Server:      "https://" + net.JoinHostPort(host, port),
		BearerToken: strings.TrimSpace(string(token)),
		TokenFile:   tokenFile,
	}
	// Like client-go, a missing CA file is not fatal (the system roots are used).
	if ca, err := os.ReadFile(caFile); err == nil {
		cfg.CAData = ca
	}
	return cfg, nil
}

// kubeconfig is the part of a kubeconfig file (clientcmd/api/v1) flanneld reads.
type kubeconfig struct {
	CurrentContext string `json:"current-context"`
	Clusters       []struct {
		Name    string    `json:"name"`
		Cluster kcCluster `json:"cluster"`
	} `json:"clusters"`
	Contexts []struct {
		Name    string    `json:"name"`
		Context kcContext `json:"context"`
	} `json:"contexts"`
	Users []struct {
		Name string `json:"name"`
		User kcUser `json:"user"`
	} `json:"users"`
}

type kcCluster struct {
	Server                   string `json:"server"`
	TLSServerName            string `json:"tls-server-name"`
	InsecureSkipTLSVerify    bool   `json:"insecure-skip-tls-verify"`
	CertificateAuthority     string `json:"certificate-authority"`
	CertificateAuthorityData []byte `json:"certificate-authority-data"`
	ProxyURL                 string `json:"proxy-url"`
}

type kcContext struct {
	Cluster string `json:"cluster"`
	User    string `json:"user"`
}

type kcUser struct {
	ClientCertificate     string                 `json:"client-certificate"`
	ClientCertificateData []byte                 `json:"client-certificate-data"`
	ClientKey             string                 `json:"client-key"`
	ClientKeyData         []byte                 `json:"client-key-data"`
	Token                 string                 `json:"token"`
	TokenFile             string                 `json:"tokenFile"`
	Username              string                 `json:"username"`
	Password              string                 `json:"password"`
	Impersonate           string                 `json:"as"`
	ImpersonateUID        string                 `json:"as-uid"`
	ImpersonateGroups     []string               `json:"as-groups"`
	AuthProvider          *struct{ Name string } `json:"auth-provider"`
	Exec                  *ExecConfig            `json:"exec"`
}

// ParseKubeconfig reads a kubeconfig (YAML or JSON) and returns the configuration of its
// current context. Relative file paths are resolved against dir (the kubeconfig's
// directory), and the files are read (a token file is read again later). serverOverride,
// when set, replaces the cluster's server (and, as in clientcmd, its tls-server-name).
func ParseKubeconfig(data []byte, dir, serverOverride string) (*Config, error) {
	var kc kubeconfig
	if err := yaml.Unmarshal(data, &kc); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	var (
		ctx     kcContext
		cluster kcCluster
		user    kcUser
		errs    []error
	)
	if kc.CurrentContext != "" {
		found := false
		for _, c := range kc.Contexts {
			if c.Name == kc.CurrentContext {
				ctx, found = c.Context, true
			}
		}
		if !found {
			errs = append(errs, fmt.Errorf("context was not found for specified context: %s", kc.CurrentContext))
		}
	}
	if ctx.Cluster != "" {
		found := false
		for _, c := range kc.Clusters {
			if c.Name == ctx.Cluster {
				cluster, found = c.Cluster, true
			}
		}
		if !found {
			errs = append(errs, fmt.Errorf("cluster %q not found", ctx.Cluster))
		}
	}
	if ctx.User != "" {
		found := false
		for _, u := range kc.Users {
			if u.Name == ctx.User {
				user, found = u.User, true
			}
		}
		if !found {
			errs = append(errs, fmt.Errorf("user %q not found", ctx.User))
		}
	}
	if serverOverride != "" {
		cluster.Server, cluster.TLSServerName = serverOverride, ""
	}
	if cluster.Server == "" && len(errs) == 0 {
		if kc.CurrentContext == "" {
			return nil, errors.New("invalid configuration: no current-context and no server")
		}
		errs = append(errs, fmt.Errorf("no server found for cluster %q", ctx.Cluster))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("invalid configuration: %w", errors.Join(errs...))
	}

	resolve := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	cfg := &Config{
		Server:        cluster.Server,
		TLSServerName: cluster.TLSServerName,
		Insecure:      cluster.InsecureSkipTLSVerify,
		ProxyURL:      cluster.ProxyURL,
		CAData:        cluster.CertificateAuthorityData,
		CertData:      user.ClientCertificateData,
		KeyData:       user.ClientKeyData,
		BearerToken:   user.Token,
		Username:      user.Username,
		Password:      user.Password,
	}
	switch {
	case len(cluster.CertificateAuthorityData) > 0 && cluster.CertificateAuthority != "":
		return nil, errors.New("invalid configuration: certificate-authority-data and certificate-authority are both specified")
	case cluster.CertificateAuthority != "":
		ca, err := os.ReadFile(resolve(cluster.CertificateAuthority))
		if err != nil {
			return nil, fmt.Errorf("certificate-authority: %w", err)
		}
		cfg.CAData = ca
	}
	switch {
	case len(user.ClientCertificateData) > 0 && user.ClientCertificate != "":
		return nil, errors.New("invalid configuration: client-certificate-data and client-certificate are both specified")
	case len(user.ClientKeyData) > 0 && user.ClientKey != "":
		return nil, errors.New("invalid configuration: client-key-data and client-key are both specified")
	}
	cfg.CertFile, cfg.KeyFile = resolve(user.ClientCertificate), resolve(user.ClientKey)
	if user.TokenFile != "" {
		cfg.TokenFile = resolve(user.TokenFile)
		if cfg.BearerToken == "" {
			// As clientcmd: an unreadable token file is an error when it is the only token.
			tok, err := os.ReadFile(cfg.TokenFile)
			if err != nil {
				return nil, fmt.Errorf("tokenFile: %w", err)
			}
			cfg.BearerToken = strings.TrimSpace(string(tok))
		}
	}
	switch {
	case user.AuthProvider != nil:
		return nil, fmt.Errorf("user %q: auth-provider %q is not supported (client-go no longer ships the gcp and azure providers either): use an exec credential plugin or a token", ctx.User, user.AuthProvider.Name)
	case user.Impersonate != "" || user.ImpersonateUID != "" || len(user.ImpersonateGroups) > 0:
		return nil, fmt.Errorf("user %q: impersonation (as, as-uid, as-groups) is not supported", ctx.User)
	}
	if user.Exec != nil {
		e := *user.Exec
		if strings.ContainsRune(e.Command, filepath.Separator) {
			e.Command = resolve(e.Command)
		}
		cfg.Exec = &e
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Validate reports settings that cannot be used together or are incomplete.
func (c *Config) Validate() error {
	var errs []error
	if c.Server == "" {
		errs = append(errs, errors.New("no server"))
	} else if _, err := c.serverURL(); err != nil {
		errs = append(errs, err)
	}
	if c.Insecure && len(c.CAData) > 0 {
		errs = append(errs, errors.New("specifying a root certificates file with the insecure flag is not allowed"))
	}
	hasCert := len(c.CertData) > 0 || c.CertFile != ""
	hasKey := len(c.KeyData) > 0 || c.KeyFile != ""
	if hasCert != hasKey {
		errs = append(errs, errors.New("a client certificate needs its key and a key its certificate"))
	}
	if (c.BearerToken != "" || c.TokenFile != "") && (c.Username != "" || c.Password != "") {
		errs = append(errs, errors.New("username/password or bearer token may be set, but not both"))
	}
	if c.ProxyURL != "" {
		u, err := url.Parse(c.ProxyURL)
		var uerr *url.Error
		switch {
		case errors.As(err, &uerr):
			// Not err itself: it quotes the URL, password and all.
			errs = append(errs, fmt.Errorf("proxy-url %q: %w", redactedURL(c.ProxyURL), uerr.Err))
		case err != nil:
			errs = append(errs, fmt.Errorf("proxy-url %q: invalid URL", redactedURL(c.ProxyURL)))
		case u.Scheme != "http" && u.Scheme != "https":
			errs = append(errs, fmt.Errorf("proxy-url %q: only http and https proxies are supported", u.Redacted()))
		}
	}
	if c.Exec != nil {
		if err := c.Exec.validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid configuration: %w", errors.Join(errs...))
	}
	return nil
}

// serverURL is Server as a URL: a bare host:port gets https when a TLS setting is given,
// else http (client-go's rule).
func (c *Config) serverURL() (*url.URL, error) {
	u, err := url.Parse(c.Server)
	if err != nil || u.Scheme == "" || u.Host == "" {
		scheme := "http://"
		if len(c.CAData) > 0 || len(c.CertData) > 0 || c.CertFile != "" || c.Insecure {
			scheme = "https://"
		}
		u, err = url.Parse(scheme + c.Server)
		if err != nil || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return nil, fmt.Errorf("server must be a URL or a host:port pair: %q", redactedURL(c.Server))
		}
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("server %q: scheme must be http or https", u.Redacted())
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawQuery, u.Fragment = "", ""
	return u, nil
}

// redactedURL is raw as an error may quote it: the password of a URL replaced by
// (*url.URL).Redacted; of a string that is not a URL with a host, all before the last
// "@" (it may be user:password).
func redactedURL(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.Host != "" {
		return u.Redacted()
	}
	if i := strings.LastIndex(raw, "@"); i >= 0 {
		return "xxxxx@" + raw[i+1:]
	}
	return raw
}
