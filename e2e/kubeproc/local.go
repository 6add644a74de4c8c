package kubeproc

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/flannel-go/flannel/e2e/etcdproc"
)

// Need skips the test when etcd or kube-apiserver is missing; with $CI=true it fails.
func Need(tb testing.TB) {
	tb.Helper()
	var missing []error
	if _, err := etcdproc.Binary(); err != nil {
		missing = append(missing, err)
	}
	if _, err := Binary(); err != nil {
		missing = append(missing, err)
	}
	if len(missing) == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		tb.Fatalf("CI=true but a test dependency is missing: %v", missing)
	}
	tb.Skipf("skipping: needs a real etcd and kube-apiserver: %v", missing)
}

// Local is an etcd and a kube-apiserver on 127.0.0.1 (free ports).
type Local struct {
	Etcd *etcdproc.Proc
	API  *Proc
}

// StartLocal starts etcd and then kube-apiserver (authorization Node,RBAC) under dir.
func StartLocal(ctx context.Context, dir string) (*Local, error) {
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	etcd, err := etcdproc.Start(ctx, etcdproc.Options{
		DataDir:   filepath.Join(dir, "etcd"),
		ClientURL: fmt.Sprintf("http://127.0.0.1:%d", ports[0]),
		PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
	})
	if err != nil {
		return nil, err
	}
	api, err := Start(ctx, Options{Dir: filepath.Join(dir, "kube"), EtcdServers: etcd.Endpoint(), Port: ports[2]})
	if err != nil {
		etcd.Kill()
		return nil, err
	}
	return &Local{Etcd: etcd, API: api}, nil
}

// Stop stops the apiserver, then etcd.
func (l *Local) Stop() {
	l.API.Stop()
	l.Etcd.Kill()
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("kubeproc: free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
