package dist_test

import (
	"testing"

	"github.com/flannel-go/flannel/e2e/kubeproc"
)

// cniConfDir is where the install-cni init container writes the conflist and the default
// of `flanneld diagnose --cni-conf-dir`.
const cniConfDir = "/etc/cni/net.d"

// `flanneld diagnose`, run in the kube-flannel container, reads the node's CNI configs:
// that container mounts, read-only at diagnose's default --cni-conf-dir, the host
// directory the install-cni init container installs the conflist into.
func TestManifestFlannelContainerSeesCNIConfigs(t *testing.T) {
	objs, err := kubeproc.ReadManifest("kube-flannel.yml")
	if err != nil {
		t.Fatal(err)
	}
	mounts := map[string]kubeproc.HostMount{}
	for _, m := range kubeproc.PodHostMounts(objs) {
		if m.MountPath == cniConfDir {
			mounts[m.Container] = m
		}
	}
	install, ok := mounts["install-cni"]
	if !ok || install.ReadOnly {
		t.Fatalf("install-cni mounts %s as %+v (found: %v), want a writable hostPath", cniConfDir, install, ok)
	}
	if got := mounts["kube-flannel"]; got.HostPath != install.HostPath || !got.ReadOnly {
		t.Errorf("kube-flannel mounts %s as %+v, want host %s read-only, as install-cni writes it", cniConfDir, got, install.HostPath)
	}
}
