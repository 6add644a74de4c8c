package etcdproc

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
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// PKI is a throw-away CA for TLS tests as PEM files, with server and client certificates
// and a second CA that signed nothing.
type PKI struct {
	Dir                   string
	CA                    string // the CA certificate
	ServerCert, ServerKey string
	ClientCert, ClientKey string
	OtherCA               string // a CA unrelated to the certificates above

	caPool              *x509.CertPool
	clientPair          tls.Certificate
	caCert              *x509.Certificate
	caKey               *ecdsa.PrivateKey
	serial              int64
	notBefore, notAfter time.Time
}

// NewPKI writes the PKI into dir; the server certificate names serverIPs, else 127.0.0.1.
func NewPKI(dir string, serverIPs ...netip.Addr) (*PKI, error) {
	now := time.Now()
	p := &PKI{Dir: dir, notBefore: now.Add(-time.Hour), notAfter: now.Add(24 * time.Hour), serial: now.UnixNano()}
	if len(serverIPs) == 0 {
		serverIPs = []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	}
	var ips []net.IP
	for _, a := range serverIPs {
		ips = append(ips, net.IP(a.AsSlice()))
	}
	var err error
	var caDER []byte
	if p.caCert, p.caKey, caDER, err = p.newCA("flannel test CA"); err != nil {
		return nil, err
	}
	if p.CA, err = p.write("ca.pem", "CERTIFICATE", caDER); err != nil {
		return nil, err
	}
	_, _, otherDER, err := p.newCA("unrelated test CA")
	if err != nil {
		return nil, err
	}
	if p.OtherCA, err = p.write("other-ca.pem", "CERTIFICATE", otherDER); err != nil {
		return nil, err
	}
	p.caPool = x509.NewCertPool()
	p.caPool.AddCert(p.caCert)
	if p.ServerCert, p.ServerKey, err = p.leaf("server", "etcd", x509.ExtKeyUsageServerAuth, ips); err != nil {
		return nil, err
	}
	if p.ClientCert, p.ClientKey, err = p.leaf("client", "flanneld", x509.ExtKeyUsageClientAuth, nil); err != nil {
		return nil, err
	}
	if p.clientPair, err = tls.LoadX509KeyPair(p.ClientCert, p.ClientKey); err != nil {
		return nil, fmt.Errorf("etcdproc: %w", err)
	}
	return p, nil
}

// ClientTLS trusts the CA and presents the client certificate.
func (p *PKI) ClientTLS() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: p.caPool, Certificates: []tls.Certificate{p.clientPair}}
}

// CAPool holds the CA certificate.
func (p *PKI) CAPool() *x509.CertPool { return p.caPool }

func (p *PKI) nextSerial() *big.Int {
	p.serial++
	return big.NewInt(p.serial)
}

func (p *PKI) newCA(cn string) (*x509.Certificate, *ecdsa.PrivateKey, []byte, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("etcdproc: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: p.nextSerial(), Subject: pkix.Name{CommonName: cn},
		NotBefore: p.notBefore, NotAfter: p.notAfter,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("etcdproc: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("etcdproc: %w", err)
	}
	return cert, k, der, nil
}

func (p *PKI) leaf(name, cn string, usage x509.ExtKeyUsage, ips []net.IP) (certFile, keyFile string, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("etcdproc: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: p.nextSerial(), Subject: pkix.Name{CommonName: cn},
		NotBefore: p.notBefore, NotAfter: p.notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &k.PublicKey, p.caKey)
	if err != nil {
		return "", "", fmt.Errorf("etcdproc: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return "", "", fmt.Errorf("etcdproc: %w", err)
	}
	if certFile, err = p.write(name+".pem", "CERTIFICATE", der); err != nil {
		return "", "", err
	}
	if keyFile, err = p.write(name+"-key.pem", "EC PRIVATE KEY", keyDER); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

func (p *PKI) write(name, typ string, der []byte) (string, error) {
	path := filepath.Join(p.Dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		return "", fmt.Errorf("etcdproc: %w", err)
	}
	return path, nil
}
