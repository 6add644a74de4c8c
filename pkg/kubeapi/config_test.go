package kubeapi

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const testCA = "-----BEGIN CERTIFICATE-----\nMIIBdummy\n-----END CERTIFICATE-----\n"

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestParseKubeconfig(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"ca.crt":      testCA,
		"sub/tok":     "  file-token\n",
		"client.crt":  "CERT",
		"client.key":  "KEY",
		"/abs-unused": "",
	} {
		if name[0] == '/' {
			continue
		}
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	const head = "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- name: c\n  context: {cluster: k, user: u}\n- name: other\n  context: {cluster: x, user: x}\n"
	tests := []struct {
		name     string
		yaml     string
		override string
		check    func(*Config) string // "" when fine
		err      string
	}{
		{
			name: "token and CA data",
			yaml: head + "clusters:\n- name: k\n  cluster:\n    server: https://192.0.2.1:6443\n    certificate-authority-data: " + b64(testCA) + "\nusers:\n- name: u\n  user:\n    token: abc\n",
			check: func(c *Config) string {
				if c.Server != "https://192.0.2.1:6443" || string(c.CAData) != testCA || c.BearerToken != "abc" || c.TokenFile != "" {
					return "fields"
				}
				return ""
			},
		},
		{
			name: "relative files",
			yaml: head + "clusters:\n- name: k\n  cluster:\n    server: https://k.example:6443\n    certificate-authority: ca.crt\n    tls-server-name: kubernetes\nusers:\n- name: u\n  user:\n    client-certificate: client.crt\n    client-key: ./client.key\n    tokenFile: sub/tok\n",
			check: func(c *Config) string {
				switch {
				case string(c.CAData) != testCA:
					return "CA file not read"
				case c.CertFile != filepath.Join(dir, "client.crt") || c.KeyFile != filepath.Join(dir, "client.key"):
					return "cert paths " + c.CertFile + " " + c.KeyFile
				case c.TokenFile != filepath.Join(dir, "sub/tok") || c.BearerToken != "file-token":
					return "token file " + c.TokenFile + " " + c.BearerToken
				case c.TLSServerName != "kubernetes":
					return "tls-server-name"
				}
				return ""
			},
		},
		{
			name:     "override replaces the server and its tls-server-name",
			yaml:     head + "clusters:\n- name: k\n  cluster:\n    server: https://k.example:6443\n    tls-server-name: kubernetes\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    username: admin\n    password: secret\n",
			override: "https://192.0.2.9:443",
			check: func(c *Config) string {
				if c.Server != "https://192.0.2.9:443" || c.TLSServerName != "" || !c.Insecure || c.Username != "admin" || c.Password != "secret" {
					return "fields"
				}
				return ""
			},
		},
		{
			name: "json and exec",
			yaml: `{"current-context":"c","contexts":[{"name":"c","context":{"cluster":"k","user":"u"}}],` +
				`"clusters":[{"name":"k","cluster":{"server":"https://192.0.2.1"}}],` +
				`"users":[{"name":"u","user":{"exec":{"apiVersion":"client.authentication.k8s.io/v1beta1","command":"bin/plugin","args":["a"],"env":[{"name":"X","value":"1"}]}}}]}`,
			check: func(c *Config) string {
				if c.Exec == nil || c.Exec.Command != filepath.Join(dir, "bin/plugin") || len(c.Exec.Args) != 1 || c.Exec.Env[0].Name != "X" {
					return "exec"
				}
				return ""
			},
		},
		{
			name: "exec command on PATH stays",
			yaml: head + "clusters:\n- name: k\n  cluster: {server: 'https://192.0.2.1'}\nusers:\n- name: u\n  user:\n    exec: {apiVersion: client.authentication.k8s.io/v1, command: aws, interactiveMode: Never}\n",
			check: func(c *Config) string {
				if c.Exec.Command != "aws" {
					return "command " + c.Exec.Command
				}
				return ""
			},
		},
		{
			name:     "no current context, server override",
			yaml:     "apiVersion: v1\nkind: Config\n",
			override: "http://192.0.2.1:8080",
			check: func(c *Config) string {
				if c.Server != "http://192.0.2.1:8080" || c.BearerToken != "" {
					return "fields"
				}
				return ""
			},
		},
		{name: "empty", yaml: "", err: "no current-context and no server"},
		{name: "not yaml", yaml: "clusters: [", err: "parse"},
		{name: "missing context", yaml: "current-context: nope\n", err: "context was not found for specified context: nope"},
		{name: "missing cluster", yaml: head + "users:\n- name: u\n  user: {token: a}\n", err: `cluster "k" not found`},
		{name: "missing user", yaml: head + "clusters:\n- name: k\n  cluster: {server: 'https://192.0.2.1'}\n", err: `user "u" not found`},
		{name: "no server", yaml: head + "clusters:\n- name: k\n  cluster: {}\nusers:\n- name: u\n  user: {}\n", err: `no server found for cluster "k"`},
		{name: "missing CA file", yaml: head + "clusters:\n- name: k\n  cluster: {server: 'https://192.0.2.1', certificate-authority: nope.crt}\nusers:\n- name: u\n  user: {}\n", err: "certificate-authority"},
		{name: "CA twice", yaml: head + "clusters:\n- name: k\n  cluster: {server: 'https://192.0.2.1', certificate-authority: ca.crt, certificate-authority-data: " + b64(testCA) + "}\nusers:\n- name: u\n  user: {}\n", err: "both specified"},
		{name: "insecure with CA", yaml: head + "clusters:\n- name: k\n  cluster: {server: 'https://192.0.2.1', insecure-skip-tls-verify: true, certificate-authority-data: " + b64(testCA) + "}\nusers:\n- name: u\n  user: {}\n", err: "insecure flag is not allowed"},
		{name: "token and basic", yaml: head + "clusters:\n- name: k\n  cluster: {server: 'https://192.0.2.1'}\nusers:\n- name: u\n  user: {token: a, username: b, password: c}\n", err: "not both"},
		{name: "cert without key", yaml: head + "clusters:\n- name: k\n  cluster: {server: 'https://192.0.2.1'}\nusers:\n- name: u\n  user: {client-certificate-data: " + b64("C") + "}\n", err: "needs its key"},
		{name: "auth provider", yaml: head + "clusters:\n- name: k\n  cluster: {server: 'https://192.0.2.1'}\nusers:\n- name: u\n  user: {auth-provider: {name: oidc}}\n", err: `auth-provider "oidc" is not supported`},
		{name: "impersonation", yaml: head + "clusters:\n- name: k\n  cluster: {server: 'https://192.0.2.1'}\nusers:\n- name: u\n  user: {token: a, as: someone}\n", err: "impersonation"},
		{name: "exec without version", yaml: head + "clusters:\n- name: k\n  cluster: {server: 'https://192.0.2.1'}\nusers:\n- name: u\n  user: {exec: {command: x}}\n", err: "apiVersion"},
		{name: "exec interactive", yaml: head + "clusters:\n- name: k\n  cluster: {server: 'https://192.0.2.1'}\nusers:\n- name: u\n  user: {exec: {command: x, apiVersion: client.authentication.k8s.io/v1, interactiveMode: Always}}\n", err: "terminal"},
		{name: "socks proxy", yaml: head + "clusters:\n- name: k\n  cluster: {server: 'https://192.0.2.1', proxy-url: 'socks5://192.0.2.7:1080'}\nusers:\n- name: u\n  user: {}\n", err: "only http and https proxies"},
		{name: "missing token file", yaml: head + "clusters:\n- name: k\n  cluster: {server: 'https://192.0.2.1'}\nusers:\n- name: u\n  user: {tokenFile: nope}\n", err: "tokenFile"},
		{name: "bad server", yaml: head + "clusters:\n- name: k\n  cluster: {server: 'ftp://192.0.2.1'}\nusers:\n- name: u\n  user: {}\n", err: "scheme must be http or https"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseKubeconfig([]byte(tt.yaml), dir, tt.override)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if msg := tt.check(c); msg != "" {
				t.Fatalf("%s: %+v", msg, c)
			}
		})
	}
}

