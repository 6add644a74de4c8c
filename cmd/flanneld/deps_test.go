package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// The daemon links client-go's REST client, clientcmd and tools/cache, but neither the
// typed clientset nor the API types of k8s.io/api with their scheme: those register
// every API type at start, megabytes of memory on every node (subnet/kube's package
// comment). This holds for every feature added later.
func TestDaemonLinksNoClientsetOrAPIScheme(t *testing.T) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if p, err := exec.LookPath("go"); err == nil {
		goBin = p
	}
	out, err := exec.Command(goBin, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	linked := map[string]bool{}
	for _, p := range deps {
		linked[p] = true
		switch {
		case p == "k8s.io/client-go/kubernetes" || strings.HasPrefix(p, "k8s.io/client-go/kubernetes/"):
			t.Errorf("flanneld links the typed clientset: %s", p)
		case strings.HasPrefix(p, "k8s.io/api/"):
			t.Errorf("flanneld links the API types: %s", p)
		}
	}
	for _, p := range []string{"k8s.io/client-go/rest", "k8s.io/client-go/tools/clientcmd", "k8s.io/client-go/tools/cache"} {
		if !linked[p] {
			t.Errorf("%s is not linked: the Kubernetes client is not client-go's (or go list failed silently)", p)
		}
	}
}
