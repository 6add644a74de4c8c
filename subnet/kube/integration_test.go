package kube

// Integration tests against a real kube-apiserver and etcd (Node,RBAC authorization);
// skipped in -short mode or without the binaries (make kube-apiserver), failing if CI=true.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/pager"

	"github.com/flannel-go/flannel/e2e/kubeproc"
	"github.com/flannel-go/flannel/subnet"
)

var integration struct {
	once sync.Once
	dir  string
	kube *kubeproc.Local
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if integration.kube != nil {
		integration.kube.Stop()
	}
	if integration.dir != "" {
		os.RemoveAll(integration.dir)
	}
	os.Exit(code)
}

// apiserver starts (once per test binary) etcd and kube-apiserver and returns them.
func apiserver(t testing.TB) *kubeproc.Local {
	t.Helper()
	if testing.Short() {
		t.Skip("skipped in -short mode: starts etcd and kube-apiserver")
	}
	kubeproc.Need(t)
	integration.once.Do(func() {
		integration.dir, integration.err = os.MkdirTemp("", "fgkube-it-")
		if integration.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		integration.kube, integration.err = kubeproc.StartLocal(ctx, integration.dir)
	})
	if integration.err != nil {
		t.Fatalf("starting etcd and kube-apiserver: %v", integration.err)
	}
	return integration.kube
}

func adminClient(t *testing.T, k *kubeproc.Local) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(k.API.RESTConfig(""))
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func uniq(t testing.TB, s string) string {
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(name) > 40 {
		name = name[len(name)-40:]
	}
	return strings.Trim(name, "-") + "-" + s
}

func createNode(t *testing.T, cs kubernetes.Interface, name string, cidrs []string, ann map[string]string) *corev1.Node {
	t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann}}
	if len(cidrs) > 0 {
		n.Spec.PodCIDR, n.Spec.PodCIDRs = cidrs[0], cidrs
	}
	got, err := cs.CoreV1().Nodes().Create(context.Background(), n, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	return got
}

func writeNetConf(t testing.TB, conf string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "net-conf.json")
	if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const itNetConf = `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`

