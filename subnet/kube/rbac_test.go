package kube

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"

	"github.com/flannel-go/flannel/e2e/kubeproc"
	"github.com/flannel-go/flannel/subnet"
)

const manifestPath = "../../dist/kube-flannel.yml"

// The ClusterRole grants exactly the least privileges upstream's manifest grants.
func TestManifestClusterRoleIsLeastPrivilege(t *testing.T) {
	objs, err := kubeproc.ReadManifest(manifestPath)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	var role *unstructured.Unstructured
	for _, o := range objs {
		kinds = append(kinds, o.GetKind())
		if o.GetKind() == "ClusterRole" {
			role = o
		}
	}
	if got := strings.Join(kinds, ","); got != "Namespace,ServiceAccount,ClusterRole,ClusterRoleBinding,ConfigMap,DaemonSet" {
		t.Fatalf("manifest kinds %s", got)
	}
	rules, _, _ := unstructured.NestedSlice(role.Object, "rules")
	got := map[string][]any{}
	for _, r := range rules {
		m := r.(map[string]any)
		for _, res := range m["resources"].([]any) {
			got[res.(string)] = m["verbs"].([]any)
		}
		if g := m["apiGroups"].([]any); len(g) != 1 || g[0] != "" {
			t.Errorf("rule outside the core group: %v", m)
		}
	}
	want := map[string][]any{"pods": {"get"}, "nodes": {"get", "list", "watch"}, "nodes/status": {"patch"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ClusterRole rules %v, want %v", got, want)
	}
}

// The manifest names only our image and passes a dry-run apply; a service account bound
// by its ClusterRole can do all the manager does; one unbound gets an error naming the fix.
func TestIntegrationManifestAndRBAC(t *testing.T) {
	objs, err := kubeproc.ReadManifest(manifestPath)
	if err != nil {
		t.Fatal(err)
	}
	images := kubeproc.PodImages(objs)
	if len(images) != 3 {
		t.Errorf("manifest containers %v, want the two init containers and flanneld", images)
	}
	for _, c := range images {
		if c.Image != kubeproc.Image {
			t.Errorf("%s container %s runs %q, want only our image %q", c.Object, c.Container, c.Image, kubeproc.Image)
		}
	}
	k := apiserver(t)
	cs := adminClient(t, k)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := kubeproc.ApplyManifest(ctx, k.API.RESTConfig(""), manifestPath, false); err != nil {
		t.Fatal(err)
	}
	cm, err := cs.CoreV1().ConfigMaps("kube-flannel").Get(ctx, "kube-flannel-cfg", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := subnet.ParseConfig(cm.Data["net-conf.json"]); err != nil {
		t.Fatalf("the manifest's net-conf.json does not validate: %v", err)
	}
	token, err := kubeproc.ServiceAccountToken(ctx, cs, "kube-flannel", "flannel")
	if err != nil {
		t.Fatal(err)
	}
	own, peer := uniq(t, "own"), uniq(t, "peer")
	createNode(t, cs, own, []string{"10.244.20.0/24"}, nil)
	createNode(t, cs, peer, []string{"10.244.21.0/24"}, peerAnn("192.0.2.31", "0e:00:00:00:00:31"))
	pod := uniq(t, "pod")
	if err := kubeproc.CreatePodOnNode(ctx, cs, "kube-flannel", pod, own, "flannel"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.CoreV1().Pods("kube-flannel").Delete(context.Background(), pod, metav1.DeleteOptions{}) })

	m := newManager(t, k, token, Config{PodName: pod, PodNamespace: "kube-flannel", NetConfigPath: writeNetConf(t, cm.Data["net-conf.json"]), SetNodeNetworkUnavailable: true})
	cfg, err := m.GetNetworkConfig(ctx)
	if err != nil {
		t.Fatalf("GetNetworkConfig as the flannel service account: %v", err)
	}
	if m.Name() != "Kubernetes Subnet Manager - "+own {
		t.Errorf("Name() = %q", m.Name())
	}
	l, err := m.AcquireLease(ctx, cfg, vxlanAttrs("192.0.2.30", "0e:00:00:00:00:30"))
	if err != nil {
		t.Fatalf("AcquireLease as the flannel service account: %v", err)
	}
	if l.Subnet.String() != "10.244.20.0/24" {
		t.Fatalf("lease %v", l.Subnet)
	}
	wctx, wcancel := context.WithCancel(ctx)
	out := make(chan subnet.WatchResult, 4)
	done := make(chan error, 2)
	go func() { done <- m.WatchLeases(wctx, out) }()
	go func() { done <- m.KeepLease(wctx, l) }()
	r := watchNext(t, out)
	found := false
	for _, c := range r.Snapshot {
		found = found || c.Lease.Key() == "10.244.21.0-24"
	}
	if !found {
		t.Errorf("peer missing from the snapshot seen by the flannel service account: %+v", r)
	}
	waitCondition(t, cs, own)
	wcancel()
	for range 2 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}

	// Without the ClusterRoleBinding: forbidden, with the fix in the message.
	nobody, err := kubeproc.ServiceAccountToken(ctx, cs, "kube-flannel", "nobody")
	if err != nil {
		t.Fatal(err)
	}
	m2 := newManager(t, k, nobody, Config{NodeName: own, NetConfigPath: writeNetConf(t, itNetConf)})
	_, err = m2.GetNetworkConfig(ctx)
	if err == nil || !strings.Contains(err.Error(), "forbidden") || !strings.Contains(err.Error(), "grant the flannel ClusterRole") {
		t.Fatalf("unbound service account: %v", err)
	}
	m3 := newManager(t, k, "not-a-token", Config{NodeName: own, NetConfigPath: writeNetConf(t, itNetConf)})
	if _, err = m3.GetNetworkConfig(ctx); err == nil || !strings.Contains(err.Error(), "refused the credentials") {
		t.Fatalf("bad token: %v", err)
	}
	// The list asks for protobuf, and refusals come back as a protobuf Status: its message is kept.
	if _, err := m2.cs.listNodes(ctx, metav1.ListOptions{ResourceVersion: "0"}, m2.slimNode); !apierrors.IsForbidden(err) || !strings.Contains(m2.withHint(err).Error(), `nodes is forbidden: User "system:serviceaccount:kube-flannel:nobody" cannot list resource "nodes"`) {
		t.Fatalf("node list by the unbound service account: %v", m2.withHint(err))
	}
	if _, err := m3.cs.listNodes(ctx, metav1.ListOptions{ResourceVersion: "0"}, m3.slimNode); !apierrors.IsUnauthorized(err) || !strings.HasPrefix(m3.withHint(err).Error(), "Unauthorized (the API server "+k.API.URL()+" refused the credentials") {
		t.Fatalf("node list with a bad token: %v", m3.withHint(err))
	}
}

