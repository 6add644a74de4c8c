package e2e

import (
	"context"
	"fmt"
	"testing"

	"github.com/flannel-go/flannel/e2e/lab"
)

// With --healthz-port, /healthz answers 200 "flanneld is running" and
// /readyz 200 "flanneld is ready" once the subnet file is written; without it
// nothing listens.
func TestHealthEndpoints(t *testing.T) {
	l := newLab(t, "healthz", 2)
	if err := l.PutConfig(context.Background(), vxlanConfig); err != nil {
		t.Fatal(err)
	}
	const port = 8471
	if err := l.StartFlanneld(1, fmt.Sprintf("--healthz-port=%d", port)); err != nil {
		t.Fatal(err)
	}
	if err := l.StartFlanneld(2); err != nil {
		t.Fatal(err)
	}
	ns := l.NodeNS(1)
	get := func(host, path string) (int, string, error) {
		return lab.HTTPGet(context.Background(), ns, fmt.Sprintf("http://%s:%d%s", host, port, path))
	}
	waitFor(t, startTimeout, "/healthz on node 1", func() (bool, string) {
		code, body, err := get(l.NodeIP(1).String(), "/healthz")
		if err != nil {
			return false, err.Error()
		}
		return code == 200 && body == "flanneld is running", fmt.Sprintf("%d %q", code, body)
	})
	if _, err := l.WaitSubnetEnv(1, startTimeout); err != nil {
		t.Fatal(err)
	}
	waitFor(t, convergeTimeout, "/readyz 200 on node 1", func() (bool, string) {
		code, body, err := get(l.NodeIP(1).String(), "/readyz")
		if err != nil {
			return false, err.Error()
		}
		return code == 200 && body == "flanneld is ready", fmt.Sprintf("%d %q", code, body)
	})
	// The default --healthz-ip is 0.0.0.0: loopback answers too.
	if code, body, err := get("127.0.0.1", "/healthz"); err != nil || code != 200 || body != "flanneld is running" {
		t.Errorf("/healthz on 127.0.0.1: %d %q %v", code, body, err)
	}
	// Node 2 runs with --healthz-port=0: no server.
	if _, err := l.WaitSubnetEnv(2, startTimeout); err != nil {
		t.Fatal(err)
	}
	if code, body, err := lab.HTTPGet(context.Background(), l.NodeNS(2), fmt.Sprintf("http://%s:%d/healthz", l.NodeIP(2), port)); err == nil {
		t.Errorf("node 2 answers on %d without --healthz-port: %d %q", port, code, body)
	}
}
