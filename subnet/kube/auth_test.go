package kube

// Integration tests of kubeconfig credentials, proxies and impersonation (client-go's).

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/transport"

	"github.com/flannel-go/flannel/subnet"
)

// grantFlannel gives a user or group the flannel ClusterRole's rules; the returned func
// takes them back.
func grantFlannel(t *testing.T, cs kubernetes.Interface, kind, name string) func() {
	t.Helper()
	ctx := context.Background()
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "fg-it-flannel"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}},
		{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{""}, Resources: []string{"nodes/status"}, Verbs: []string{"patch"}},
	}}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
	bname := "fg-it-" + strings.ToLower(kind) + "-" + name
	b := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: bname},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: kind, Name: name}},
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, b, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	revoke := func() {
		_ = cs.RbacV1().ClusterRoleBindings().Delete(context.Background(), bname, metav1.DeleteOptions{})
	}
	t.Cleanup(revoke)
	return revoke
}

func writeFile(t *testing.T, dir, rel, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func execPlugin(t *testing.T, dir, token string) string {
	t.Helper()
	return writeFile(t, dir, "bin/cred.sh", "#!/bin/sh\necho '{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{\"token\":\""+token+"\"}}'\n", 0o755)
}

// Against the real apiserver: relative CA and token files, inline CA with an exec plugin
// (allowlisted or not), --kube-api-url overriding the server, client certificates, and
// impersonation.
func TestIntegrationKubeconfigAuth(t *testing.T) {
	k := apiserver(t)
	cs := adminClient(t, k)
	name := uniq(t, "n")
	createNode(t, cs, name, []string{"10.244.7.0/24"}, nil)
	dir := t.TempDir()
	writeFile(t, dir, "pki/ca.crt", string(k.API.CAPEM()), 0o644)
	writeFile(t, dir, "secrets/token", k.API.AdminToken()+"\n", 0o600)
	plugin := execPlugin(t, dir, k.API.AdminToken())
	certUser := uniq(t, "cert")
	grantFlannel(t, cs, "User", certUser)
	certPEM, keyPEM, err := k.API.ClientCert(certUser)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "pki/client.crt", string(certPEM), 0o600)
	writeFile(t, dir, "pki/client.key", string(keyPEM), 0o600)
	impUser, impGroup := uniq(t, "imp"), uniq(t, "impgroup")

	caData := "    certificate-authority-data: " + base64.StdEncoding.EncodeToString(k.API.CAPEM()) + "\n"
	execUser := "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: ./bin/cred.sh\n      interactiveMode: Never\n"
	impersonate := "    token: " + k.API.AdminToken() + "\n    as: " + impUser + "\n    as-groups: [" + impGroup + "]\n"
	tests := []struct {
		name, kubeconfig, apiURL string
		allowlist                []string
		grant                    func() // before the second try, when the first must fail
		err                      string // of the first try
	}{
		{name: "token file", kubeconfig: kubeconfig(t, dir, k.API.URL(), "    certificate-authority: pki/ca.crt\n", "    tokenFile: secrets/token\n")},
		{name: "exec plugin", kubeconfig: kubeconfig(t, dir, k.API.URL(), caData, execUser)},
		{name: "exec plugin allowed", kubeconfig: kubeconfig(t, dir, k.API.URL(), caData, execUser), allowlist: []string{"/usr/bin/true", plugin}},
		{name: "exec plugin not in the allowlist", kubeconfig: kubeconfig(t, dir, k.API.URL(), caData, execUser), allowlist: []string{"/usr/bin/true"},
			err: "is not permitted by the credential plugin allowlist"},
		{name: "api url override", kubeconfig: kubeconfig(t, dir, "https://127.0.0.1:1", caData, "    token: "+k.API.AdminToken()+"\n"), apiURL: k.API.URL()},
		{name: "client certificate files", kubeconfig: kubeconfig(t, dir, k.API.URL(), caData, "    client-certificate: pki/client.crt\n    client-key: pki/client.key\n")},
		{name: "client certificate data", kubeconfig: kubeconfig(t, dir, k.API.URL(), caData,
			"    client-certificate-data: "+base64.StdEncoding.EncodeToString(certPEM)+"\n    client-key-data: "+base64.StdEncoding.EncodeToString(keyPEM)+"\n")},
		{name: "impersonation", kubeconfig: kubeconfig(t, dir, k.API.URL(), caData, impersonate),
			err:   fmt.Sprintf(`User %q cannot list resource "nodes"`, impUser),
			grant: func() { grantFlannel(t, cs, "Group", impGroup) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			try := func() error {
				m, err := New(Config{KubeconfigFile: tt.kubeconfig, APIURL: tt.apiURL, ExecPluginAllowlist: tt.allowlist, NodeName: name, NetConfigPath: writeNetConf(t, itNetConf)})
				if err != nil {
					t.Fatal(err)
				}
				_, err = m.GetNetworkConfig(context.Background())
				return err
			}
			err := try()
			if tt.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("error %v, want %q", err, tt.err)
			}
			if tt.grant != nil {
				tt.grant()
				// The authorizer learns of a new binding through its informer, with some delay.
				deadline := time.Now().Add(30 * time.Second)
				for err := try(); err != nil; err = try() {
					if time.Now().After(deadline) {
						t.Fatalf("after the grant: %v", err)
					}
					time.Sleep(200 * time.Millisecond)
				}
			}
		})
	}
}