func newManager(t *testing.T, k *kubeproc.Local, token string, cfg Config) *Manager {
	t.Helper()
	cfg.REST = k.API.RESTConfig(token)
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func vxlanAttrs(ip, mac string) *subnet.LeaseAttrs {
	return &subnet.LeaseAttrs{
		PublicIP:    netip.MustParseAddr(ip),
		BackendType: "vxlan",
		BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"` + mac + `"}`),
	}
}

func TestIntegrationAcquireWritesAnnotationsThroughStatus(t *testing.T) {
	k := apiserver(t)
	cs := adminClient(t, k)
	ctx := context.Background()
	name := uniq(t, "n1")
	createNode(t, cs, name, []string{"10.244.1.0/24"}, map[string]string{"other.example.com/keep": "me"})

	m := newManager(t, k, "", Config{NodeName: name, NetConfigPath: writeNetConf(t, itNetConf)})
	cfg, err := m.GetNetworkConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.BackendType != "vxlan" || cfg.SubnetLen != 24 {
		t.Fatalf("config %+v", cfg)
	}
	if m.PreviousLease() != nil {
		t.Fatal("previous lease on a node without flannel annotations")
	}
	attrs := vxlanAttrs("192.0.2.11", "0e:11:22:33:44:55")
	l, err := m.AcquireLease(ctx, cfg, attrs)
	if err != nil {
		t.Fatal(err)
	}
	if l.Subnet.String() != "10.244.1.0/24" || l.Attrs.PublicIP != attrs.PublicIP || !l.EnableIPv4 || l.EnableIPv6 {
		t.Fatalf("lease %+v", l)
	}
	n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"flannel.alpha.coreos.com/kube-subnet-manager": "true",
		"flannel.alpha.coreos.com/backend-type":        "vxlan",
		"flannel.alpha.coreos.com/backend-data":        `{"VNI":1,"VtepMAC":"0e:11:22:33:44:55"}`,
		"flannel.alpha.coreos.com/public-ip":           "192.0.2.11",
		"other.example.com/keep":                       "me",
	}
	if len(n.Annotations) != len(want) {
		t.Errorf("annotations %v, want %v", n.Annotations, want)
	}
	for k, v := range want {
		if n.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, n.Annotations[k], v)
		}
	}
	// The write went through the status subresource, as upstream's does.
	viaStatus := false
	for _, mf := range n.ManagedFields {
		if mf.Operation == metav1.ManagedFieldsOperationUpdate && mf.Subresource == "status" &&
			strings.Contains(string(mf.FieldsV1.GetRawBytes()), "flannel.alpha.coreos.com/backend-data") {
			viaStatus = true
		}
	}
	if !viaStatus {
		t.Errorf("annotations not written through nodes/status: managedFields %+v", n.ManagedFields)
	}

	if _, err := m.AcquireLease(ctx, cfg, attrs); err != nil {
		t.Fatal(err)
	}
	n2, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n2.ResourceVersion != n.ResourceVersion {
		t.Errorf("unchanged attributes patched the node again (resourceVersion %s -> %s)", n.ResourceVersion, n2.ResourceVersion)
	}

	// A new manager (a restart without a state file) finds the advertised MAC.
	m2 := newManager(t, k, "", Config{NodeName: name, NetConfigPath: writeNetConf(t, itNetConf)})
	if _, err := m2.GetNetworkConfig(ctx); err != nil {
		t.Fatal(err)
	}
	prev := m2.PreviousLease()
	if prev == nil || prev.Attrs.BackendType != "vxlan" || string(prev.Attrs.BackendData) != `{"VNI":1,"VtepMAC":"0e:11:22:33:44:55"}` ||
		prev.Subnet.String() != "10.244.1.0/24" {
		t.Fatalf("previous lease %+v", prev)
	}
}

func TestIntegrationPublicIPOverwriteAndNodePublicIP(t *testing.T) {
	k := apiserver(t)
	cs := adminClient(t, k)
	ctx := context.Background()
	name := uniq(t, "n1")
	createNode(t, cs, name, []string{"10.244.2.0/24"}, map[string]string{
		"example.com/public-ip-overwrite": "203.0.113.7",
		"example.com/node-public-ip":      "192.0.2.99",
	})
	m := newManager(t, k, "", Config{NodeName: name, NetConfigPath: writeNetConf(t, itNetConf), AnnotationPrefix: "example.com"})
	cfg, err := m.GetNetworkConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v4, v6 := m.NodePublicIPs(); v4 != "192.0.2.99" || v6 != "" {
		t.Fatalf("node-public-ip %q %q", v4, v6)
	}
	l, err := m.AcquireLease(ctx, cfg, vxlanAttrs("192.0.2.99", "0e:00:00:00:00:02"))
	if err != nil {
		t.Fatal(err)
	}
	if l.Attrs.PublicIP.String() != "192.0.2.99" {
		t.Errorf("own lease public IP %v: the lease keeps the local address, only the annotation is overwritten", l.Attrs.PublicIP)
	}
	n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := n.Annotations["example.com/public-ip"]; got != "203.0.113.7" {
		t.Errorf("public-ip annotation %q, want the overwrite 203.0.113.7", got)
	}
	if _, ok := n.Annotations["flannel.alpha.coreos.com/public-ip"]; ok {
		t.Error("default-prefix annotation written with a custom prefix")
	}
}

func TestIntegrationPodCIDRProblems(t *testing.T) {
	k := apiserver(t)
	cs := adminClient(t, k)
	ctx := context.Background()
	tests := []struct {
		name      string
		cidrs     []string
		conf      string
		want      []string
		permanent bool
	}{
		{"none", nil, itNetConf, []string{"pod cidr not assigned", "--allocate-node-cidrs=true", "--cluster-cidr"}, false},
		{"outside", []string{"10.99.1.0/24"}, itNetConf, []string{`subnet "10.244.0.0/16" specified in the flannel net config doesn't contain "10.99.1.0/24" PodCIDR`, "--cluster-cidr"}, true},
		{"no v6", []string{"10.244.3.0/24"}, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10::/48","Backend":{"Type":"vxlan"}}`, []string{"no IPv6 pod CIDR"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := uniq(t, "n")
			createNode(t, cs, name, tt.cidrs, nil)
			m := newManager(t, k, "", Config{NodeName: name, NetConfigPath: writeNetConf(t, tt.conf)})
			cfg, err := m.GetNetworkConfig(ctx)
			if err != nil {
				t.Fatal(err)
			}
			_, err = m.AcquireLease(ctx, cfg, vxlanAttrs("192.0.2.11", "0e:00:00:00:00:03"))
			if err == nil {
				t.Fatal("acquired a lease")
			}
			for _, w := range append(tt.want, fmt.Sprintf("%q", name)) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if subnet.IsPermanent(err) != tt.permanent {
				t.Errorf("permanent=%v, want %v (%v)", subnet.IsPermanent(err), tt.permanent, err)
			}
		})
	}
}

