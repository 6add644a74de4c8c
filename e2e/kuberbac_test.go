package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/flannel-go/flannel/e2e/kubeproc"
)

// olderRoleRules are the flannel ClusterRole of older manifests, still deployed: pods get;
// nodes list and watch; nodes/status patch. No "nodes get".
var olderRoleRules = []rbacv1.PolicyRule{
	{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}},
	{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"list", "watch"}},
	{APIGroups: []string{""}, Resources: []string{"nodes/status"}, Verbs: []string{"patch"}},
}

// Kubernetes mode under an older manifest's ClusterRole, which lacks "nodes get": a
// service account bound to exactly that role, its TokenRequest token in the kubeconfig,
// RBAC authorization on the real kube-apiserver. Both nodes write their subnet file and
// their pods ping each other; nothing is refused along the way. A restart without the
// local state (a reboot) still brings the VTEP MAC back from the node's annotation.
func TestKubeOlderClusterRole(t *testing.T) {
	k := newKubeLab(t, "kubeold", 2)
	ctx := context.Background()
	const sa = "flannel-older-role"
	if err := kubeproc.GrantServiceAccount(ctx, k.cs, "flannel-older-role", olderRoleRules, "kube-flannel", sa); err != nil {
		t.Fatal(err)
	}
	token, err := kubeproc.ServiceAccountToken(ctx, k.cs, "kube-flannel", sa)
	if err != nil {
		t.Fatal(err)
	}
	kc := filepath.Join(k.WorkDir(), "older-role.kubeconfig")
	if err := k.KubeAPIServer().WriteKubeconfig(kc, token); err != nil {
		t.Fatal(err)
	}
	k.kubeconfig = kc
	for i := 1; i <= 2; i++ {
		k.registerNode(t, i, fmt.Sprintf("10.244.%d.0/24", i))
	}
	// Node 1 finds its node through its pod, as in the DaemonSet (pods get).
	if err := kubeproc.CreatePodOnNode(ctx, k.cs, "kube-flannel", "kube-flannel-ds-old1", kubeNodeName(1), sa); err != nil {
		t.Fatal(err)
	}
	if err := k.StartFlanneldEnv(1, []string{"POD_NAME=kube-flannel-ds-old1", "POD_NAMESPACE=kube-flannel"}, k.kubeArgs()...); err != nil {
		t.Fatal(err)
	}
	k.start(t, 2)
	for i := 1; i <= 2; i++ {
		env, err := k.WaitSubnetEnv(i, startTimeout)
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("10.244.%d.1/24", i); env["FLANNEL_SUBNET"] != want {
			t.Fatalf("node %d: FLANNEL_SUBNET=%s, want %s", i, env["FLANNEL_SUBNET"], want)
		}
	}
	ns := infos(t, k.Lab, "flannel.1")
	waitFullMesh(t, k.Lab, "flannel.1", ns)
	pods := addPods(t, k.Lab)
	pingMesh(t, k.Lab, pods)

	// A reboot empties /run and removes the device: the MAC comes back from the annotation.
	k.restartAsAfterReboot(t, 2)
	if n2 := info(t, k.Lab, 2, "flannel.1"); n2.mac != ns[1].mac {
		t.Errorf("node 2: VTEP MAC %s after the restart, want %s from the annotation", n2.mac, ns[1].mac)
	}
	pingMesh(t, k.Lab, pods)

	for i := 1; i <= 2; i++ {
		b, err := os.ReadFile(k.LogPath(i))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "forbidden") || strings.Contains(line, "Forbidden") {
				t.Errorf("node %d: a request was refused under the older role: %s", i, line)
			}
		}
	}
}
