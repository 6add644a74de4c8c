package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/flannel-go/flannel/e2e/kubeproc"
	"github.com/flannel-go/flannel/e2e/lab"
)

const kubeManifest = "../dist/kube-flannel.yml"

// kubeLab is a lab with a real kube-apiserver, the manifest applied, and a kubeconfig for
// the flannel service account (token from the TokenRequest API, bound by the manifest's
// ClusterRole; authorization Node,RBAC: not an admin credential).
type kubeLab struct {
	*lab.Lab
	cs         kubernetes.Interface // admin, for the test's own checks and set-up
	kubeconfig string               // the flannel service account's
	netConf    string               // net-conf.json taken from the manifest's ConfigMap
}

func newKubeLab(t *testing.T, tag string, nodes int, opts ...func(*lab.Options)) *kubeLab {
	t.Helper()
	needRoot(t)
	kubeproc.Need(t)
	l := newLab(t, tag, nodes, opts...)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	api, err := l.StartKubeAPIServer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("---- kube-apiserver log (%s), last 20 lines:\n%s", api.LogFile(), lab.TailFile(api.LogFile(), 20))
		}
	})
	rc := api.RESTConfig("")
	if err := kubeproc.ApplyManifest(ctx, rc, kubeManifest, false); err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	token, err := kubeproc.ServiceAccountToken(ctx, cs, "kube-flannel", "flannel")
	if err != nil {
		t.Fatal(err)
	}
	k := &kubeLab{Lab: l, cs: cs, kubeconfig: filepath.Join(l.WorkDir(), "flannel.kubeconfig"), netConf: filepath.Join(l.WorkDir(), "net-conf.json")}
	if err := api.WriteKubeconfig(k.kubeconfig, token); err != nil {
		t.Fatal(err)
	}
	cm, err := cs.CoreV1().ConfigMaps("kube-flannel").Get(ctx, "kube-flannel-cfg", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(k.netConf, []byte(cm.Data["net-conf.json"]), 0o644); err != nil {
		t.Fatal(err)
	}
	return k
}

func kubeNodeName(i int) string { return fmt.Sprintf("lab-n%d", i) }

