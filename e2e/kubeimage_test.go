package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flannel-go/flannel/e2e/cnikit"
	"github.com/flannel-go/flannel/e2e/imagekit"
	"github.com/flannel-go/flannel/e2e/kubeproc"
)

// A node as the DaemonSet of dist/kube-flannel.yml makes it, with the image this
// repository builds: flanneld in Kubernetes mode against the real kube-apiserver (the
// manifest's ConfigMap and RBAC), then the DaemonSet's init containers' commands run with
// the image's installer from its unpacked root filesystem, their volumes mapped to a
// temporary directory per node (never the host's /opt/cni or /etc/cni), and pods on two
// nodes attached through libcni with the plugin and the conflist so installed.
func TestKubeImageCNI(t *testing.T) {
	imagekit.Need(t)
	plugins := cnikit.Need(t)
	k := newKubeLab(t, "kimg", 2)
	root := unpackedImage(t)
	ctx := context.Background()
	ds, err := k.cs.AppsV1().DaemonSets("kube-flannel").Get(ctx, "kube-flannel-ds", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm, err := k.cs.CoreV1().ConfigMaps("kube-flannel").Get(ctx, "kube-flannel-cfg", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		k.registerNode(t, i, fmt.Sprintf("10.244.%d.0/24", i))
		k.start(t, i)
	}
	for i := 1; i <= 2; i++ {
		if _, err := k.WaitSubnetEnv(i, startTimeout); err != nil {
			t.Fatal(err)
		}
	}
	waitFullMesh(t, k.Lab, "flannel.1", infos(t, k.Lab, "flannel.1"))

	n1, n2 := imageCNINode(t, k, 1, root, plugins, ds, cm), imageCNINode(t, k, 2, root, plugins, ds, cm)
	p1, p2 := n1.mustAdd(0), n2.mustAdd(0)
	for i, p := range []cniPod{p1, p2} {
		if want := netip.MustParsePrefix(fmt.Sprintf("10.244.%d.0/24", i+1)); !want.Contains(p.ip) {
			t.Errorf("pod on node %d has %s, outside the node's pod CIDR %s", i+1, p.ip, want)
		}
	}
	if err := k.Ping(p1.ns, p2.ip); err != nil {
		t.Errorf("pod on node 1 -> pod on node 2: %v", err)
	}
	if err := k.Ping(p2.ns, p1.ip); err != nil {
		t.Errorf("pod on node 2 -> pod on node 1: %v", err)
	}
	// The manifest's conflist is at cniVersion 0.3.1, as upstream's, which has no CHECK.
	for j, n := range []*cniNode{n1, n2} {
		if err := n.del(0); err != nil {
			t.Errorf("node %d: DEL: %s", n.i, cniErrorText(err))
		}
		n.expectGone(0, []cniPod{p1, p2}[j], true)
	}
}

// unpackedImage builds the image (make image) and returns its unpacked root filesystem.
func unpackedImage(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	archive := filepath.Join(dir, "flannel.oci.tar")
	name, _, _ := strings.Cut(kubeproc.Image, ":")
	remove, err := imagekit.Build(ctx, "..", fmt.Sprintf("%s:e2e%d", name, os.Getpid()), "v0.0.0-e2e", archive)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := remove(); err != nil {
			t.Error(err)
		}
	})
	img, err := imagekit.ReadArchive(archive)
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "rootfs")
	if err := img.Unpack(root); err != nil {
		t.Fatal(err)
	}
	return root
}

