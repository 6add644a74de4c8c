package kube

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/flannel-go/flannel/e2e/kubeproc"
	"github.com/flannel-go/flannel/subnet"
)

// The inspection reads nodes with the flannel service account's permissions and asks
// the API server what those are.
func TestIntegrationInspect(t *testing.T) {
	k := apiserver(t)
	cs := adminClient(t, k)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := kubeproc.ApplyManifest(ctx, k.API.RESTConfig(""), manifestPath, false); err != nil {
		t.Fatal(err)
	}
	token, err := kubeproc.ServiceAccountToken(ctx, cs, "kube-flannel", "flannel")
	if err != nil {
		t.Fatal(err)
	}
	own, bare, peer := uniq(t, "own"), uniq(t, "bare"), uniq(t, "peer")
	ann := peerAnn("192.0.2.40", "0e:00:00:00:00:40")
	ann[testAnn.PublicIPOverwrite] = "198.51.100.40"
	createNode(t, cs, own, []string{"10.244.40.0/24"}, ann)
	createNode(t, cs, bare, nil, nil)
	createNode(t, cs, peer, []string{"10.244.41.0/24"}, peerAnn("192.0.2.41", "0e:00:00:00:00:41"))
	cfg := &subnet.Config{EnableIPv4: true}

	m := newManager(t, k, token, Config{NodeName: own, NetConfigPath: writeNetConf(t, itNetConf)})
	if v, err := m.ServerVersion(ctx); err != nil || !strings.HasPrefix(v, "v1.") {
		t.Errorf("ServerVersion: %q %v", v, err)
	}
	if m.Server() == "" || strings.Contains(m.Server(), token) {
		t.Errorf("Server: %q", m.Server())
	}
	info, found, err := m.InspectNode(ctx, own, cfg)
	if err != nil || !found || info.Origin.Defect != nil || info.Lease.Subnet.String() != "10.244.40.0/24" ||
		info.Lease.Attrs.PublicIP.String() != "192.0.2.40" || info.PublicIPOverwrite.String() != "198.51.100.40" || info.Origin.Seniority == 0 {
		t.Errorf("InspectNode(own): %+v %v %v", info, found, err)
	}
	info, found, err = m.InspectNode(ctx, bare, cfg)
	if err != nil || !found || len(info.PodCIDRs) != 0 || info.Origin.Defect == nil {
		t.Errorf("InspectNode(bare): %+v %v %v", info, found, err)
	}
	if _, found, err := m.InspectNode(ctx, uniq(t, "absent"), cfg); err != nil || found {
		t.Errorf("InspectNode(absent): %v %v", found, err)
	}
	nodes, err := m.InspectNodes(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, n := range nodes {
		seen[n.Name] = n.Origin.Defect == nil
	}
	if !seen[own] || !seen[peer] || seen[bare] {
		t.Errorf("InspectNodes: %+v", seen)
	}
	for _, tc := range []struct {
		a    Access
		want bool
	}{
		{Access{Verb: "list", Resource: "nodes"}, true},
		{Access{Verb: "patch", Resource: "nodes", Subresource: "status", Name: own}, true},
		{Access{Verb: "delete", Resource: "nodes"}, false},
	} {
		ok, reason, err := m.Allowed(ctx, tc.a)
		if err != nil || ok != tc.want {
			t.Errorf("Allowed(%+v) = %v %q %v, want %v", tc.a, ok, reason, err, tc.want)
		}
	}
	nobody, err := kubeproc.ServiceAccountToken(ctx, cs, "kube-flannel", "nobody")
	if err != nil {
		t.Fatal(err)
	}
	m2 := newManager(t, k, nobody, Config{NodeName: own, NetConfigPath: writeNetConf(t, itNetConf)})
	if ok, _, err := m2.Allowed(ctx, Access{Verb: "list", Resource: "nodes"}); err != nil || ok {
		t.Errorf("Allowed for nobody: %v %v", ok, err)
	}
	if _, _, err := m2.InspectNode(ctx, own, cfg); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Errorf("InspectNode for nobody: %v", err)
	}
}