// registerNode creates node i's Node object, with a pod CIDR as the controller manager
// would assign it ("" for none).
func (k *kubeLab) registerNode(t *testing.T, i int, podCIDR string) {
	t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: kubeNodeName(i)}}
	if podCIDR != "" {
		n.Spec.PodCIDR, n.Spec.PodCIDRs = podCIDR, []string{podCIDR}
	}
	if _, err := k.cs.CoreV1().Nodes().Create(context.Background(), n, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// kubeArgs are the Kubernetes-mode flags for the lab's flanneld.
func (k *kubeLab) kubeArgs(extra ...string) []string {
	return append([]string{"--kube-subnet-mgr", "--kubeconfig-file=" + k.kubeconfig, "--net-config-path=" + k.netConf}, extra...)
}

// start runs flanneld on node i, naming the node with NODE_NAME.
func (k *kubeLab) start(t *testing.T, i int, extra ...string) {
	t.Helper()
	if err := k.StartFlanneldEnv(i, []string{"NODE_NAME=" + kubeNodeName(i)}, k.kubeArgs(extra...)...); err != nil {
		t.Fatal(err)
	}
}

func (k *kubeLab) node(t *testing.T, i int) *corev1.Node {
	t.Helper()
	n, err := k.cs.CoreV1().Nodes().Get(context.Background(), kubeNodeName(i), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// restartAsAfterReboot stops node i's flanneld, removes what a reboot removes (the
// vxlan device, the subnet and state files in /run), starts it again and waits for its
// subnet file.
func (k *kubeLab) restartAsAfterReboot(t *testing.T, i int) {
	t.Helper()
	if err := k.StopFlanneld(i); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Exec(k.NodeNS(i), "ip", "link", "del", "flannel.1"); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"subnet.env", "subnet.state.json"} {
		if err := os.Remove(filepath.Join(k.NodeDir(i), f)); err != nil {
			t.Fatal(err)
		}
	}
	k.start(t, i)
	if _, err := k.WaitSubnetEnv(i, startTimeout); err != nil {
		t.Fatal(err)
	}
}

// waitLog waits until node i's flanneld log contains s.
func waitLog(t *testing.T, l *lab.Lab, i int, s string) {
	t.Helper()
	waitFor(t, convergeTimeout, fmt.Sprintf("node %d log line %q", i, s), func() (bool, string) {
		b, _ := os.ReadFile(l.LogPath(i))
		return strings.Contains(string(b), s), "not yet; tail:\n" + l.LogTail(i, 5)
	})
}

// Kubernetes mode end to end: three nodes, the pod CIDRs assigned on the Node objects,
// flanneld with --kube-subnet-mgr and the flannel service account's kubeconfig.
func TestKubeVXLAN(t *testing.T) {
	k := newKubeLab(t, "kube", 3)
	ctx := context.Background()
	k.registerNode(t, 1, "10.244.1.0/24")
	k.registerNode(t, 2, "10.244.2.0/24")
	k.registerNode(t, 3, "") // no pod CIDR yet: flanneld must wait for it

	// Node 1 finds its node through its pod (POD_NAME/POD_NAMESPACE), as in the DaemonSet.
	if err := kubeproc.CreatePodOnNode(ctx, k.cs, "kube-flannel", "kube-flannel-ds-n1", kubeNodeName(1), "flannel"); err != nil {
		t.Fatal(err)
	}
	if err := k.StartFlanneldEnv(1, []string{"POD_NAME=kube-flannel-ds-n1", "POD_NAMESPACE=kube-flannel"}, k.kubeArgs()...); err != nil {
		t.Fatal(err)
	}
	k.start(t, 2)
	k.start(t, 3)

	// Node 3 has no pod CIDR: one clear line naming the fix, and it keeps retrying.
	waitLog(t, k.Lab, 3, `node \"lab-n3\" pod cidr not assigned`)
	waitLog(t, k.Lab, 3, "--allocate-node-cidrs=true")
	if !k.FlanneldRunning(3) {
		t.Fatalf("node 3: flanneld exited on a missing pod CIDR:\n%s", k.LogTail(3, 20))
	}
	n3 := k.node(t, 3)
	n3.Spec.PodCIDR, n3.Spec.PodCIDRs = "10.244.3.0/24", []string{"10.244.3.0/24"}
	if _, err := k.cs.CoreV1().Nodes().Update(ctx, n3, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	for i := 1; i <= 3; i++ {
		env, err := k.WaitSubnetEnv(i, startTimeout)
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("10.244.%d.1/24", i); env["FLANNEL_SUBNET"] != want || env["FLANNEL_NETWORK"] != "10.244.0.0/16" {
			t.Fatalf("node %d subnet.env %v, want FLANNEL_SUBNET=%s in 10.244.0.0/16", i, env, want)
		}
	}
	ns := infos(t, k.Lab, "flannel.1")
	waitFullMesh(t, k.Lab, "flannel.1", ns)
	pods := addPods(t, k.Lab)
	pingMesh(t, k.Lab, pods)

	// net-conf.json rewritten under the running daemons (as kubelet does when the
	// ConfigMap changes): each says what changed and that a restart applies it, and
	// that it is back to the running config when restored.
	orig, err := os.ReadFile(k.netConf)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(k.netConf, []byte(strings.Replace(string(orig), `"vxlan"`, `"host-gw"`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	waitLog(t, k.Lab, 2, `"The network config changed; restart flanneld to apply it (the running config stays until then)" changes=["Backend.Type: vxlan -> host-gw"]`)
	if err := os.WriteFile(k.netConf, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	waitLog(t, k.Lab, 2, `"The network config is the running one again; nothing to apply"`)

	// The annotations, byte for byte as upstream writes them, and the node condition.
	for _, n := range ns {
		node := k.node(t, n.index)
		want := map[string]string{
			"flannel.alpha.coreos.com/kube-subnet-manager": "true",
			"flannel.alpha.coreos.com/backend-type":        "vxlan",
			"flannel.alpha.coreos.com/backend-data":        fmt.Sprintf(`{"VNI":1,"VtepMAC":"%s"}`, n.mac),
			"flannel.alpha.coreos.com/public-ip":           k.NodeIP(n.index).String(),
		}
		for key, v := range want {
			if node.Annotations[key] != v {
				t.Errorf("node %d: annotation %s = %q, want %q", n.index, key, node.Annotations[key], v)
			}
		}
		if len(node.Annotations) != len(want) {
			t.Errorf("node %d: annotations %v, want exactly %v", n.index, node.Annotations, want)
		}
		waitFor(t, convergeTimeout, fmt.Sprintf("node %d NetworkUnavailable=False", n.index), func() (bool, string) {
			for _, c := range k.node(t, n.index).Status.Conditions {
				if c.Type == corev1.NodeNetworkUnavailable {
					return c.Status == corev1.ConditionFalse && c.Reason == "FlannelIsUp" && c.Message == "Flannel is running on this node", fmt.Sprintf("%+v", c)
				}
			}
			return false, "no NetworkUnavailable condition"
		})
	}

	// Updates that change no lease (a label, a kubelet-like status heartbeat) reach
	// every flanneld's informer but must not touch the kernel: netlink shows no change on
	// flannel.1 while it happens.
	var mons []*exec.Cmd
	var outs []*bytes.Buffer
	for i := 1; i <= 3; i++ {
		var b bytes.Buffer
		mon := exec.Command("ip", "-n", k.NodeNS(i), "monitor", "link", "route", "neigh")
		mon.Stdout = &b
		if err := mon.Start(); err != nil {
			t.Fatal(err)
		}
		mons, outs = append(mons, mon), append(outs, &b)
	}
	time.Sleep(500 * time.Millisecond)
	for i := 1; i <= 3; i++ {
		if _, err := k.cs.CoreV1().Nodes().Patch(ctx, kubeNodeName(i), types.MergePatchType,
			[]byte(`{"metadata":{"labels":{"heartbeat":"1"}}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		heartbeat := fmt.Sprintf(`{"status":{"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady","lastHeartbeatTime":%q}]}}`,
			time.Now().UTC().Format(time.RFC3339))
		if _, err := k.cs.CoreV1().Nodes().Patch(ctx, kubeNodeName(i), types.StrategicMergePatchType, []byte(heartbeat), metav1.PatchOptions{}, "status"); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(3 * time.Second)
	for i, mon := range mons {
		_ = mon.Process.Kill()
		_ = mon.Wait()
		for _, line := range strings.Split(outs[i].String(), "\n") {
			if strings.Contains(line, "flannel.1") {
				t.Errorf("node %d: kernel change on flannel.1 after a no-op node update: %s", i+1, line)
			}
		}
	}

	// Restart without the local state (a reboot empties /run; the device is gone too):
	// the VTEP MAC comes back from the node's backend-data annotation, so no peer has to
	// change anything.
	oldMAC := ns[1].mac
	k.restartAsAfterReboot(t, 2)
	n2 := info(t, k.Lab, 2, "flannel.1")
	if n2.mac != oldMAC {
		t.Fatalf("node 2: VTEP MAC %s after the restart, want %s restored from the annotation", n2.mac, oldMAC)
	}
	if got := k.node(t, 2).Annotations["flannel.alpha.coreos.com/backend-data"]; got != fmt.Sprintf(`{"VNI":1,"VtepMAC":"%s"}`, oldMAC) {
		t.Fatalf("node 2: backend-data %s after the restart", got)
	}
	ns[1] = n2
	waitFullMesh(t, k.Lab, "flannel.1", ns)
	pods[1], _ = k.AddPod(2, 0)
	pingMesh(t, k.Lab, pods)

	// Deleting node 3's Node object removes its lease: the peers drop its routes.
	if err := k.cs.CoreV1().Nodes().Delete(ctx, kubeNodeName(3), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{1, 2} {
		waitNoPeer(t, k.Lab, i, "flannel.1", peerOf(k.Lab, ns[2]))
		waitPeers(t, k.Lab, i, "flannel.1", peerOf(k.Lab, ns[2-i])) // the other remaining node
	}
	if err := k.Ping(pods[0].NS, pods[1].IP); err != nil {
		t.Errorf("pod 1 -> pod 2 after node 3 left: %v", err)
	}
	for i := 1; i <= 2; i++ {
		if err := k.StopFlanneld(i); err != nil {
			t.Error(err)
		}
	}
}

// Bad input: which problems flanneld retries (logging the fix) and which end it with a
// non-zero status so that the DaemonSet restarts it (Documentation/kubernetes.md).
func TestKubeBadInput(t *testing.T) {
	k := newKubeLab(t, "kubebad", 1)
	ctx := context.Background()
	k.registerNode(t, 1, "10.99.1.0/24") // outside the manifest's 10.244.0.0/16

	stillRunning := func(what string) {
		t.Helper()
		time.Sleep(3 * time.Second) // several retry rounds
		if !k.FlanneldRunning(1) {
			t.Fatalf("%s: flanneld exited, want it to keep retrying:\n%s", what, k.LogTail(1, 20))
		}
		if err := k.KillFlanneld(1); err != nil {
			t.Fatal(err)
		}
	}

	// Unreachable apiserver: retried.
	bad := filepath.Join(k.WorkDir(), "unreachable.kubeconfig")
	kc, err := os.ReadFile(k.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte(strings.ReplaceAll(string(kc), lab.KubeAPIServerIP.String(), "192.0.2.252")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := k.StartFlanneldEnv(1, []string{"NODE_NAME=" + kubeNodeName(1)}, "--kube-subnet-mgr", "--kubeconfig-file="+bad, "--net-config-path="+k.netConf); err != nil {
		t.Fatal(err)
	}
	waitLog(t, k.Lab, 1, `Couldn't fetch network config; retrying" err="failed to get node \"lab-n1\"`)
	waitLog(t, k.Lab, 1, "(cannot reach the API server, ")
	waitLog(t, k.Lab, 1, ": check --kube-api-url, --kubeconfig-file")
	stillRunning("unreachable apiserver")

	// Missing RBAC permissions (a service account without the binding): retried, the fix named.
	api := k.KubeAPIServer()
	nobody, err := kubeproc.ServiceAccountToken(ctx, k.cs, "kube-flannel", "nobody")
	if err != nil {
		t.Fatal(err)
	}
	noRBAC := filepath.Join(k.WorkDir(), "nobody.kubeconfig")
	if err := api.WriteKubeconfig(noRBAC, nobody); err != nil {
		t.Fatal(err)
	}
	if err := k.StartFlanneldEnv(1, []string{"NODE_NAME=" + kubeNodeName(1)}, "--kube-subnet-mgr", "--kubeconfig-file="+noRBAC, "--net-config-path="+k.netConf); err != nil {
		t.Fatal(err)
	}
	waitLog(t, k.Lab, 1, "grant the flannel ClusterRole of dist/kube-flannel.yml to this service account")
	stillRunning("missing RBAC")

	// Malformed net-conf.json: retried (kubelet updates a mounted ConfigMap in place), and
	// once fixed, the next problem shows: the pod CIDR outside Network ends flanneld.
	if err := os.WriteFile(k.netConf, []byte(`{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	k.start(t, 1)
	waitLog(t, k.Lab, 1, "error parsing subnet config "+k.netConf+": invalid network config JSON")
	time.Sleep(2 * time.Second)
	if !k.FlanneldRunning(1) {
		t.Fatalf("malformed net-conf.json: flanneld exited:\n%s", k.LogTail(1, 20))
	}
	good, _ := json.Marshal(map[string]any{"Network": "10.244.0.0/16", "Backend": map[string]string{"Type": "vxlan"}})
	if err := os.WriteFile(k.netConf, good, 0o644); err != nil {
		t.Fatal(err)
	}
	code, err := k.WaitExit(1, convergeTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if code == 0 {
		t.Fatalf("pod CIDR outside Network: exit status 0, want non-zero:\n%s", k.LogTail(1, 20))
	}
	waitLog(t, k.Lab, 1, `subnet \"10.244.0.0/16\" specified in the flannel net config doesn't contain \"10.99.1.0/24\" PodCIDR of the \"lab-n1\" node`)
}