func waitCondition(t *testing.T, cs kubernetes.Interface, name string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, err := cs.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeNetworkUnavailable && c.Status == corev1.ConditionFalse && c.Reason == "FlannelIsUp" {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s: no NetworkUnavailable=False condition: %+v", name, n.Status.Conditions)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// olderRoleRules are the ClusterRole of older manifests, still in use: no "nodes get".
var olderRoleRules = []rbacv1.PolicyRule{
	{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}},
	{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"list", "watch"}},
	{APIGroups: []string{""}, Resources: []string{"nodes/status"}, Verbs: []string{"patch"}},
}

// With an older ClusterRole lacking "nodes get", the manager still does everything: node
// name from the pod, public-ip annotation, PreviousLease, lease, peers, condition.
func TestIntegrationOlderClusterRole(t *testing.T) {
	k := apiserver(t)
	cs := adminClient(t, k)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const ns, sa = "fg-older-role", "flannel"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if err := kubeproc.GrantServiceAccount(ctx, cs, "fg-it-older-role-flannel", olderRoleRules, ns, sa); err != nil {
		t.Fatal(err)
	}
	token, err := kubeproc.ServiceAccountToken(ctx, cs, ns, sa)
	if err != nil {
		t.Fatal(err)
	}
	own, peer := uniq(t, "own"), uniq(t, "peer")
	ownAnn := peerAnn("192.0.2.40", "0e:00:00:00:00:40") // what it advertised before
	ownAnn[testAnn.NodePublicIP] = "192.0.2.40"
	createNode(t, cs, own, []string{"10.244.40.0/24"}, ownAnn)
	createNode(t, cs, peer, []string{"10.244.41.0/24"}, peerAnn("192.0.2.41", "0e:00:00:00:00:41"))
	pod := uniq(t, "pod")
	if err := kubeproc.CreatePodOnNode(ctx, cs, ns, pod, own, sa); err != nil {
		t.Fatal(err)
	}

	m := newManager(t, k, token, Config{PodName: pod, PodNamespace: ns, NetConfigPath: writeNetConf(t, itNetConf), SetNodeNetworkUnavailable: true})
	// The role really lacks the verb a GET of the node needs.
	if err := m.cs.rest.Get().Resource("nodes").Name(own).Do(ctx).Error(); !apierrors.IsForbidden(err) {
		t.Fatalf("GET of the own node with the older role: %v, want forbidden", err)
	}
	cfg, err := m.GetNetworkConfig(ctx)
	if err != nil {
		t.Fatalf("GetNetworkConfig: %v", err)
	}
	if v4, _ := m.PublicIPs("", ""); v4 != "192.0.2.40" {
		t.Errorf("node-public-ip annotation read as %q", v4)
	}
	prev := m.PreviousLease()
	if prev == nil || prev.Subnet.String() != "10.244.40.0/24" || !strings.Contains(string(prev.Attrs.BackendData), "0e:00:00:00:00:40") {
		t.Fatalf("PreviousLease %+v: want the VTEP MAC the node's annotations hold", prev)
	}
	l, err := m.AcquireLease(ctx, cfg, vxlanAttrs("192.0.2.40", "0e:00:00:00:00:40"))
	if err != nil || l.Subnet.String() != "10.244.40.0/24" {
		t.Fatalf("AcquireLease: %v %v", l, err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	out := make(chan subnet.WatchResult, 16)
	done := make(chan error, 2)
	go func() { done <- m.WatchLeases(wctx, out) }()
	go func() { done <- m.KeepLease(wctx, l) }()
	r := watchNext(t, out)
	if keys := leaseKeys(r); !strings.Contains(keys, "10.244.41.0-24") {
		t.Errorf("snapshot %s: the peer is missing", keys)
	}
	go func() {
		for range out {
		}
	}()
	waitCondition(t, cs, own)
	patch := `{"status":{"conditions":[{"type":"NetworkUnavailable","status":"True","reason":"NoRouteCreated","message":"set by a test"}]}}`
	if _, err := cs.CoreV1().Nodes().PatchStatus(ctx, own, []byte(patch)); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, cs, own)
	wcancel()
	for range 2 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}
