package etcd

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// testPKI writes a CA, a server certificate for 127.0.0.1 and a client certificate.
type testPKI struct {
	dir                       string
	ca, serverCert, serverKey string
	clientCert, clientKey     string
	otherCA                   string // a CA that signed nothing here
	caPool                    *x509.CertPool
	clientPair                tls.Certificate
}

func newPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir()}
	now := time.Now()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(p.dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	writeKey := func(name string, k *ecdsa.PrivateKey) string {
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return write(name, "EC PRIVATE KEY", der)
	}
	mkCA := func(cn string) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
		k := newKey()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return cert, k, der
	}
	ca, caKey, caDER := mkCA("flannel test CA")
	p.ca = write("ca.pem", "CERTIFICATE", caDER)
	_, _, otherDER := mkCA("unrelated CA")
	p.otherCA = write("other-ca.pem", "CERTIFICATE", otherDER)
	p.caPool = x509.NewCertPool()
	p.caPool.AddCert(ca)

	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage, ips []net.IP) ([]byte, *ecdsa.PrivateKey) {
		k := newKey()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, k
	}
	sDER, sKey := leaf(2, "etcd", x509.ExtKeyUsageServerAuth, []net.IP{net.ParseIP("127.0.0.1")})
	p.serverCert, p.serverKey = write("server.pem", "CERTIFICATE", sDER), writeKey("server-key.pem", sKey)
	cDER, cKey := leaf(3, "flanneld", x509.ExtKeyUsageClientAuth, nil)
	p.clientCert, p.clientKey = write("client.pem", "CERTIFICATE", cDER), writeKey("client-key.pem", cKey)
	pair, err := tls.LoadX509KeyPair(p.clientCert, p.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	p.clientPair = pair
	return p
}

func TestTLS(t *testing.T) {
	pki := newPKI(t)
	p := startEtcd(t, "https",
		"--cert-file", pki.serverCert, "--key-file", pki.serverKey,
		"--trusted-ca-file", pki.ca, "--client-cert-auth")
	raw := rawClient(t, p.Endpoint(), &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pki.caPool, Certificates: []tls.Certificate{pki.clientPair}})
	mustPut(t, raw, DefaultPrefix+"/config", `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`)

	ep := []string{p.Endpoint()}
	m := newManager(t, Config{Endpoints: ep, KeyFile: pki.clientKey, CertFile: pki.clientCert, CAFile: pki.ca})
	cfg, err := m.GetNetworkConfig(tctx(t, 20*time.Second))
	if err != nil {
		t.Fatalf("GetNetworkConfig over TLS: %v", err)
	}
	if cfg.BackendType != "vxlan" {
		t.Fatalf("config %+v", cfg)
	}
	l, err := m.AcquireLease(tctx(t, 20*time.Second), cfg, attrsFor("198.51.100.1"))
	if err != nil {
		t.Fatalf("AcquireLease over TLS: %v", err)
	}
	if len(getKV(t, raw, DefaultPrefix+"/subnets/"+l.Key()).Kvs) != 1 {
		t.Fatal("lease not stored")
	}

	// The server is verified: a CA that did not sign it fails.
	bad := newManager(t, Config{Endpoints: ep, KeyFile: pki.clientKey, CertFile: pki.clientCert, CAFile: pki.otherCA})
	if _, err := bad.GetNetworkConfig(tctx(t, 3*time.Second)); err == nil {
		t.Fatal("connected although the server certificate is not signed by the given CA")
	}
	// Without a client certificate the server refuses (and no TLS is used at all).
	plain := newManager(t, Config{Endpoints: ep, CAFile: pki.ca})
	if _, err := plain.GetNetworkConfig(tctx(t, 3*time.Second)); err == nil {
		t.Fatal("connected without a client certificate")
	}
}

func TestAuth(t *testing.T) {
	const prefix = "/coreos.com/network"
	p := startEtcd(t, "http")
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

// TestAuthUnreachable: with credentials the client fetches a token when it is created;
// New must not block on that, and calls fail (bounded) while etcd is unreachable.
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
