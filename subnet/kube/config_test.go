package kube

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// kubeconfig writes a one-context kubeconfig (cluster "lab", user "flanneld"); cluster and
// user are their YAML lines, indented four spaces.
func kubeconfig(t testing.TB, dir, server, cluster, user string) string {
	t.Helper()
	text := "apiVersion: v1\nkind: Config\ncurrent-context: lab\ncontexts:\n- name: lab\n  context: {cluster: lab, user: flanneld}\n" +
		"clusters:\n- name: lab\n  cluster:\n    server: \"" + server + "\"\n" + cluster +
		"users:\n- name: flanneld\n  user:\n" + user
	if user == "" {
		text += "    {}\n"
	}
	f, err := os.CreateTemp(dir, "*.kubeconfig")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// flanneld only refuses auth-provider users (naming the replacement) and applies the exec
// plugin allowlist to client-go's BuildConfigFromFlags.
func TestRestConfig(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	if err := os.WriteFile(filepath.Join(dir, "tok"), []byte("file-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	exec := "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: ./plugin\n      interactiveMode: Never\n"
	tests := []struct {
		name, apiURL, kubeconfig string
		allowlist                []string
		host, err                string
		check                    func(t *testing.T, host string, policy *clientcmdapi.PluginPolicy)
	}{
		{name: "token file, relative", kubeconfig: kubeconfig(t, dir, "https://192.0.2.1:6443", "", "    tokenFile: tok\n"), host: "https://192.0.2.1:6443"},
		{name: "api url replaces the server", apiURL: "https://192.0.2.2:6443", kubeconfig: kubeconfig(t, dir, "https://192.0.2.1:6443", "", "    token: t\n"), host: "https://192.0.2.2:6443"},
		{name: "api url alone", apiURL: "http://192.0.2.3:8080", host: "http://192.0.2.3:8080"},
		{name: "neither, outside a pod", err: "invalid configuration: no configuration has been provided"},
		{name: "auth-provider refused, exec named", kubeconfig: kubeconfig(t, dir, "https://192.0.2.1:6443", "", "    auth-provider:\n      name: oidc\n      config: {client-id: x, id-token: secret-id-token}\n"),
			err: `auth-provider "oidc" is not supported: use an exec credential plugin`},
		{name: "exec plugin, any may run", kubeconfig: kubeconfig(t, dir, "https://192.0.2.1:6443", "", exec), host: "https://192.0.2.1:6443",
			check: func(t *testing.T, _ string, p *clientcmdapi.PluginPolicy) {
				if p == nil || p.PolicyType != "" || p.Allowlist != nil {
					t.Errorf("plugin policy %+v, want client-go's default", p)
				}
			}},
		{name: "exec plugin allowlist", kubeconfig: kubeconfig(t, dir, "https://192.0.2.1:6443", "", exec), allowlist: []string{"aws-iam-authenticator", "/opt/bin/plugin"}, host: "https://192.0.2.1:6443",
			check: func(t *testing.T, _ string, p *clientcmdapi.PluginPolicy) {
				if p == nil || p.PolicyType != clientcmdapi.PluginPolicyAllowlist || len(p.Allowlist) != 2 || p.Allowlist[1].Command != "/opt/bin/plugin" {
					t.Errorf("plugin policy %+v", p)
				}
			}},
		{name: "missing file", kubeconfig: filepath.Join(dir, "missing"), err: "missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc, err := restConfig(tt.apiURL, tt.kubeconfig, tt.allowlist)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || strings.Contains(err.Error(), "secret-id-token") {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rc.Host != tt.host {
				t.Errorf("host %q, want %q", rc.Host, tt.host)
			}
			if tt.check != nil {
				var p *clientcmdapi.PluginPolicy
				if rc.ExecProvider != nil {
					p = &rc.ExecProvider.PluginPolicy
				}
				tt.check(t, rc.Host, p)
			}
		})
	}
}

// Errors about the server and proxy URLs never quote a password in them.
func TestURLErrorsRedacted(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		server, proxy, want string
	}{
		{"admin:s3cret@host:6443/prefix", "", `host must be a URL or a host:port pair: "xxxxx@host:6443/prefix"`},
		{"https://host", "http://u:s3cret@proxy:port", `invalid 'proxy-url'`},
		{"https://host", "ftp://u:s3cret@proxy:1", `unsupported scheme "ftp"`},
		{"https://admin:s3cret@127.0.0.1:1", "", "holds credentials"},
		{"https://127.0.0.1:1", "socks5://u:s3cret@127.0.0.1:1", "connection refused"},
		{"https://127.0.0.1:1", "http://u:s3cret@127.0.0.1:1", "connection refused"},
	}
	for _, tt := range tests {
		cluster := "    insecure-skip-tls-verify: true\n"
		if tt.proxy != "" {
			cluster += "    proxy-url: \"" + tt.proxy + "\"\n"
		}
		m, err := New(Config{KubeconfigFile: kubeconfig(t, dir, tt.server, cluster, "    token: t\n"), NodeName: "n"})
		if err == nil {
			_, err = m.getNode(t.Context(), "n")
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("server %q proxy %q: %v, want %q without the password", tt.server, tt.proxy, err, tt.want)
		}
	}
}