// imageCNINode runs the DaemonSet's init containers for node i: each command with the
// image's programs, paths inside a volume mount mapped to the node's directory (a
// hostPath volume below it, the ConfigMap's files written there), other paths to the
// image's root filesystem. The ConfigMap's conflist gets the node's subnet file and data
// directories, which on a real node are the defaults. It returns the CNI runtime of the
// node using what was installed: CNI_PATH is the installed plugin directory (plus the
// reference plugins), the network config is read from the installed config directory.
func imageCNINode(t *testing.T, k *kubeLab, i int, image, plugins string, ds *appsv1.DaemonSet, cm *corev1.ConfigMap) *cniNode {
	t.Helper()
	nodeRoot := filepath.Join(t.TempDir(), fmt.Sprintf("node%d", i))
	n := &cniNode{t: t, l: k.Lab, i: i, dir: nodeRoot,
		dataDir: filepath.Join(nodeRoot, "var/lib/cni/flannel"), ipamDir: filepath.Join(nodeRoot, "var/lib/cni/networks")}
	data := map[string]string{}
	for key, v := range cm.Data {
		data[key] = v
	}
	data["cni-conf.json"] = withNodePaths(t, data["cni-conf.json"], k.SubnetEnvPath(i), n.dataDir, n.ipamDir)

	spec := ds.Spec.Template.Spec
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
	}
	if len(spec.InitContainers) != 2 {
		t.Fatalf("DaemonSet has %d init containers, want 2", len(spec.InitContainers))
	}
	var hostPaths []string
	for _, c := range spec.InitContainers {
		// host maps a path inside container c to the node's directory or the image.
		host := func(p string) string {
			var best *corev1.VolumeMount
			for j, m := range c.VolumeMounts {
				mp := strings.TrimSuffix(m.MountPath, "/")
				if (p == mp || strings.HasPrefix(p, mp+"/")) && (best == nil || len(mp) > len(strings.TrimSuffix(best.MountPath, "/"))) {
					best = &c.VolumeMounts[j]
				}
			}
			if best == nil {
				return filepath.Join(image, p)
			}
			rel := strings.TrimPrefix(p, strings.TrimSuffix(best.MountPath, "/"))
			v := volumes[best.Name]
			switch {
			case v.HostPath != nil:
				return filepath.Join(nodeRoot, v.HostPath.Path, rel)
			case v.ConfigMap != nil:
				dir := filepath.Join(nodeRoot, "configmap", v.ConfigMap.Name)
				for key, val := range data {
					if err := os.MkdirAll(dir, 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(filepath.Join(dir, key), []byte(val), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				return filepath.Join(dir, rel)
			}
			t.Fatalf("init container %s: volume %s is neither hostPath nor configMap", c.Name, best.Name)
			return ""
		}
		cmd := append(append([]string{}, c.Command...), c.Args...)
		if len(cmd) != 3 || cmd[0] != "/opt/bin/install-conf" {
			t.Fatalf("init container %s runs %q, want /opt/bin/install-conf SOURCE DESTINATION", c.Name, cmd)
		}
		src, dst := host(cmd[1]), host(cmd[2])
		if !strings.HasPrefix(dst, nodeRoot+"/") {
			t.Fatalf("init container %s installs %s outside its volumes", c.Name, cmd[2])
		}
		if out, err := exec.Command(host(cmd[0]), src, dst).CombinedOutput(); err != nil {
			t.Fatalf("node %d: init container %s: %s %s %s: %v\n%s", i, c.Name, cmd[0], src, dst, err, out)
		}
		want, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(dst); err != nil || string(got) != string(want) {
			t.Fatalf("node %d: %s holds %d bytes (%v), want the %d of %s", i, dst, len(got), err, len(want), src)
		}
		hostPaths = append(hostPaths, dst)
	}
	n.binDir = filepath.Join(nodeRoot, "opt/cni/bin")
	confDir := filepath.Join(nodeRoot, "etc/cni/net.d")
	want := []string{filepath.Join(n.binDir, "flannel"), filepath.Join(confDir, "10-flannel.conflist")}
	if strings.Join(hostPaths, " ") != strings.Join(want, " ") {
		t.Fatalf("node %d: the init containers installed %v, want %v", i, hostPaths, want)
	}
	if fi, err := os.Stat(want[0]); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("node %d: installed plugin: %v, %v", i, fi, err)
	}
	if err := cnikit.BinDir(n.binDir, plugins, []string{"bridge", "host-local", "portmap", "loopback"}); err != nil {
		t.Fatal(err)
	}
	net, err := libcni.LoadNetworkConf(confDir, cniNetwork)
	if err != nil {
		t.Fatalf("node %d: the installed network config: %v", i, err)
	}
	if len(net.Plugins) != 2 || net.Plugins[0].Network.Type != "flannel" || net.Plugins[1].Network.Type != "portmap" {
		t.Fatalf("node %d: installed conflist %s", i, net.Bytes)
	}
	n.net = net
	n.exec = &cnikit.NetnsExec{NS: k.NodeNS(i)}
	n.cni = libcni.NewCNIConfigWithCacheDir([]string{n.binDir}, filepath.Join(nodeRoot, "var/lib/cni/cache"), n.exec)
	n.lo = n.confList(`{"cniVersion":"1.1.0","name":"lo","plugins":[{"type":"loopback"}]}`)
	return n
}

// withNodePaths returns the conflist with the flannel plugin's subnetFile, dataDir and
// ipam dataDir set.
func withNodePaths(t *testing.T, conflist, subnetFile, dataDir, ipamDir string) string {
	t.Helper()
	var c map[string]any
	if err := json.Unmarshal([]byte(conflist), &c); err != nil {
		t.Fatalf("cni-conf.json: %v", err)
	}
	ps, _ := c["plugins"].([]any)
	found := false
	for _, p := range ps {
		m, _ := p.(map[string]any)
		if m["type"] == "flannel" {
			m["subnetFile"], m["dataDir"], m["ipam"] = subnetFile, dataDir, map[string]any{"dataDir": ipamDir}
			found = true
		}
	}
	if !found {
		t.Fatalf("cni-conf.json has no flannel plugin: %s", conflist)
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