// connProxy is a loopback HTTP CONNECT or SOCKS5 proxy recording where it connected.
type connProxy struct {
	ln      net.Listener
	mu      sync.Mutex
	targets []string
}

func startProxy(t *testing.T, socks bool) *connProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &connProxy{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var target string
				br := bufio.NewReader(c)
				if socks {
					target, err = socks5Handshake(br, c)
				} else {
					target, err = connectHandshake(br, c)
				}
				if err != nil {
					return
				}
				p.mu.Lock()
				p.targets = append(p.targets, target)
				p.mu.Unlock()
				up, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer up.Close()
				if socks {
					_, _ = c.Write([]byte{5, 0, 0, 1, 0, 0, 0, 0, 0, 0})
				} else {
					_, _ = io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
				}
				go func() { _, _ = io.Copy(up, br) }()
				_, _ = io.Copy(c, up)
			}()
		}
	}()
	return p
}

func connectHandshake(br *bufio.Reader, _ net.Conn) (string, error) {
	req, err := http.ReadRequest(br)
	if err != nil || req.Method != http.MethodConnect {
		return "", fmt.Errorf("not a CONNECT: %v", err)
	}
	return req.Host, nil
}

// socks5Handshake reads a no-auth SOCKS5 greeting and CONNECT request; returns the target.
func socks5Handshake(br *bufio.Reader, c net.Conn) (string, error) {
	head := make([]byte, 2)
	if _, err := io.ReadFull(br, head); err != nil || head[0] != 5 {
		return "", fmt.Errorf("greeting: %v", err)
	}
	if _, err := io.ReadFull(br, make([]byte, head[1])); err != nil {
		return "", err
	}
	if _, err := c.Write([]byte{5, 0}); err != nil {
		return "", err
	}
	req := make([]byte, 4)
	if _, err := io.ReadFull(br, req); err != nil || req[1] != 1 {
		return "", fmt.Errorf("request: %v", err)
	}
	var host string
	switch req[3] {
	case 1:
		ip := make([]byte, 4)
		if _, err := io.ReadFull(br, ip); err != nil {
			return "", err
		}
		host = net.IP(ip).String()
	case 3:
		n, err := br.ReadByte()
		if err != nil {
			return "", err
		}
		name := make([]byte, n)
		if _, err := io.ReadFull(br, name); err != nil {
			return "", err
		}
		host = string(name)
	default:
		return "", fmt.Errorf("address type %d", req[3])
	}
	port := make([]byte, 2)
	if _, err := io.ReadFull(br, port); err != nil {
		return "", err
	}
	return net.JoinHostPort(host, fmt.Sprint(binary.BigEndian.Uint16(port))), nil
}

// A kubeconfig's proxy-url, HTTP or SOCKS5, carries every request, the watch included.
func TestIntegrationProxy(t *testing.T) {
	k := apiserver(t)
	cs := adminClient(t, k)
	own, peer := uniq(t, "own"), uniq(t, "peer")
	createNode(t, cs, own, []string{"10.244.8.0/24"}, nil)
	createNode(t, cs, peer, []string{"10.244.9.0/24"}, peerAnn("192.0.2.41", "0e:00:00:00:00:41"))
	caData := "    certificate-authority-data: " + base64.StdEncoding.EncodeToString(k.API.CAPEM()) + "\n"
	for _, socks := range []bool{false, true} {
		t.Run(map[bool]string{false: "http", true: "socks5"}[socks], func(t *testing.T) {
			p := startProxy(t, socks)
			scheme := map[bool]string{false: "http", true: "socks5"}[socks]
			kc := kubeconfig(t, t.TempDir(), k.API.URL(), caData+"    proxy-url: "+scheme+"://"+p.ln.Addr().String()+"\n", "    token: "+k.API.AdminToken()+"\n")
			m, err := New(Config{KubeconfigFile: kc, NodeName: own, NetConfigPath: writeNetConf(t, itNetConf)})
			if err != nil {
				t.Fatal(err)
			}
			r := watchNext(t, watchReady(t, m))
			found := false
			for _, c := range r.Snapshot {
				found = found || c.Lease.Key() == "10.244.9.0-24"
			}
			if !found {
				t.Fatalf("peer missing from the snapshot through the proxy: %q", leaseKeys(r))
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			if len(p.targets) == 0 || p.targets[0] != strings.TrimPrefix(k.API.URL(), "https://") {
				t.Fatalf("proxy connected to %v, want %s", p.targets, k.API.URL())
			}
		})
	}
}

type connTracker struct {
	mu   sync.Mutex
	open map[*trackedConn]bool
}

type trackedConn struct {
	net.Conn
	t *connTracker
}

func (c *trackedConn) Close() error {
	c.t.mu.Lock()
	delete(c.t.open, c)
	c.t.mu.Unlock()
	return c.Conn.Close()
}

func (t *connTracker) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, t: t}
	t.mu.Lock()
	t.open[tc] = true
	t.mu.Unlock()
	return tc, nil
}

