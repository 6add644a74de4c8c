package kubeproc

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/flannel-go/flannel/e2e/etcdproc"
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

// The version the tests expect must be the one the tools module builds.
func TestVersionMatchesToolsModule(t *testing.T) {
	data, err := os.ReadFile("../../tools/kube-apiserver/go.mod")
	if err != nil {
		t.Fatal(err)
	}
	// As build.sh reads it.
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == "require" && f[1] == "k8s.io/kubernetes" {
			if f[2] != Version {
				t.Fatalf("tools/kube-apiserver/go.mod requires k8s.io/kubernetes %s, the tests expect %s", f[2], Version)
			}
			return
		}
	}
	t.Fatalf("tools/kube-apiserver/go.mod has no line \"require k8s.io/kubernetes %s\"", Version)
}

func TestStartServeStop(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	Need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	etcd, err := etcdproc.Start(ctx, etcdproc.Options{
		DataDir:   filepath.Join(dir, "etcd"),
		ClientURL: fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
		PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Kill)
	start := time.Now()
	p, err := Start(ctx, Options{Dir: filepath.Join(dir, "kube"), EtcdServers: etcd.Endpoint(), Port: freePort(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop) // runs before etcd.Kill (LIFO)
	t.Logf("kube-apiserver ready in %v", time.Since(start))

	cs, err := kubernetes.NewForConfig(p.RESTConfig(""))
	if err != nil {
		t.Fatal(err)
	}
	v, err := cs.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v.GitVersion != Version {
		t.Errorf("server version %q, want %q", v.GitVersion, Version)
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: corev1.NodeSpec{PodCIDR: "10.244.1.0/24"}}
	if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// A kubeconfig trusting the serving CA reaches the same server.
	kc := filepath.Join(dir, "kubeconfig")
	if err := p.WriteKubeconfig(kc, ""); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	cs2, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got, err := cs2.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Spec.PodCIDR != "10.244.1.0/24" {
		t.Errorf("podCIDR %q", got.Spec.PodCIDR)
	}

	// A wrong token is refused: authentication is real.
	bad, _ := kubernetes.NewForConfig(p.RESTConfig("not-a-token"))
	if _, err := bad.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err == nil {
		t.Error("listing nodes with a bogus token succeeded")
	}

	pid := p.PID()
	p.Stop()
	if p.PID() != 0 {
		t.Error("PID after Stop")
	}
	if err := syscallKill0(pid); err == nil {
		t.Errorf("kube-apiserver pid %d still alive after Stop", pid)
	}
}

func syscallKill0(pid int) error {
	proc, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return proc.Signal(syscall.Signal(0))
}
