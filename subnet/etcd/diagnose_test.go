package etcd

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/flannel-go/flannel/e2e/etcdproc"
)

func TestDialAddr(t *testing.T) {
	cases := map[string]string{
		"http://192.0.2.254:2379":       "192.0.2.254:2379",
		"https://etcd.example:2379/":    "etcd.example:2379",
		"https://[2001:db8::1]:2379":    "[2001:db8::1]:2379",
		"192.0.2.254:2379":              "192.0.2.254:2379",
		"unix:///run/etcd.sock":         "unix:///run/etcd.sock",
		"unixs:///run/etcd.sock":        "unix:///run/etcd.sock",
		"unix://localhost:2379":         "unix:localhost:2379",
		"unix:etcd.sock":                "unix:etcd.sock",
		"http://user:pw@192.0.2.1:2379": "192.0.2.1:2379",
	}
	for ep, want := range cases {
		if got := dialAddr(ep); got != want {
			t.Errorf("dialAddr(%q) = %q, want %q", ep, got, want)
		}
	}
	m := &Manager{cfg: Config{Endpoints: []string{"http://192.0.2.1:2379", "http://192.0.2.2:2379"}}}
	if got := m.endpointOf("192.0.2.2:2379"); got != "http://192.0.2.2:2379" {
		t.Errorf("endpointOf = %q", got)
	}
	if got := m.endpointOf("192.0.2.3:2379"); got != "192.0.2.3:2379" {
		t.Errorf("endpointOf an unknown address = %q", got)
	}
}

func closedPort(t *testing.T) string {
	t.Helper()
	return fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
}

func silentServer(t *testing.T) string {
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
			t.Cleanup(func() { c.Close() })
		}
	}()
	return "http://" + ln.Addr().String()
}

// A call without answer names every endpoint and why, grouped by cause.
func TestExplainNoAnswer(t *testing.T) {
	a, b, silent := closedPort(t), closedPort(t), silentServer(t)
	cases := []struct {
		name string
		eps  []string
		want string
	}{
		{"refused", []string{a},
			"reading /coreos.com/network/config from etcd: no answer (context deadline exceeded): " + a + ": connection refused (nothing listens on that address and port)"},
		{"two refused", []string{a, b},
			"no answer (context deadline exceeded): " + a + ", " + b + ": connection refused (nothing listens on that address and port)"},
		{"one silent, one refused", []string{silent, a},
			"no answer (context deadline exceeded): " + silent + ": etcd accepted the connection but did not answer in time (is it without a leader, or overloaded?); " +
				a + ": connection refused (nothing listens on that address and port)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := newManager(t, Config{Endpoints: c.eps})
			_, err := m.GetNetworkConfig(tctx(t, 2*time.Second))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v\nwant it to contain %q", err, c.want)
			}
			if !strings.Contains(err.Error(), context.DeadlineExceeded.Error()) {
				t.Errorf("the client's own error is not kept: %v", err)
			}
		})
	}
}

// TLS problems are named by what is wrong.
func TestExplainTLS(t *testing.T) {
	pki := newPKI(t)
	serverOnly := startEtcdTLS(t, &etcdproc.ServerTLS{CertFile: pki.ServerCert, KeyFile: pki.ServerKey})
	mutual := startEtcdTLS(t, &etcdproc.ServerTLS{CertFile: pki.ServerCert, KeyFile: pki.ServerKey, ClientCAFile: pki.CA})
	ep := serverOnly.Endpoint()
	plain := "http://" + strings.TrimPrefix(ep, "https://")
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"unknown authority", Config{Endpoints: []string{ep}, CAFile: pki.OtherCA},
			"(TLS: the server's certificate is signed by an unknown authority)"},
		{"no client certificate", Config{Endpoints: []string{mutual.Endpoint()}, CAFile: pki.CA},
			mutual.Endpoint() + ": TLS: the server refused our client certificate (bad or missing certificate): "},
		{"plain text to a TLS server", Config{Endpoints: []string{plain}},
			plain + ": the server speaks TLS, not plain text"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := newManager(t, c.cfg)
			_, err := m.GetNetworkConfig(tctx(t, 2*time.Second))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v\nwant it to contain %q", err, c.want)
			}
		})
	}
}

// Refused credentials and missing permissions are named, with what to check.
func TestExplainAuth(t *testing.T) {
	const prefix = "/coreos.com/network"
	p := startEtcd(t)
	raw := rawClient(t, p.Endpoint(), nil)
	ctx := tctx(t, 30*time.Second)
	mustPut(t, raw, prefix+"/config", `{"Network":"10.5.0.0/16"}`)
	for _, step := range []func() error{
		func() error { _, err := raw.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := raw.RoleAdd(ctx, "root"); return err },
		func() error { _, err := raw.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := raw.UserAdd(ctx, "nobody", "pw"); return err },
		func() error { _, err := raw.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil && !strings.Contains(err.Error(), "already exists") {
			t.Fatal(err)
		}
	}
	ep := []string{p.Endpoint()}
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"wrong password", Config{Endpoints: ep, Username: "nobody", Password: "wrong"},
			"(etcd refused the user name or password: check --etcd-username and --etcd-password)"},
		{"no credentials", Config{Endpoints: ep},
			"(etcd has authentication enabled: set --etcd-username and --etcd-password)"},
		{"no permission", Config{Endpoints: ep, Username: "nobody", Password: "pw"},
			"(permission denied: the etcd user's roles must grant readwrite on the prefix /coreos.com/network/)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := newManager(t, c.cfg)
			_, err := m.GetNetworkConfig(tctx(t, 10*time.Second))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v\nwant it to contain %q", err, c.want)
			}
		})
	}
}

// Cancelling the caller's context (Ctrl-C in flanneld diagnose) stops the probes; the
// call's own deadline having passed does not.
func TestExplainProbeFollowsCancel(t *testing.T) {
	silent := silentServer(t)
	m := newManager(t, Config{Endpoints: []string{silent}})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	err := m.explainCall(ctx, context.DeadlineExceeded, nil)
	if err == nil || !strings.Contains(err.Error(), "were interrupted") {
		t.Fatalf("explain after cancel = %v; want the probe cut short, not a full probe", err)
	}
	if ctx.Err() == nil {
		t.Fatal("explain returned before the cancel: the probe did not wait for the silent endpoint")
	}
}
