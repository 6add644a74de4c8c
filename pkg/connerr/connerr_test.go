package connerr

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	opErr := func(op string, err error) error { return &net.OpError{Op: op, Net: "tcp", Err: err} }
	cases := []struct {
		err  error
		want Cause
	}{
		{nil, Unknown},
		{errors.New("something"), Unknown},
		{opErr("dial", os.NewSyscallError("connect", syscall.ECONNREFUSED)), Refused},
		{opErr("dial", os.NewSyscallError("connect", syscall.EHOSTUNREACH)), Unreachable},
		{opErr("dial", os.NewSyscallError("connect", syscall.ENETUNREACH)), Unreachable},
		{opErr("dial", os.NewSyscallError("connect", syscall.ETIMEDOUT)), Timeout},
		{opErr("read", os.NewSyscallError("read", syscall.ECONNRESET)), Closed},
		{fmt.Errorf("handshake: %w", io.EOF), Closed},
		{fmt.Errorf("reading: %w", context.DeadlineExceeded), Timeout},
		{opErr("read", os.ErrDeadlineExceeded), Timeout},
		{&net.DNSError{Err: "no such host", Name: "etcd.example", IsNotFound: true}, NameNotFound},
		{&net.DNSError{Err: "i/o timeout", Name: "etcd.example", IsTimeout: true}, Timeout},
		{&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, TLSUnknownAuthority},
		{&tls.CertificateVerificationError{Err: x509.HostnameError{Host: "192.0.2.254", Certificate: &x509.Certificate{}}}, TLSHostname},
		{x509.CertificateInvalidError{Reason: x509.Expired}, TLSExpired},
		{x509.CertificateInvalidError{Reason: x509.NotAuthorizedToSign}, TLSOther},
		{tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, TLSNotTLS},
		{opErr("remote error", errors.New("tls: bad certificate")), TLSBadCertificate},
		{opErr("remote error", errors.New("tls: certificate required")), TLSBadCertificate},
		{opErr("remote error", errors.New("tls: unknown certificate authority")), TLSBadCertificate},
		{opErr("remote error", errors.New("tls: protocol version not supported")), TLSOther},
	}
	for _, c := range cases {
		if got := Classify(c.err); got != c.want {
			t.Errorf("Classify(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

func TestErrorText(t *testing.T) {
	e := &Error{Endpoint: "http://192.0.2.254:2379", Cause: Refused, Err: syscall.ECONNREFUSED}
	if got := e.Error(); got != "http://192.0.2.254:2379: connection refused (nothing listens on that address and port)" {
		t.Errorf("refused: %q", got)
	}
	if !errors.Is(e, syscall.ECONNREFUSED) {
		t.Error("the underlying error is not kept")
	}
	e = &Error{Endpoint: "https://192.0.2.254:2379", Cause: TLSHostname, Err: errors.New("x509: certificate is valid for 192.0.2.253, not 192.0.2.254")}
	if got := e.Error(); got != "https://192.0.2.254:2379: TLS: the server's certificate is not valid for this host name or address: x509: certificate is valid for 192.0.2.253, not 192.0.2.254" {
		t.Errorf("hostname: %q", got)
	}
	e = &Error{Endpoint: "http://192.0.2.254:2379", Err: errors.New("something new")}
	if got := e.Error(); got != "http://192.0.2.254:2379: something new" {
		t.Errorf("unknown cause: %q", got)
	}
}

// pki is a throw-away CA with a server certificate for 127.0.0.1 and a client certificate.
type pki struct {
	pool           *x509.CertPool
	server, client tls.Certificate
	other          *x509.CertPool // a pool of another CA
}

func newCA(t *testing.T, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func leaf(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, serial int64, usage x509.ExtKeyUsage, ips ...net.IP) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "leaf"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func newPKI(t *testing.T) *pki {
	ca, caKey := newCA(t, "test CA")
	other, _ := newCA(t, "other CA")
	p := &pki{pool: x509.NewCertPool(), other: x509.NewCertPool()}
	p.pool.AddCert(ca)
	p.other.AddCert(other)
	p.server = leaf(t, ca, caKey, 2, x509.ExtKeyUsageServerAuth, net.ParseIP("127.0.0.1"))
	p.client = leaf(t, ca, caKey, 3, x509.ExtKeyUsageClientAuth)
	return p
}

// serve accepts connections on 127.0.0.1 until the test ends; each is handed to handle.
func serve(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// tlsServer completes TLS handshakes with cfg and then sends a byte, as a server that
// speaks first (HTTP/2) does.
func tlsServer(t *testing.T, cfg *tls.Config) string {
	return serve(t, func(c net.Conn) {
		s := tls.Server(c, cfg)
		if s.Handshake() == nil {
			_, _ = s.Write([]byte{0})
			_, _ = io.Copy(io.Discard, s)
		}
	})
}

// plainServer reads whatever comes and answers nothing; it closes the connection on
// bytes it does not understand, as etcd's port multiplexer does.
func plainServer(t *testing.T) string {
	return serve(t, func(c net.Conn) {
		_, _ = c.Read(make([]byte, 512))
	})
}

// Probe names the cause of each failure against real listeners on 127.0.0.1.
func TestProbe(t *testing.T) {
	p := newPKI(t)
	closed := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		a := ln.Addr().String()
		ln.Close()
		return a
	}()
	serverTLS := &tls.Config{Certificates: []tls.Certificate{p.server}, MinVersion: tls.VersionTLS12}
	mutual := &tls.Config{Certificates: []tls.Certificate{p.server}, ClientCAs: p.pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
	tlsAddr, mutualAddr, plainAddr := tlsServer(t, serverTLS), tlsServer(t, mutual), plainServer(t)
	client := &tls.Config{RootCAs: p.pool, MinVersion: tls.VersionTLS12}
	withCert := &tls.Config{RootCAs: p.pool, Certificates: []tls.Certificate{p.client}, MinVersion: tls.VersionTLS12}
	cases := []struct {
		name string
		addr string
		tc   *tls.Config
		want Cause // Unknown: no error
	}{
		{"plain server, plain probe", plainAddr, nil, Unknown},
		{"nothing listens", closed, nil, Refused},
		{"nothing listens, TLS", closed, client, Refused},
		{"TLS server, TLS probe", tlsAddr, client, Unknown},
		{"TLS server, plain probe", tlsAddr, nil, PlainToTLS},
		{"plain server, TLS probe", plainAddr, client, TLSNotTLS},
		{"unknown authority", tlsAddr, &tls.Config{RootCAs: p.other, MinVersion: tls.VersionTLS12}, TLSUnknownAuthority},
		{"hostname mismatch", tlsAddr, &tls.Config{RootCAs: p.pool, ServerName: "etcd.example", MinVersion: tls.VersionTLS12}, TLSHostname},
		{"client certificate required, none given", mutualAddr, client, TLSBadCertificate},
		{"client certificate required, given", mutualAddr, withCert, Unknown},
		// A TLS 1.2 server answers a missing certificate with a generic alert.
		{"client certificate required, TLS 1.2", mutualAddr, &tls.Config{RootCAs: p.pool, MaxVersion: tls.VersionTLS12, MinVersion: tls.VersionTLS12}, TLSOther},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := Probe(ctx, "tcp", c.addr, c.tc)
			var e *Error
			switch {
			case c.want == Unknown && err != nil:
				t.Fatalf("Probe: %v, want no error", err)
			case c.want == Unknown:
			case !errors.As(err, &e):
				t.Fatalf("Probe: %v, want cause %v", err, c.want)
			case e.Cause != c.want:
				t.Fatalf("Probe: cause %v (%v), want %v", e.Cause, err, c.want)
			case !strings.Contains(err.Error(), c.want.String()):
				t.Fatalf("Probe: %q does not say %q", err, c.want)
			}
		})
	}
}
