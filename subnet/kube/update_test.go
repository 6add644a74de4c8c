package kube

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flannel-go/flannel/subnet"
)

// UpdateLeaseAttrs patches the backend annotations (a rotated key), keeping the subnet.
func TestIntegrationUpdateLeaseAttrs(t *testing.T) {
	k := apiserver(t)
	cs := adminClient(t, k)
	ctx := context.Background()
	name := uniq(t, "n1")
	createNode(t, cs, name, []string{"10.244.1.0/24"}, nil)
	m := newManager(t, k, "", Config{NodeName: name, NetConfigPath: writeNetConf(t, itNetConf)})
	cfg, err := m.GetNetworkConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l, err := m.AcquireLease(ctx, cfg, vxlanAttrs("192.0.2.11", "0e:11:22:33:44:55"))
	if err != nil {
		t.Fatal(err)
	}
	next := vxlanAttrs("192.0.2.11", "0e:11:22:33:44:66")
	nl, err := m.UpdateLeaseAttrs(ctx, cfg, l, next)
	if err != nil {
		t.Fatal(err)
	}
	if nl.Subnet != l.Subnet || string(nl.Attrs.BackendData) != string(next.BackendData) {
		t.Fatalf("lease %+v", nl)
	}
	n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := n.Annotations["flannel.alpha.coreos.com/backend-data"]; got != `{"VNI":1,"VtepMAC":"0e:11:22:33:44:66"}` {
		t.Errorf("backend-data annotation %s", got)
	}
	var _ subnet.AttrsUpdater = m
}
