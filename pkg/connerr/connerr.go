// Package connerr names why a dial or TLS handshake failed, in words an operator acts on;
// Auth and Permission name later refusals in the same vocabulary.
package connerr

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"
)

// Cause is why a connection failed.
type Cause int

// The causes, from the network up.
const (
	Unknown      Cause = iota
	NameNotFound       // the host name does not resolve
	Refused            // the host answered that nothing listens on the port
	Unreachable        // no route to the host or its network
	Timeout            // no answer in time: host down, or packets dropped on the way
	Closed             // the server closed (or reset) the connection early
	// TLS problems.
	TLSUnknownAuthority // the server's certificate is not signed by a CA we trust
	TLSHostname         // the server's certificate is not for the name or address we dialled
	TLSExpired          // the server's certificate has expired or is not valid yet
	TLSBadCertificate   // the server refused our client certificate, or wanted one
	TLSNotTLS           // TLS was spoken to a server that answers in plain text
	TLSOther            // another TLS handshake failure
	PlainToTLS          // plain text was spoken to a server that wants TLS
	// Refusals after the connection is up (named by the protocol's client).
	Auth       // the credentials were refused
	Permission // the credentials are good but lack a permission
)

var words = map[Cause]string{
	Unknown:             "unknown cause",
	NameNotFound:        "the host name does not resolve",
	Refused:             "connection refused (nothing listens on that address and port)",
	Unreachable:         "unreachable (no route to the host)",
	Timeout:             "timeout (no answer: the host is down, or packets to it are dropped)",
	Closed:              "the server closed the connection (stopping, or not taking this client)",
	TLSUnknownAuthority: "TLS: the server's certificate is signed by an unknown authority",
	TLSHostname:         "TLS: the server's certificate is not valid for this host name or address",
	TLSExpired:          "TLS: the server's certificate has expired or is not valid yet",
	TLSBadCertificate:   "TLS: the server refused our client certificate (bad or missing certificate)",
	TLSNotTLS:           "TLS: the server does not speak TLS",
	TLSOther:            "TLS handshake failed",
	PlainToTLS:          "the server speaks TLS, not plain text",
	Auth:                "authentication failed (the credentials were refused)",
	Permission:          "permission denied",
}

// String says what the cause is, in a few words.
func (c Cause) String() string {
	if w, ok := words[c]; ok {
		return w
	}
	return words[Unknown]
}

// IsTLS reports whether the cause is a failed TLS handshake.
func (c Cause) IsTLS() bool { return c >= TLSUnknownAuthority && c <= TLSOther }

// Classify returns the cause of a failed dial or TLS handshake, Unknown if not recognised.
func Classify(err error) Cause {
	if err == nil {
		return Unknown
	}
	var (
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		record    tls.RecordHeaderError
		verify    *tls.CertificateVerificationError
		dns       *net.DNSError
		op        *net.OpError
	)
	switch {
	case errors.As(err, &unknownCA):
		return TLSUnknownAuthority
	case errors.As(err, &hostname):
		return TLSHostname
	case errors.As(err, &invalid):
		if invalid.Reason == x509.Expired {
			return TLSExpired
		}
		return TLSOther
	case errors.As(err, &verify):
		return TLSOther
	case errors.As(err, &record):
		return TLSNotTLS
	case errors.As(err, &op) && op.Op == "remote error":
		// A TLS alert from the server (crypto/tls's alert type is not exported).
		switch msg := op.Err.Error(); {
		case strings.Contains(msg, "bad certificate"), strings.Contains(msg, "certificate required"),
			strings.Contains(msg, "unknown certificate authority"), strings.Contains(msg, "certificate unknown"),
			strings.Contains(msg, "expired certificate"), strings.Contains(msg, "revoked certificate"),
			strings.Contains(msg, "unsupported certificate"):
			return TLSBadCertificate
		}
		return TLSOther
	case errors.As(err, &dns):
		if dns.IsTimeout {
			return Timeout
		}
		return NameNotFound
	case errors.Is(err, syscall.ECONNREFUSED):
		return Refused
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return Unreachable
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT):
		return Timeout
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return Closed
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return Timeout
	}
	return Unknown
}

// Error is a failed connection to an endpoint, with its cause.
type Error struct {
	Endpoint string // as configured, e.g. "https://192.0.2.254:2379"
	Cause    Cause
	Err      error // the error the cause was read from; nil when the cause says it all
}

// Error is "<endpoint>: <cause>", plus the underlying error for TLS causes.
func (e *Error) Error() string {
	var s string
	switch {
	case e.Cause == Unknown && e.Err != nil:
		s = e.Err.Error()
	case e.Cause.IsTLS() && e.Err != nil:
		s = e.Cause.String() + ": " + e.Err.Error()
	default:
		s = e.Cause.String()
	}
	if e.Endpoint != "" {
		s = e.Endpoint + ": " + s
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// Probe connects to address, with a TLS handshake when tc is set, and returns nil or an
// *Error (Endpoint empty); without tc, a server that speaks TLS is PlainToTLS.
func Probe(ctx context.Context, network, address string, tc *tls.Config) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, address)
	if err != nil {
		return &Error{Cause: Classify(err), Err: err}
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	if tc != nil {
		c := tc.Clone()
		if c.ServerName == "" {
			if host, _, err := net.SplitHostPort(address); err == nil {
				c.ServerName = host
			}
		}
		tconn := tls.Client(conn, c)
		if err := tconn.HandshakeContext(ctx); err != nil {
			cause := Classify(err)
			if !cause.IsTLS() && cause != Timeout {
				// The server closed the connection on our hello: not a TLS server.
				cause = TLSNotTLS
			}
			return &Error{Cause: cause, Err: err}
		}
		// TLS 1.3 servers refuse a client certificate after the handshake: read for it.
		_ = conn.SetReadDeadline(time.Now().Add(alertWait))
		if _, err := tconn.Read(make([]byte, 1)); err != nil {
			if cause := Classify(err); cause.IsTLS() {
				return &Error{Cause: cause, Err: err}
			}
		}
		return nil
	}
	// Does the server answer a TLS hello? A plain one closes or says nothing.
	hctx, cancel := context.WithTimeout(ctx, plainProbe)
	defer cancel()
	_ = conn.SetDeadline(time.Now().Add(plainProbe))
	if err := tls.Client(conn, &tls.Config{InsecureSkipVerify: true}).HandshakeContext(hctx); err == nil { //nolint:gosec // only asks whether the server speaks TLS
		return &Error{Cause: PlainToTLS}
	}
	return nil
}

// plainProbe bounds a plain probe's TLS hello; alertWait, the wait for a certificate refusal.
const (
	plainProbe = time.Second
	alertWait  = 300 * time.Millisecond
)
