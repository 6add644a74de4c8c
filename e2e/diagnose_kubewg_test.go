package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/flannel-go/flannel/diagnose"
)

// backendDataAnnotation is the Node annotation with the wireguard backend's public key.
const backendDataAnnotation = "flannel.alpha.coreos.com/backend-data"

// diagnose in Kubernetes mode against the real kube-apiserver, on a wireguard cluster
// (userspace): pods on three nodes ping each other and every node passes its wireguard
// checks. Node 3's annotation advertising a key node 3 does not hold makes diagnose on
// node 1 fail the handshake check naming node 3 and the key, and on node 3 the device
// check; the annotation restored, every node passes again.
func TestDiagnoseKubeWireguard(t *testing.T) {
	k := startKubeWireguard(t, "diagkwg", 3)
	pubs := map[int]string{}
	for i := 1; i <= 3; i++ {
		_, pubs[i] = wgKeys(t, k.Lab, i)
	}
	holds := func(i int, want ...string) {
		t.Helper()
		waitFor(t, convergeTimeout, fmt.Sprintf("node %d's flannel-wg peers", i), func() (bool, string) {
			peers, err := wgPeers(k.Lab, i, "flannel-wg")
			if err != nil {
				return false, err.Error()
			}
			for _, w := range want {
				if _, ok := peers[w]; !ok {
					return false, fmt.Sprintf("no peer %s in %v", w, peers)
				}
			}
			return len(peers) == len(want), fmt.Sprintf("%v", peers)
		})
	}
	for i := 1; i <= 3; i++ {
		var others []string
		for j := 1; j <= 3; j++ {
			if j != i {
				others = append(others, pubs[j])
			}
		}
		holds(i, others...)
	}
	pingMesh(t, k.Lab, addPods(t, k.Lab))

	cni := cniConfDir(t)
	diag := func(i int) diagnosis {
		return wgDiagnoseNode(t, k.Lab, i, cni, k.kubeArgs(), "NODE_NAME="+kubeNodeName(i))
	}
	for i := 1; i <= 3; i++ {
		d := wgWantHealthy(t, i, diag)
		wgChecksPass(t, i, d)
		if i == 1 {
			t.Logf("node 1 healthy:\n%s", d.text())
		}
	}

	// Node 3's annotation advertises a key node 3 does not hold. A daemon writes its own
	// annotations when it starts (or its key changes), so the fault stays until repaired.
	wrong, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	good := k.node(t, 3).Annotations[backendDataAnnotation]
	if !strings.Contains(good, pubs[3]) {
		t.Fatalf("node 3's %s %q lacks its key %s", backendDataAnnotation, good, pubs[3])
	}
	annotate := func(v string) {
		t.Helper()
		patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{backendDataAnnotation: v}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := k.cs.CoreV1().Nodes().Patch(context.Background(), kubeNodeName(3), types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	annotate(strings.ReplaceAll(good, pubs[3], wrong.PublicKey().String()))
	holds(1, pubs[2], wrong.PublicKey().String())

	d := diag(1)
	wantFault(t, d, diagnose.CheckWGHandshakes, "no handshake with key "+wrong.PublicKey().String(), k.NodeIP(3).String())
	if c := d.check(diagnose.CheckWGHandshakes); !strings.Contains(c.Evidence, k.NodeIP(3).String()) ||
		strings.Contains(c.Evidence, k.NodeIP(2).String()) {
		t.Errorf("%s evidence %q: want node 3 named, node 2 not", diagnose.CheckWGHandshakes, c.Evidence)
	}
	if slices.ContainsFunc(d.failed(), func(n string) bool {
		return n != diagnose.CheckWGHandshakes && n != diagnose.CheckPeerOverlay
	}) {
		t.Errorf("more checks failed than the handshakes and the overlay: %v\n%s", d.failed(), d.text())
	}
	wantFault(t, diag(3), diagnose.CheckDevice, "want the lease's "+wrong.PublicKey().String(), "")

	annotate(good)
	holds(1, pubs[2], pubs[3])
	for i := 1; i <= 3; i++ {
		wgWantHealthy(t, i, diag)
	}
}
