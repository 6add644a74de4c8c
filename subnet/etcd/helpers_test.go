package etcd

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-go/flannel/e2e/etcdproc"
	"github.com/flannel-go/flannel/subnet"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startEtcd runs a real etcd on free 127.0.0.1 ports, over http.
func startEtcd(t *testing.T, extra ...string) *etcdproc.Proc {
	t.Helper()
	return startEtcdIn(t, filepath.Join(t.TempDir(), "data"), nil, extra...)
}

// startEtcdTLS runs a real etcd on free 127.0.0.1 ports, serving https with tc.
func startEtcdTLS(t *testing.T, tc *etcdproc.ServerTLS) *etcdproc.Proc {
	t.Helper()
	return startEtcdIn(t, filepath.Join(t.TempDir(), "data"), tc)
}

func startEtcdIn(t *testing.T, dataDir string, tc *etcdproc.ServerTLS, extra ...string) *etcdproc.Proc {
	t.Helper()
	if _, err := etcdproc.Binary(); err != nil {
		t.Skip(err)
	}
	scheme := "http"
	if tc != nil {
		scheme = "https"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := etcdproc.Start(ctx, etcdproc.Options{
		DataDir:   dataDir,
		ClientURL: fmt.Sprintf("%s://127.0.0.1:%d", scheme, freePort(t)),
		PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
		TLS:       tc,
		ExtraArgs: extra,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	return p
}

func rawClient(t *testing.T, endpoint string, tc *tls.Config) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, TLS: tc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func tctx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func newManager(t *testing.T, cfg Config) *Manager {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func mustPut(t *testing.T, cli *clientv3.Client, key, value string, opts ...clientv3.OpOption) *clientv3.PutResponse {
	t.Helper()
	resp, err := cli.Put(tctx(t, 10*time.Second), key, value, opts...)
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	return resp
}

// setup starts etcd and stores the network config under the default prefix.
func setup(t *testing.T, netConfig string) (*clientv3.Client, *etcdproc.Proc) {
	t.Helper()
	p := startEtcd(t)
	cli := rawClient(t, p.Endpoint(), nil)
	mustPut(t, cli, DefaultPrefix+"/config", netConfig)
	return cli, p
}

func attrsFor(pub string) *subnet.LeaseAttrs {
	return &subnet.LeaseAttrs{
		PublicIP:    netip.MustParseAddr(pub),
		BackendType: "vxlan",
		BackendData: []byte(`{"VNI":1,"VtepMAC":"4e:7c:fc:75:67:c4"}`),
	}
}

func getKV(t *testing.T, cli *clientv3.Client, key string) *clientv3.GetResponse {
	t.Helper()
	resp, err := cli.Get(tctx(t, 10*time.Second), key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return resp
}

func subnetKeys(t *testing.T, cli *clientv3.Client) []string {
	t.Helper()
	resp, err := cli.Get(tctx(t, 10*time.Second), DefaultPrefix+"/subnets/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, kv := range resp.Kvs {
		keys = append(keys, string(kv.Key))
	}
	return keys
}

func acquire(t *testing.T, m *Manager, attrs *subnet.LeaseAttrs) *subnet.Lease {
	t.Helper()
	ctx := tctx(t, 30*time.Second)
	cfg, err := m.GetNetworkConfig(ctx)
	if err != nil {
		t.Fatalf("GetNetworkConfig: %v", err)
	}
	l, err := m.AcquireLease(ctx, cfg, attrs)
	if err != nil {
		t.Fatalf("AcquireLease: %v", err)
	}
	return l
}