func TestIntegrationNetConfErrors(t *testing.T) {
	k := apiserver(t)
	cs := adminClient(t, k)
	name := uniq(t, "n")
	createNode(t, cs, name, []string{"10.244.4.0/24"}, nil)
	tests := []struct{ conf, want string }{
		{`{"Network":"10.244.0.0/16",`, "invalid network config JSON"},
		{`{"Backend":{"Type":"vxlan"}}`, "please define a correct Network parameter in the flannel config"},
		{`{"Network":"10.244.0.0/16","SubnetLen":31}`, "SubnetLen must be less than /31"},
	}
	for _, tt := range tests {
		m := newManager(t, k, "", Config{NodeName: name, NetConfigPath: writeNetConf(t, tt.conf)})
		_, err := m.GetNetworkConfig(context.Background())
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "net-conf.json") {
			t.Errorf("%s: error %v, want %q naming the file", tt.conf, err, tt.want)
		}
	}
	m := newManager(t, k, "", Config{NodeName: name, NetConfigPath: filepath.Join(t.TempDir(), "missing.json")})
	if _, err := m.GetNetworkConfig(context.Background()); err == nil || !strings.Contains(err.Error(), "failed to read net conf") {
		t.Errorf("missing file: %v", err)
	}
}

func TestIntegrationKeepLeaseSetsNetworkAvailable(t *testing.T) {
	k := apiserver(t)
	cs := adminClient(t, k)
	for _, set := range []bool{true, false} {
		t.Run(fmt.Sprint(set), func(t *testing.T) {
			name := uniq(t, "n")
			createNode(t, cs, name, []string{"10.244.5.0/24"}, nil)
			m := newManager(t, k, "", Config{NodeName: name, NetConfigPath: writeNetConf(t, itNetConf), SetNodeNetworkUnavailable: set})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- m.KeepLease(ctx, &subnet.Lease{}) }()
			var cond *corev1.NodeCondition
			deadline := time.Now().Add(30 * time.Second)
			for time.Now().Before(deadline) && cond == nil {
				n, err := cs.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				for i := range n.Status.Conditions {
					if n.Status.Conditions[i].Type == corev1.NodeNetworkUnavailable {
						cond = &n.Status.Conditions[i]
					}
				}
				if !set {
					time.Sleep(2 * time.Second) // give a wrong write time to happen
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("KeepLease: %v", err)
			}
			if !set {
				if cond != nil {
					t.Fatalf("condition set with --set-node-network-unavailable=false: %+v", cond)
				}
				return
			}
			if cond == nil {
				t.Fatal("no NetworkUnavailable condition")
			}
			if cond.Status != corev1.ConditionFalse || cond.Reason != "FlannelIsUp" || cond.Message != "Flannel is running on this node" ||
				cond.LastTransitionTime.IsZero() || cond.LastHeartbeatTime.IsZero() {
				t.Fatalf("condition %+v", cond)
			}
		})
	}
}

func watchNext(t *testing.T, out <-chan subnet.WatchResult) subnet.WatchResult {
	t.Helper()
	select {
	case r := <-out:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("no watch result within 30s")
	}
	return subnet.WatchResult{}
}

