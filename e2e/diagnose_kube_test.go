package e2e

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flannel-go/flannel/diagnose"
)

// diagnoseKube runs flanneld diagnose in Kubernetes mode on node i, with the daemon's
// flags and NODE_NAME.
func (k *kubeLab) diagnose(t *testing.T, i int, cni string) diagnosis {
	t.Helper()
	argv := toolCommand(k.Lab, i, "diagnose", append(k.kubeArgs(), "--peers=all", "--cni-conf-dir="+cni)...)
	return runDiagnoseArgv(t, argv, "NODE_NAME="+kubeNodeName(i))
}

// wantKubeHealthy polls diagnose on node i until it passes.
func (k *kubeLab) wantHealthy(t *testing.T, i int, cni string) {
	t.Helper()
	var d diagnosis
	deadline := time.Now().Add(convergeTimeout)
	for {
		if d = k.diagnose(t, i, cni); d.code == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %d: diagnose does not pass on the healthy cluster:\n%s", i, d.text())
		}
		time.Sleep(2 * time.Second)
	}
}

// waitKubeFault polls diagnose on node i until check fails (the API server applies an
// RBAC change within moments), and returns that run.
func (k *kubeLab) waitFault(t *testing.T, i int, cni, check string) diagnosis {
	t.Helper()
	var d diagnosis
	deadline := time.Now().Add(convergeTimeout)
	for {
		if d = k.diagnose(t, i, cni); d.check(check).Outcome == diagnose.Failed || time.Now().After(deadline) {
			return d
		}
		time.Sleep(time.Second)
	}
}

// In Kubernetes mode against the real kube-apiserver: diagnose passes on a healthy
// three-node cluster, and names a node without a pod CIDR and a ClusterRole without
// nodes/status patch, passing again after each repair.
func TestDiagnoseKube(t *testing.T) {
	k := newKubeLab(t, "diagk", 3)
	ctx := context.Background()
	cni := cniConfDir(t)
	for i := 1; i <= 3; i++ {
		k.registerNode(t, i, fmt.Sprintf("10.244.%d.0/24", i))
		k.start(t, i)
	}
	for i := 1; i <= 3; i++ {
		if _, err := k.WaitSubnetEnv(i, startTimeout); err != nil {
			t.Fatal(err)
		}
	}
	waitFullMesh(t, k.Lab, "flannel.1", infos(t, k.Lab, "flannel.1"))
	for i := 1; i <= 3; i++ {
		if _, err := k.AddPod(i, 0); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("a node without a pod CIDR", func(t *testing.T) {
		k.wantHealthy(t, 3, cni)
		if err := k.StopFlanneld(3); err != nil {
			t.Fatal(err)
		}
		if err := k.cs.CoreV1().Nodes().Delete(ctx, kubeNodeName(3), metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		k.registerNode(t, 3, "")
		k.start(t, 3)
		d := k.waitFault(t, 3, cni, diagnose.CheckKubePodCIDR)
		wantFault(t, d, diagnose.CheckKubePodCIDR, "node lab-n3 has no pod CIDR", "node/lab-n3")
		if fix := d.check(diagnose.CheckKubePodCIDR).Fix; !strings.Contains(fix, "--allocate-node-cidrs=true") || !strings.Contains(fix, "--cluster-cidr") {
			t.Errorf("the fix does not name the controller manager's flags: %q", fix)
		}
		// The repair: the controller manager assigns it.
		n := k.node(t, 3)
		n.Spec.PodCIDR, n.Spec.PodCIDRs = "10.244.3.0/24", []string{"10.244.3.0/24"}
		if _, err := k.cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		k.wantHealthy(t, 3, cni)
	})

	t.Run("RBAC without nodes/status patch", func(t *testing.T) {
		k.wantHealthy(t, 1, cni)
		roles := k.cs.RbacV1().ClusterRoles()
		role, err := roles.Get(ctx, "flannel", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		saved := role.DeepCopy()
		role.Rules = slices.DeleteFunc(role.Rules, func(r rbacv1.PolicyRule) bool { return slices.Contains(r.Resources, "nodes/status") })
		if _, err := roles.Update(ctx, role, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		restored := false
		restore := func() {
			cur, err := roles.Get(ctx, "flannel", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			cur.Rules = saved.Rules
			if _, err := roles.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			restored = true
		}
		defer func() {
			if !restored {
				restore()
			}
		}()
		d := k.waitFault(t, 1, cni, diagnose.CheckKubePermissions)
		wantFault(t, d, diagnose.CheckKubePermissions, "may not patch nodes/status", "patch nodes/status")
		restore()
		k.wantHealthy(t, 1, cni)
	})

	// The leases, decoded from the nodes, this node's marked, the peers judged.
	code, out, all := runCommand(t, toolCommand(k.Lab, 1, "leases", k.kubeArgs()...), "NODE_NAME="+kubeNodeName(1))
	if code != 0 || !regexp.MustCompile(`(?m)^lab-n1 .* own$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^lab-n2 +10\.244\.2\.0/24 .* admitted$`).MatchString(out) {
		t.Errorf("flanneld leases: exit %d\n%s", code, all)
	}
	t.Logf("flanneld leases in Kubernetes mode:\n%s", out)
}