func (t *connTracker) snapshot() map[*trackedConn]bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := map[*trackedConn]bool{}
	for c := range t.open {
		s[c] = true
	}
	return s
}

func (t *connTracker) anyOpen(set map[*trackedConn]bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for c := range set {
		if t.open[c] {
			return true
		}
	}
	return false
}

// A client certificate rewritten on disk (kubeadm rotation) is picked up without restart:
// client-go closes connections presenting the old one, and the watch goes on with the new.
// The old identity loses its permissions first, so later events prove the new one.
func TestIntegrationClientCertRotation(t *testing.T) {
	k := apiserver(t)
	cs := adminClient(t, k)
	oldPeriod := transport.CertCallbackRefreshDuration
	transport.CertCallbackRefreshDuration = time.Second // client-go's knob for tests (default 5 min)
	t.Cleanup(func() { transport.CertCallbackRefreshDuration = oldPeriod })

	userA, userB := uniq(t, "a"), uniq(t, "b")
	revokeA := grantFlannel(t, cs, "User", userA)
	grantFlannel(t, cs, "User", userB)
	own, peer := uniq(t, "own"), uniq(t, "peer")
	createNode(t, cs, own, []string{"10.244.50.0/24"}, nil)
	dir := t.TempDir()
	install := func(user string) {
		t.Helper()
		certPEM, keyPEM, err := k.API.ClientCert(user)
		if err != nil {
			t.Fatal(err)
		}
		for name, data := range map[string][]byte{"client.key": keyPEM, "client.crt": certPEM} {
			tmp := writeFile(t, dir, name+".tmp", string(data), 0o600)
			if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	install(userA)
	kc := kubeconfig(t, dir, k.API.URL(), "    certificate-authority-data: "+base64.StdEncoding.EncodeToString(k.API.CAPEM())+"\n",
		"    client-certificate: client.crt\n    client-key: client.key\n")
	rc, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	tr := &connTracker{open: map[*trackedConn]bool{}}
	rc.Dial = tr.dial
	m, err := New(Config{REST: rc, NodeName: own, NetConfigPath: writeNetConf(t, itNetConf)})
	if err != nil {
		t.Fatal(err)
	}
	out := watchReady(t, m)
	if r := watchNext(t, out); !r.IsSnapshot() {
		t.Fatalf("first result %+v", r)
	}
	time.Sleep(time.Second) // the watch is established
	before := tr.snapshot()
	if len(before) == 0 {
		t.Fatal("no connection open while watching")
	}
	revokeA()
	install(userB)
	deadline := time.Now().Add(30 * time.Second)
	for tr.anyOpen(before) {
		if time.Now().After(deadline) {
			t.Fatal("the connections presenting the old certificate are still open 30 s after the rotation")
		}
		time.Sleep(50 * time.Millisecond)
	}
	createNode(t, cs, peer, []string{"10.244.51.0/24"}, peerAnn("192.0.2.51", "0e:00:00:00:00:51"))
	ev := nextEvents(t, out, func(key string) bool { return key == "10.244.51.0-24" })
	if len(ev) != 1 || ev[0].Type != subnet.EventAdded {
		t.Fatalf("events after the rotation: %+v", ev)
	}
}

// kubeproc's client certificates carry the user the server sees: an unbound user's is
// refused by RBAC with its name, proving which certificate was presented.
func TestIntegrationClientCertIdentity(t *testing.T) {
	k := apiserver(t)
	user := uniq(t, "nobody")
	certPEM, keyPEM, err := k.API.ClientCert(user)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kc := kubeconfig(t, dir, k.API.URL(), "    certificate-authority-data: "+base64.StdEncoding.EncodeToString(k.API.CAPEM())+"\n",
		"    client-certificate-data: "+base64.StdEncoding.EncodeToString(certPEM)+"\n    client-key-data: "+base64.StdEncoding.EncodeToString(keyPEM)+"\n")
	m, err := New(Config{KubeconfigFile: kc, NodeName: "x", NetConfigPath: writeNetConf(t, itNetConf)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.GetNetworkConfig(context.Background())
	if want := fmt.Sprintf(`User %q cannot list resource "nodes"`, user); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("unbound certificate user: %v, want %q", err, want)
	}
}