func TestIntegrationWatchLeases(t *testing.T) {
	k := apiserver(t)
	cs := adminClient(t, k)
	ctx := context.Background()
	own, a, b, c := uniq(t, "own"), uniq(t, "a"), uniq(t, "b"), uniq(t, "c")
	createNode(t, cs, own, []string{"10.244.10.0/24"}, nil)
	createNode(t, cs, a, []string{"10.244.11.0/24"}, peerAnn("192.0.2.21", "0e:00:00:00:00:21"))
	createNode(t, cs, b, []string{"10.244.12.0/24"}, peerAnn("192.0.2.22", "0e:00:00:00:00:22"))
	createNode(t, cs, c, []string{"10.244.13.0/24"}, nil) // not a flannel node (yet)

	out := watchReady(t, newManager(t, k, "", Config{NodeName: own, NetConfigPath: writeNetConf(t, itNetConf)}))

	mine := func(key string) bool {
		return strings.HasPrefix(key, "10.244.1") && len(key) == len("10.244.10.0-24")
	}
	r := watchNext(t, out)
	if !r.IsSnapshot() {
		t.Fatalf("first result is not a snapshot: %+v", r)
	}
	var keys []string
	for _, c := range r.Snapshot {
		if mine(c.Lease.Key()) {
			keys = append(keys, c.Lease.Key())
		}
	}
	if strings.Join(sorted(keys), " ") != "10.244.11.0-24 10.244.12.0-24" {
		t.Fatalf("snapshot leases %v", keys)
	}

	// An update leaving the lease alone sends nothing: the next event is the real change.
	patch := func(name, p string, sub ...string) {
		t.Helper()
		if _, err := cs.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, []byte(p), metav1.PatchOptions{}, sub...); err != nil {
			t.Fatal(err)
		}
	}
	patch(a, `{"metadata":{"labels":{"x":"1"},"annotations":{"other.example.com/y":"2"}}}`)
	patch(a, `{"status":{"conditions":[{"type":"Ready","status":"True","reason":"Test","lastHeartbeatTime":"2026-01-01T00:00:00Z"}]}}`, "status")
	patch(b, `{"metadata":{"annotations":{"flannel.alpha.coreos.com/backend-data":"{\"VNI\":1,\"VtepMAC\":\"0e:00:00:00:00:99\"}"}}}`)
	ev := nextEvents(t, out, mine)
	if len(ev) != 1 || ev[0].Type != subnet.EventAdded || ev[0].Lease.Key() != "10.244.12.0-24" ||
		!strings.Contains(string(ev[0].Lease.Attrs.BackendData), "0e:00:00:00:00:99") {
		t.Fatalf("events after a no-op update and a MAC change: %+v", ev)
	}

	// A node becoming a flannel node is added; a deleted node is removed.
	patch(c, `{"metadata":{"annotations":`+mustJSON(peerAnn("192.0.2.23", "0e:00:00:00:00:23"))+`}}`)
	ev = nextEvents(t, out, mine)
	if len(ev) != 1 || ev[0].Type != subnet.EventAdded || ev[0].Lease.Key() != "10.244.13.0-24" || ev[0].Lease.Attrs.PublicIP.String() != "192.0.2.23" {
		t.Fatalf("events after annotating a node: %+v", ev)
	}
	if err := cs.CoreV1().Nodes().Delete(ctx, a, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	ev = nextEvents(t, out, mine)
	if len(ev) != 1 || ev[0].Type != subnet.EventRemoved || ev[0].Lease.Key() != "10.244.11.0-24" {
		t.Fatalf("events after deleting a node: %+v", ev)
	}
}

func watchReady(t *testing.T, m *Manager) <-chan subnet.WatchResult {
	t.Helper()
	if _, err := m.GetNetworkConfig(context.Background()); err != nil {
		t.Fatal(err)
	}
	return runWatch(t, m)
}

