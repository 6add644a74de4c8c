package etcd

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/e2e/etcdproc"

	"github.com/flannel-go/flannel/pkg/klogtest"
)

func newPKI(t *testing.T) *etcdproc.PKI {
	t.Helper()
	p, err := etcdproc.NewPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The server is verified with --etcd-cafile alone or with a client certificate; a wrong
// CA fails with an error naming the TLS problem and the endpoint.
func TestTLS(t *testing.T) {
	pki := newPKI(t)
	const config = `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`
	serverOnly := startEtcdTLS(t, &etcdproc.ServerTLS{CertFile: pki.ServerCert, KeyFile: pki.ServerKey})
	mutual := startEtcdTLS(t, &etcdproc.ServerTLS{CertFile: pki.ServerCert, KeyFile: pki.ServerKey, ClientCAFile: pki.CA})
	for _, p := range []*etcdproc.Proc{serverOnly, mutual} {
		mustPut(t, rawClient(t, p.Endpoint(), pki.ClientTLS()), DefaultPrefix+"/config", config)
	}
	tests := []struct {
		name    string
		p       *etcdproc.Proc
		cfg     Config
		wantErr []string // empty: works
	}{
		{"CA only", serverOnly, Config{CAFile: pki.CA}, nil},
		{"certificate and CA", mutual, Config{CertFile: pki.ClientCert, KeyFile: pki.ClientKey, CAFile: pki.CA}, nil},
		{"wrong CA", serverOnly, Config{CAFile: pki.OtherCA}, []string{"TLS handshake with etcd endpoint https://127.0.0.1:", "certificate signed by unknown authority"}},
		{"wrong CA, certificate", mutual, Config{CertFile: pki.ClientCert, KeyFile: pki.ClientKey, CAFile: pki.OtherCA}, []string{"TLS handshake", "unknown authority"}},
		{"system roots", serverOnly, Config{}, []string{"TLS handshake", "unknown authority"}},
		{"no client certificate", mutual, Config{CAFile: pki.CA}, []string{"context deadline exceeded"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Endpoints = []string{tt.p.Endpoint()}
			m := newManager(t, tt.cfg)
			timeout := 20 * time.Second
			if tt.wantErr != nil {
				timeout = 5 * time.Second
			}
			cfg, err := m.GetNetworkConfig(tctx(t, timeout))
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("GetNetworkConfig over TLS: %v", err)
				}
				if _, err := m.AcquireLease(tctx(t, 20*time.Second), cfg, attrsFor("198.51.100.1")); err != nil {
					t.Fatalf("AcquireLease over TLS: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("connected")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if h := m.Health(); h == nil || (strings.Contains(tt.wantErr[0], "TLS") && !strings.Contains(h.Error(), "TLS handshake")) {
				t.Errorf("Health = %v, want the TLS failure", h)
			}
		})
	}
}

func TestTLSConfigRefusals(t *testing.T) {
	pki := newPKI(t)
	ep := []string{"https://127.0.0.1:1"}
	for _, cfg := range []Config{
		{Endpoints: ep, CertFile: pki.ClientCert},
		{Endpoints: ep, KeyFile: pki.ClientKey, CAFile: pki.CA},
	} {
		if _, err := New(cfg); !errors.Is(err, errHalfPair) {
			t.Errorf("New(%+v) = %v, want errHalfPair", cfg, err)
		}
	}
	key, err := os.ReadFile(pki.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	body := strings.Split(string(key), "\n")[1] // a line of the key's base64
	for _, cfg := range []Config{
		{Endpoints: ep, CertFile: pki.ClientKey, KeyFile: pki.ClientCert},
		{Endpoints: ep, CertFile: pki.ClientCert, KeyFile: pki.ClientCert},
		{Endpoints: ep, CAFile: pki.ClientKey},
	} {
		_, err := New(cfg)
		if err == nil {
			t.Fatalf("New(%+v) accepted", cfg)
		}
		if strings.Contains(err.Error(), body[:16]) {
			t.Errorf("the error quotes the key: %v", err)
		}
	}
}

// The operator is told once, without credentials: endpoint user information is dropped,
// a password over http:// is warned about, TLS files with http:// are said to be unused.
func TestConnectionWarnings(t *testing.T) {
	pki := newPKI(t)
	const pw, urlPW = "pw-0123456789", "urlpw-0123456789"
	tests := []struct {
		name string
		cfg  Config
		want []string
		not  []string
	}{
		{"password over http", Config{Endpoints: []string{"http://flannel:" + urlPW + "@127.0.0.1:1"}, Username: "u", Password: pw},
			[]string{"password is sent unencrypted", "User information in an etcd endpoint URL is ignored", "no certificate provided"}, nil},
		{"password over https", Config{Endpoints: []string{"https://127.0.0.1:1"}, Username: "u", Password: pw, CAFile: pki.CA},
			nil, []string{"unencrypted", "no certificate", "not used"}},
		{"TLS files over http", Config{Endpoints: []string{"http://127.0.0.1:1"}, CAFile: pki.CA},
			[]string{"TLS files are not used"}, []string{"no certificate provided"}},
		{"mixed schemes", Config{Endpoints: []string{"https://127.0.0.1:1", "http://127.0.0.1:2"}},
			[]string{"mix schemes"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			buf := klogtest.Capture(t, 10)
			m := newManager(t, tt.cfg)
			if h := m.Health(); h != nil && (strings.Contains(h.Error(), urlPW) || strings.Contains(h.Error(), "flannel:")) {
				t.Errorf("Health holds the endpoint's user information: %v", h)
			}
			_, err := m.GetNetworkConfig(tctx(t, 2*time.Second))
			if err == nil {
				t.Fatal("connected to nothing")
			}
			klog.Flush()
			logs := buf.String() + err.Error()
			for _, w := range tt.want {
				if n := strings.Count(logs, w); n != 1 {
					t.Errorf("%q logged %d times, want once:\n%s", w, n, logs)
				}
			}
			for _, w := range append(tt.not, pw, urlPW) {
				if strings.Contains(logs, w) {
					t.Errorf("%q logged:\n%s", w, logs)
				}
			}
			for _, ep := range m.cfg.Endpoints {
				if strings.Contains(ep, "@") {
					t.Errorf("endpoint %q keeps its user information", ep)
				}
			}
		})
	}
}

func TestAuth(t *testing.T) {
	const prefix = "/coreos.com/network"
	p := startEtcd(t)
	raw := rawClient(t, p.Endpoint(), nil)
	ctx := tctx(t, 30*time.Second)
	mustPut(t, raw, prefix+"/config", `{"Network":"10.5.0.0/16"}`)
	if _, err := raw.UserAdd(ctx, "root", "rootpw"); err != nil {
		t.Fatal(err)
	}
	_, _ = raw.RoleAdd(ctx, "root") // may exist already
	if _, err := raw.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.RoleAdd(ctx, "flannel"); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.RoleGrantPermission(ctx, "flannel", prefix+"/", clientv3.GetPrefixRangeEnd(prefix+"/"), clientv3.PermissionType(clientv3.PermReadWrite)); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.UserAdd(ctx, "flannel", "s3cret"); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.UserGrantRole(ctx, "flannel", "flannel"); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}

	ep := []string{p.Endpoint()}
	m := newManager(t, Config{Endpoints: ep, Username: "flannel", Password: "s3cret"})
	cfg, err := m.GetNetworkConfig(tctx(t, 20*time.Second))
	if err != nil {
		t.Fatalf("GetNetworkConfig with the right password: %v", err)
	}
	if _, err := m.AcquireLease(tctx(t, 20*time.Second), cfg, attrsFor("198.51.100.1")); err != nil {
		t.Fatalf("AcquireLease with the right password: %v", err)
	}

	wrong := newManager(t, Config{Endpoints: ep, Username: "flannel", Password: "wrong"})
	if _, err := wrong.GetNetworkConfig(tctx(t, 10*time.Second)); err == nil {
		t.Fatal("GetNetworkConfig worked with a wrong password")
	} else {
		t.Logf("wrong password: %v", err)
	}
	anon := newManager(t, Config{Endpoints: ep})
	if _, err := anon.GetNetworkConfig(tctx(t, 10*time.Second)); err == nil {
		t.Fatal("GetNetworkConfig worked without credentials")
	}
}

// With credentials New does not block on fetching a token; calls fail in bounded time.
func TestAuthUnreachable(t *testing.T) {
	start := time.Now()
	m := newManager(t, Config{Endpoints: []string{fmt.Sprintf("http://127.0.0.1:%d", freePort(t))}, Username: "u", Password: "p"})
	if d := time.Since(start); d > time.Second {
		t.Fatalf("New took %v", d)
	}
	if _, err := m.GetNetworkConfig(tctx(t, 20*time.Second)); err == nil {
		t.Fatal("GetNetworkConfig succeeded without etcd")
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("GetNetworkConfig took %v", d)
	}
}
