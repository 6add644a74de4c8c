package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/flannel-go/flannel/e2e/etcdproc"
	"github.com/flannel-go/flannel/e2e/lab"
)

// tlsEtcd is an etcd serving TLS in the lab's switch namespace, beside (or instead of)
// the lab's own plain one, and a root client of it.
type tlsEtcd struct {
	proc     *etcdproc.Proc
	endpoint string
	cli      *clientv3.Client
}

// newLabPKI makes certificates for an etcd at the lab's etcd address.
func newLabPKI(t *testing.T) *etcdproc.PKI {
	t.Helper()
	pki, err := etcdproc.NewPKI(t.TempDir(), lab.EtcdIP)
	if err != nil {
		t.Fatal(err)
	}
	return pki
}

// startTLSEtcd runs etcd on https://192.0.2.254:<port> (peer port port+1) with pki's
// server certificate, demanding client certificates when clientAuth is set.
func startTLSEtcd(t *testing.T, l *lab.Lab, pki *etcdproc.PKI, port int, clientAuth bool) *tlsEtcd {
	t.Helper()
	st := &etcdproc.ServerTLS{CertFile: pki.ServerCert, KeyFile: pki.ServerKey}
	if clientAuth {
		st.ClientCAFile = pki.CA
	}
	dir := filepath.Join(l.WorkDir(), fmt.Sprintf("etcd-tls-%d", port))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p, err := etcdproc.Start(ctx, etcdproc.Options{
		Name:      "tls",
		DataDir:   filepath.Join(dir, "data"),
		LogFile:   filepath.Join(dir, "etcd.log"),
		ClientURL: fmt.Sprintf("https://%s:%d", lab.EtcdIP, port),
		PeerURL:   fmt.Sprintf("http://%s:%d", lab.EtcdIP, port+1),
		Netns:     l.SwitchNS(),
		TLS:       st,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: []string{p.Endpoint()}, DialTimeout: 10 * time.Second, TLS: pki.ClientTLS(),
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return lab.DialContext(l.SwitchNS())(ctx, "tcp", addr)
		})},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return &tlsEtcd{proc: p, endpoint: p.Endpoint(), cli: cli}
}

func (e *tlsEtcd) put(t *testing.T, key, value string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := e.cli.Put(ctx, key, value); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

// The daemon itself over TLS: --etcd-cafile alone against an etcd that verifies no
// client, a client certificate against one with --client-cert-auth, the two
// half-configured refusals (exit 2), and a wrong CA, which the daemon names (endpoint
// and TLS reason) while it keeps retrying and never becomes ready.
func TestEtcdTLS(t *testing.T) {
	l := newLab(t, "tls", 3, func(o *lab.Options) { o.NoEtcd = true })
	pki := newLabPKI(t)
	serverOnly := startTLSEtcd(t, l, pki, 2479, false)
	mutual := startTLSEtcd(t, l, pki, 2481, true)
	for _, e := range []*tlsEtcd{serverOnly, mutual} {
		e.put(t, l.EtcdPrefix()+"/config", vxlanConfig)
	}
	healthz := fmt.Sprintf("--healthz-port=%d", healthzPort)

	if err := l.StartFlanneld(1, "--etcd-endpoints="+serverOnly.endpoint, "--etcd-cafile="+pki.CA, healthz); err != nil {
		t.Fatal(err)
	}
	if err := l.StartFlanneld(2, "--etcd-endpoints="+mutual.endpoint, "--etcd-cafile="+pki.CA,
		"--etcd-certfile="+pki.ClientCert, "--etcd-keyfile="+pki.ClientKey, healthz); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		if _, err := l.WaitSubnetEnv(i, startTimeout); err != nil {
			t.Fatal(err)
		}
		waitReadyz(t, l, i, "", 200)
		if log := l.LogTail(i, 200); strings.Contains(log, "no certificate provided") || strings.Contains(log, "not used") {
			t.Errorf("node %d says it does not use TLS:\n%s", i, log)
		}
	}

	// Half a client certificate is a usage error.
	for _, tt := range []struct{ flag, want string }{
		{"--etcd-certfile=" + pki.ClientCert, "--etcd-certfile is set without --etcd-keyfile"},
		{"--etcd-keyfile=" + pki.ClientKey, "--etcd-keyfile is set without --etcd-certfile"},
	} {
		code, out := runFlanneldOnce(t, l.FlanneldCommand(3, "--etcd-endpoints="+mutual.endpoint, "--etcd-cafile="+pki.CA, tt.flag), 60*time.Second)
		if code != 2 || !strings.Contains(out, tt.want) {
			t.Errorf("flanneld %s: exit %d, want 2 with %q:\n%s", tt.flag, code, tt.want, out)
		}
	}

	// A CA that did not sign the server's certificate.
	if err := l.StartFlanneld(3, "--etcd-endpoints="+serverOnly.endpoint, "--etcd-cafile="+pki.OtherCA, healthz); err != nil {
		t.Fatal(err)
	}
	wantTLS := "TLS handshake with etcd endpoint " + serverOnly.endpoint + " failed"
	waitFor(t, convergeTimeout, "node 3 logs the TLS failure twice", func() (bool, string) {
		b, err := os.ReadFile(l.LogPath(3))
		if err != nil {
			return false, err.Error()
		}
		log := string(b)
		n := 0
		for _, line := range strings.Split(log, "\n") {
			if strings.Contains(line, "Couldn't fetch network config; retrying") && strings.Contains(line, wantTLS) &&
				strings.Contains(line, "certificate signed by unknown authority") {
				n++
			}
		}
		return n >= 2, l.LogTail(3, 5)
	})
	body := waitReadyz(t, l, 3, "?verbose", 503)
	t.Logf("node 3 /readyz?verbose with a wrong CA:\n%s", body)
	for range 10 {
		if code, b, err := readyz(l, 3, ""); err != nil || code != 503 {
			t.Fatalf("node 3 with a wrong CA: /readyz %d %q %v", code, b, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if !l.FlanneldRunning(3) {
		t.Fatalf("node 3 gave up:\n%s", l.LogTail(3, 20))
	}
	if _, err := os.Stat(l.SubnetEnvPath(3)); err == nil {
		t.Error("node 3 wrote a subnet file through an unverified connection")
	}
}