func nextEvents(t *testing.T, out <-chan subnet.WatchResult, keep func(string) bool) []subnet.Event {
	t.Helper()
	for {
		r := watchNext(t, out)
		if r.IsSnapshot() {
			t.Fatalf("unexpected second snapshot")
		}
		var ev []subnet.Event
		for _, e := range r.Events {
			if keep(e.Lease.Key()) {
				ev = append(ev, e)
			}
		}
		if len(ev) > 0 {
			return ev
		}
	}
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// A NetworkUnavailable condition someone turns to True is set back to False.
func TestIntegrationKeepLeaseRestoresNetworkAvailable(t *testing.T) {
	k := apiserver(t)
	cs := adminClient(t, k)
	name := uniq(t, "n")
	createNode(t, cs, name, []string{"10.244.6.0/24"}, nil)
	m := newManager(t, k, "", Config{NodeName: name, NetConfigPath: writeNetConf(t, itNetConf), SetNodeNetworkUnavailable: true})
	ctx, cancel := context.WithCancel(context.Background())
	if _, err := m.GetNetworkConfig(ctx); err != nil {
		t.Fatal(err)
	}
	out := make(chan subnet.WatchResult, 16)
	go func() {
		for range out {
		}
	}()
	watchDone, keepDone := make(chan error, 1), make(chan error, 1)
	go func() { watchDone <- m.WatchLeases(ctx, out) }()
	go func() { keepDone <- m.KeepLease(ctx, &subnet.Lease{}) }()
	defer func() {
		cancel()
		if err := <-watchDone; err != nil {
			t.Errorf("WatchLeases: %v", err)
		}
		if err := <-keepDone; err != nil {
			t.Errorf("KeepLease: %v", err)
		}
		close(out)
	}()
	condition := func() (reason string, status corev1.ConditionStatus) {
		t.Helper()
		n, err := cs.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeNetworkUnavailable {
				return c.Reason, c.Status
			}
		}
		return "", ""
	}
	waitUp := func(what string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			reason, status := condition()
			if status == corev1.ConditionFalse && reason == "FlannelIsUp" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: NetworkUnavailable is %s (%s), want False (FlannelIsUp)", what, status, reason)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitUp("start")
	patch := `{"status":{"conditions":[{"type":"NetworkUnavailable","status":"True","reason":"NoRouteCreated","message":"set by a test"}]}}`
	if _, err := cs.CoreV1().Nodes().PatchStatus(context.Background(), name, []byte(patch)); err != nil {
		t.Fatal(err)
	}
	if reason, status := condition(); status != corev1.ConditionTrue || reason != "NoRouteCreated" {
		t.Fatalf("the test's patch did not apply: %s (%s)", status, reason)
	}
	waitUp("after someone set it to True")
}

// The API server pages a list from etcd and client-go's pager on our streaming decoder
// joins the pages.
func TestIntegrationListPages(t *testing.T) {
	k := apiserver(t)
	cs := adminClient(t, k)
	ctx := context.Background()
	for i := range 3 {
		createNode(t, cs, uniq(t, fmt.Sprintf("page%d", i)), []string{fmt.Sprintf("10.244.%d.0/24", 40+i)}, nil)
	}
	m := newManager(t, k, "", Config{NodeName: "x"})
	names := func(obj runtime.Object) []string {
		var n []string
		for _, p := range obj.(*peerNodeList).Items {
			n = append(n, p.Name)
		}
		sort.Strings(n)
		return n
	}
	whole, err := m.cs.listNodes(ctx, metav1.ListOptions{}, m.slimNode)
	if err != nil {
		t.Fatal(err)
	}
	full, err := m.cs.list(ctx, metav1.ListOptions{ResourceVersion: whole.(*peerNodeList).ResourceVersion, ResourceVersionMatch: metav1.ResourceVersionMatchExact}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range full.Items { // the listed nodes arrive slimmed as a watched node would be
		if want := m.slim(n); i >= len(whole.(*peerNodeList).Items) || !reflect.DeepEqual(whole.(*peerNodeList).Items[i], want) {
			t.Fatalf("listed node %d: %+v, want %+v", i, whole.(*peerNodeList).Items, want)
		}
	}
	first, err := m.cs.listNodes(ctx, metav1.ListOptions{Limit: 1}, m.slimNode)
	if err != nil || len(first.(*peerNodeList).Items) != 1 || first.(*peerNodeList).Continue == "" {
		t.Fatalf("first page of 1: %v, %v", err, first)
	}
	p := pager.New(pager.SimplePageFunc(func(opts metav1.ListOptions) (runtime.Object, error) { return m.cs.listNodes(ctx, opts, m.slimNode) }))
	p.PageSize = 1
	paged, _, err := p.List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var pagedNames []string
	if err := meta.EachListItem(paged, func(o runtime.Object) error {
		pagedNames = append(pagedNames, o.(*peerNode).Name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sort.Strings(pagedNames)
	if len(names(whole)) < 3 || !reflect.DeepEqual(names(whole), pagedNames) {
		t.Fatalf("paged list %v, whole %v", pagedNames, names(whole))
	}
}