func FuzzParseKubeconfig(f *testing.F) {
	f.Add([]byte("current-context: c\ncontexts:\n- name: c\n  context: {cluster: k, user: u}\nclusters:\n- name: k\n  cluster: {server: 'https://192.0.2.1', certificate-authority-data: "+b64(testCA)+"}\nusers:\n- name: u\n  user: {token: a}\n"), "")
	f.Add([]byte(`{"current-context":"c","contexts":[{"name":"c","context":{"cluster":"k","user":"u"}}],"clusters":[{"name":"k","cluster":{"server":"192.0.2.1:6443"}}],"users":[{"name":"u","user":{"exec":{"apiVersion":"client.authentication.k8s.io/v1beta1","command":"x"}}}]}`), "")
	f.Add([]byte("kind: Config\n"), "http://192.0.2.1")
	f.Add([]byte("clusters: &a [*a]"), "")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte, override string) {
		c, err := ParseKubeconfig(data, dir, override)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("a parsed configuration does not validate: %v", err)
		}
		if _, err := New(c, ""); err != nil && !strings.Contains(err.Error(), "invalid configuration") {
			t.Fatalf("New: %v", err)
		}
	})
}

func TestInCluster(t *testing.T) {
	dir := t.TempDir()
	tok, ca := filepath.Join(dir, "token"), filepath.Join(dir, "ca.crt")
	env := map[string]string{"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
	getenv := func(k string) string { return env[k] }
	if _, err := inCluster(getenv, tok, ca); err == nil {
		t.Fatal("no error without a token file")
	}
	if err := os.WriteFile(tok, []byte("sa-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := inCluster(getenv, tok, ca)
	if err != nil {
		t.Fatal(err)
	}
	if c.Server != "https://[fd00::1]:443" || c.BearerToken != "sa-token" || c.TokenFile != tok || c.CAData != nil {
		t.Fatalf("config %+v", c)
	}
	if err := os.WriteFile(ca, []byte(testCA), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err = inCluster(getenv, tok, ca); err != nil || string(c.CAData) != testCA {
		t.Fatalf("CA not read: %v %+v", err, c)
	}
	delete(env, "KUBERNETES_SERVICE_PORT")
	if _, err := inCluster(getenv, tok, ca); !errors.Is(err, ErrNotInCluster) {
		t.Fatalf("err %v", err)
	}
}

func TestLoad(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	if _, err := Load("", ""); err == nil || !strings.Contains(err.Error(), "KUBERNETES_SERVICE_HOST") {
		t.Fatalf("both empty outside a pod: %v", err)
	}
	c, err := Load("http://192.0.2.1:8080", "")
	if err != nil || c.Server != "http://192.0.2.1:8080" || c.BearerToken != "" {
		t.Fatalf("URL only: %+v %v", c, err)
	}
	if _, err := Load("", filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("missing kubeconfig: no error")
	}
	p := filepath.Join(t.TempDir(), "kc")
	if err := os.WriteFile(p, []byte("current-context: nope\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load("", p); err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("bad kubeconfig: %v (want the path in it)", err)
	}
}

func TestServerURL(t *testing.T) {
	tests := []struct {
		c    Config
		want string
		err  bool
	}{
		{Config{Server: "https://192.0.2.1:6443"}, "https://192.0.2.1:6443", false},
		{Config{Server: "https://192.0.2.1/prefix/"}, "https://192.0.2.1/prefix", false},
		{Config{Server: "192.0.2.1:8080"}, "http://192.0.2.1:8080", false},
		{Config{Server: "192.0.2.1:6443", CAData: []byte(testCA)}, "https://192.0.2.1:6443", false},
		{Config{Server: "192.0.2.1:6443", Insecure: true}, "https://192.0.2.1:6443", false},
		{Config{Server: "192.0.2.1/x"}, "", true},
		{Config{Server: "ftp://192.0.2.1"}, "", true},
	}
	for _, tt := range tests {
		u, err := tt.c.serverURL()
		if tt.err {
			if err == nil {
				t.Errorf("%q: no error", tt.c.Server)
			}
			continue
		}
		if err != nil || u.String() != tt.want {
			t.Errorf("%q: %v %v, want %s", tt.c.Server, u, err, tt.want)
		}
	}
}

// Errors about the server and proxy URLs never quote a password in them.
func TestURLErrorsRedacted(t *testing.T) {
	tests := []struct {
		cfg  Config
		want string
	}{
		{Config{Server: "ftp://admin:s3cret@host:6443"}, `server "ftp://admin:xxxxx@host:6443": scheme must be http or https`},
		{Config{Server: "admin:s3cret@host:6443/prefix"}, `server must be a URL or a host:port pair: "xxxxx@host:6443/prefix"`},
		{Config{Server: "https://host", ProxyURL: "socks5://u:s3cret@proxy:1080"}, `proxy-url "socks5://u:xxxxx@proxy:1080": only http and https proxies are supported`},
		{Config{Server: "https://host", ProxyURL: "http://u:s3cret@proxy:port"}, `proxy-url "xxxxx@proxy:port": invalid port ":port" after host`},
		{Config{Server: "https://host", ProxyURL: "http://u:s3cret@pro\x7fxy"}, `proxy-url "xxxxx@pro\x7fxy": net/url: invalid control character in URL`},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%+v: %v, want %q", tt.cfg, err, tt.want)
		}
	}
}
