package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/flannel-go/flannel/e2e/kubeproc"
)

// KubeAPIServerIP is the kube-apiserver's address (StartKubeAPIServer), on br0.
var KubeAPIServerIP = netip.MustParseAddr("192.0.2.253")

// KubeAPIServerPort is its secure port.
const KubeAPIServerPort = 6443

// KubeNS is the namespace of the lab's kube-apiserver.
func (l *Lab) KubeNS() string { return l.opts.Name + "-k8s" }

// KubeAPIServerURL is the apiserver URL as the nodes see it.
func (l *Lab) KubeAPIServerURL() string {
	return fmt.Sprintf("https://%s:%d", KubeAPIServerIP, KubeAPIServerPort)
}

// StartKubeAPIServer starts a real kube-apiserver (Node,RBAC) on the lab's etcd in KubeNS;
// the Proc's RESTConfig dials through that namespace. Close stops it before etcd.
func (l *Lab) StartKubeAPIServer(ctx context.Context) (*kubeproc.Proc, error) {
	l.mu.Lock()
	closed, running, etcd := l.closed, l.kube != nil, l.etcd
	l.mu.Unlock()
	switch {
	case closed:
		return nil, errors.New("lab: closed")
	case running:
		return nil, errors.New("lab: kube-apiserver already started")
	case etcd == nil:
		return nil, errors.New("lab: kube-apiserver needs the lab's etcd")
	}
	ns := l.KubeNS()
	if err := deleteNamespaces(ctx, []string{ns}); err != nil {
		return nil, err
	}
	if err := addNamespace(ctx, ns); err != nil {
		return nil, err
	}
	steps := []ipStep{
		{ns, []string{"link", "set", "lo", "up"}},
		{ns, []string{"link", "add", "eth0", "type", "veth", "peer", "name", "k8s0", "netns", l.SwitchNS()}},
		{l.SwitchNS(), []string{"link", "set", "k8s0", "master", "br0"}},
		{l.SwitchNS(), []string{"link", "set", "k8s0", "up"}},
		{ns, []string{"addr", "add", KubeAPIServerIP.String() + "/24", "dev", "eth0"}},
		{ns, []string{"link", "set", "eth0", "up"}},
	}
	if err := runIPSteps(ctx, steps); err != nil {
		return nil, fmt.Errorf("lab: kube-apiserver namespace: %w", err)
	}
	l.logf("lab %s: starting kube-apiserver on %s inside %s", l.opts.Name, l.KubeAPIServerURL(), ns)
	sctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	p, err := kubeproc.Start(sctx, kubeproc.Options{
		Dir:         filepath.Join(l.opts.WorkDir, "kube-apiserver"),
		EtcdServers: l.EtcdEndpoint(),
		Address:     KubeAPIServerIP,
		Port:        KubeAPIServerPort,
		Netns:       ns,
		Dial:        DialContext(ns),
	})
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		p.Stop()
		return nil, errors.New("lab: closed")
	}
	l.kube = p
	return p, nil
}

// KubeAPIServer is the running kube-apiserver, nil before StartKubeAPIServer.
func (l *Lab) KubeAPIServer() *kubeproc.Proc {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.kube
}

// StartFlanneldEnv is StartFlanneld with extra "NAME=value" environment variables.
func (l *Lab) StartFlanneldEnv(i int, env []string, extraArgs ...string) error {
	return l.startFlanneld(i, l.opts.FlanneldBin, env, extraArgs...)
}
