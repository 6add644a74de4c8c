// Package chart tests the Helm chart of dist/chart with a real helm (tools/helm, built from
// the module proxy and cached): helm lint, the default rendering object by object against
// dist/kube-flannel.yml, the values against what they must render, and a server-side
// dry-run of renderings on a real kube-apiserver.
package chart

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/flannel-go/flannel/e2e/kubeproc"
	"github.com/flannel-go/flannel/subnet"
)

const (
	manifestPath = "../kube-flannel.yml"
	namespace    = "kube-flannel"
)

// helm returns the helm binary: $FLANNEL_TEST_HELM, else the one tools/helm/build.sh
// caches. Without it the test skips, or fails when CI=true (.ci/run builds it).
func helm(t *testing.T) string {
	t.Helper()
	if b := os.Getenv("FLANNEL_TEST_HELM"); b != "" {
		return b
	}
	version, err := os.ReadFile("../../tools/helm/VERSION")
	if err != nil {
		t.Fatal(err)
	}
	cache := os.Getenv("FLANNEL_GO_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			t.Fatal(err)
		}
		cache = filepath.Join(home, ".cache", "flannel-go")
	}
	b := filepath.Join(cache, "helm-"+strings.TrimSpace(string(version)))
	if _, err := os.Stat(b); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but helm is missing (make helm): %v", err)
		}
		t.Skipf("skipping: helm not built (make helm): %v", err)
	}
	return b
}

// helmCmd is a helm command whose cache, configuration and data directories are the
// test's, not the user's.
func helmCmd(t *testing.T, ctx context.Context, args ...string) *exec.Cmd {
	t.Helper()
	home := t.TempDir()
	cmd := exec.CommandContext(ctx, helm(t), args...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"), "HELM_DATA_HOME="+filepath.Join(home, "data"))
	return cmd
}

// render runs helm template on the chart with the given --set values (and --set-file
// values "key=content", the content written to a file) and returns the objects, or the
// error helm reports.
func render(t *testing.T, set []string, setFile ...string) ([]*unstructured.Unstructured, error) {
	t.Helper()
	args := []string{"template", "flannel", ".", "--namespace", namespace}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	for i, s := range setFile {
		k, content, _ := strings.Cut(s, "=")
		path := filepath.Join(t.TempDir(), fmt.Sprintf("value%d", i))
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--set-file", k+"="+path)
	}
	out, err := helmCmd(t, context.Background(), args...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	path := filepath.Join(t.TempDir(), "rendered.yaml")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return kubeproc.ReadManifest(path)
}

func mustRender(t *testing.T, set []string, setFile ...string) []*unstructured.Unstructured {
	t.Helper()
	objs, err := render(t, set, setFile...)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func TestHelmLint(t *testing.T) {
	out, err := helmCmd(t, context.Background(), "lint", "--strict", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("helm lint --strict: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "0 chart(s) failed") {
		t.Fatalf("helm lint: %s", out)
	}
}

// key names an object as Kind/namespace/name.
func key(o *unstructured.Unstructured) string {
	return o.GetKind() + "/" + o.GetNamespace() + "/" + o.GetName()
}

// normalise replaces the JSON documents among a ConfigMap's data by their parsed form, so
// that formatting and key order do not count.
func normalise(t *testing.T, o *unstructured.Unstructured) map[string]any {
	t.Helper()
	m := o.DeepCopy().Object
	if o.GetKind() != "ConfigMap" {
		return m
	}
	data, _, _ := unstructured.NestedStringMap(m, "data")
	parsed := map[string]any{}
	for k, v := range data {
		var doc any
		if err := json.Unmarshal([]byte(v), &doc); err != nil {
			t.Fatalf("%s: data %s is not JSON: %v", key(o), k, err)
		}
		parsed[k] = doc
	}
	m["data"] = parsed
	return m
}

// With default values the chart renders the objects of dist/kube-flannel.yml, but for the
// Namespace: helm keeps its release record in the release's namespace, which therefore
// exists before any object of the chart is applied.
func TestChartDefaultsRenderTheManifest(t *testing.T) {
	manifest, err := kubeproc.ReadManifest(manifestPath)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]any{}
	var order []string
	for _, o := range manifest {
		if o.GetKind() == "Namespace" {
			if o.GetName() != namespace {
				t.Fatalf("manifest namespace %s", o.GetName())
			}
			continue
		}
		want[key(o)] = normalise(t, o)
		order = append(order, key(o))
	}
	got := map[string]map[string]any{}
	for _, o := range mustRender(t, nil) {
		if _, dup := got[key(o)]; dup {
			t.Errorf("chart renders %s twice", key(o))
		}
		got[key(o)] = normalise(t, o)
	}
	for _, k := range order {
		g, ok := got[k]
		if !ok {
			t.Errorf("chart does not render %s", k)
			continue
		}
		if !reflect.DeepEqual(g, want[k]) {
			gj, _ := json.MarshalIndent(g, "", "  ")
			wj, _ := json.MarshalIndent(want[k], "", "  ")
			t.Errorf("%s differs from the manifest's:\nchart:\n%s\nmanifest:\n%s", k, gj, wj)
		}
		delete(got, k)
	}
	for k := range got {
		t.Errorf("chart renders %s, which the manifest does not have", k)
	}
}

// find returns the rendered object of that kind.
func find(t *testing.T, objs []*unstructured.Unstructured, kind string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind {
			return o
		}
	}
	t.Fatalf("no %s rendered", kind)
	return nil
}

// netConf returns the rendered net-conf.json, checked by flanneld's own config parser.
func netConf(t *testing.T, objs []*unstructured.Unstructured) map[string]any {
	t.Helper()
	s, _, _ := unstructured.NestedString(find(t, objs, "ConfigMap").Object, "data", "net-conf.json")
	if _, err := subnet.ParseConfig(s); err != nil {
		t.Errorf("net-conf.json does not validate: %v\n%s", err, s)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("net-conf.json: %v\n%s", err, s)
	}
	return m
}

// podSpec returns the DaemonSet's pod spec.
func podSpec(t *testing.T, objs []*unstructured.Unstructured) map[string]any {
	t.Helper()
	spec, _, _ := unstructured.NestedMap(find(t, objs, "DaemonSet").Object, "spec", "template", "spec")
	return spec
}

// containers returns the named container or init container of the DaemonSet (nil if none).
func container(t *testing.T, objs []*unstructured.Unstructured, name string) map[string]any {
	t.Helper()
	spec := podSpec(t, objs)
	for _, field := range []string{"initContainers", "containers"} {
		cs, _, _ := unstructured.NestedSlice(spec, field)
		for _, c := range cs {
			if m := c.(map[string]any); m["name"] == name {
				return m
			}
		}
	}
	return nil
}

// flannelSeesCNIConfigs checks that the kube-flannel container mounts the node's CNI
// config directory host read-only at /etc/cni/net.d, where `flanneld diagnose` reads it.
func flannelSeesCNIConfigs(t *testing.T, objs []*unstructured.Unstructured, host string) {
	t.Helper()
	for _, m := range kubeproc.PodHostMounts(objs) {
		if m.Container == "kube-flannel" && m.MountPath == "/etc/cni/net.d" {
			if m.HostPath != host || !m.ReadOnly {
				t.Errorf("kube-flannel mounts %+v, want host %s read-only", m, host)
			}
			return
		}
	}
	t.Errorf("kube-flannel does not mount /etc/cni/net.d (host %s)", host)
}

func jsonEqual(t *testing.T, what string, got any, want string) {
	t.Helper()
	var w any
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	g, _ := json.Marshal(got)
	var gn any
	_ = json.Unmarshal(g, &gn)
	if !reflect.DeepEqual(gn, w) {
		t.Errorf("%s = %s, want %s", what, g, want)
	}
}

// The values keys of upstream's chart, each rendered where it belongs.
func TestChartValues(t *testing.T) {
	cases := []struct {
		name    string
		set     []string
		setFile []string
		check   func(t *testing.T, objs []*unstructured.Unstructured)
	}{
		{"dual stack", []string{"podCidrv6=fd00:10:244::/56"}, nil, func(t *testing.T, objs []*unstructured.Unstructured) {
			jsonEqual(t, "net-conf.json", netConf(t, objs), `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","EnableNFTables":false,"Backend":{"Type":"vxlan"}}`)
		}},
		{"IPv6 only", []string{"podCidr=", "podCidrv6=fd00:10:244::/56"}, nil, func(t *testing.T, objs []*unstructured.Unstructured) {
			jsonEqual(t, "net-conf.json", netConf(t, objs), `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","EnableNFTables":false,"Backend":{"Type":"vxlan"}}`)
		}},
		{"vxlan options", []string{"podCidr=10.5.0.0/16", "flannel.backendPort=4789", "flannel.mtu=9000", "flannel.vni=4", "flannel.GBP=true", "flannel.directRouting=true", "flannel.enableNFTables=true"}, nil, func(t *testing.T, objs []*unstructured.Unstructured) {
			jsonEqual(t, "net-conf.json", netConf(t, objs), `{"Network":"10.5.0.0/16","EnableNFTables":true,"Backend":{"Type":"vxlan","Port":4789,"MTU":9000,"VNI":4,"GBP":true,"DirectRouting":true}}`)
		}},
		{"host-gw", []string{"flannel.backend=host-gw"}, nil, func(t *testing.T, objs []*unstructured.Unstructured) {
			jsonEqual(t, "net-conf.json", netConf(t, objs), `{"Network":"10.244.0.0/16","EnableNFTables":false,"Backend":{"Type":"host-gw"}}`)
		}},
		{"udp port", []string{"flannel.backend=udp", "flannel.backendPort=8300"}, nil, func(t *testing.T, objs []*unstructured.Unstructured) {
			jsonEqual(t, "net-conf.json", netConf(t, objs), `{"Network":"10.244.0.0/16","EnableNFTables":false,"Backend":{"Type":"udp","Port":8300}}`)
		}},
		{"image", []string{"flannel.image.repository=registry.example/flannel", "flannel.image.tag=v1"}, nil, func(t *testing.T, objs []*unstructured.Unstructured) {
			for _, c := range kubeproc.PodImages(objs) {
				if c.Image != "registry.example/flannel:v1" {
					t.Errorf("%s runs %s", c.Container, c.Image)
				}
			}
		}},
		{"init container image", []string{"flannel.flannel_cni.image.repository=registry.example/cni", "flannel.flannel_cni.image.tag=v2"}, nil, func(t *testing.T, objs []*unstructured.Unstructured) {
			want := map[string]string{"install-cni-plugin": "registry.example/cni:v2", "install-cni": "registry.example/cni:v2", "kube-flannel": kubeproc.Image}
			for _, c := range kubeproc.PodImages(objs) {
				if c.Image != want[c.Container] {
					t.Errorf("%s runs %s, want %s", c.Container, c.Image, want[c.Container])
				}
			}
		}},
		{"args and no health port", []string{"flannel.args={--kube-subnet-mgr,--iface=eth1}", "flannel.healthz.port=0"}, nil, func(t *testing.T, objs []*unstructured.Unstructured) {
			c := container(t, objs, "kube-flannel")
			jsonEqual(t, "args", c["args"], `["--kube-subnet-mgr","--iface=eth1"]`)
			if c["livenessProbe"] != nil || c["readinessProbe"] != nil {
				t.Errorf("probes without a health port: %v %v", c["livenessProbe"], c["readinessProbe"])
			}
		}},
		{"health port and probes", []string{"flannel.healthz.port=9090", "flannel.healthz.livenessProbe.periodSeconds=30"}, nil, func(t *testing.T, objs []*unstructured.Unstructured) {
			c := container(t, objs, "kube-flannel")
			jsonEqual(t, "args", c["args"], `["--ip-masq","--kube-subnet-mgr","--healthz-port=9090"]`)
			jsonEqual(t, "livenessProbe", c["livenessProbe"], `{"httpGet":{"path":"/healthz","port":9090},"initialDelaySeconds":10,"periodSeconds":30}`)
			jsonEqual(t, "readinessProbe", c["readinessProbe"], `{"httpGet":{"path":"/readyz","port":9090},"periodSeconds":5}`)
		}},
		{"CNI directories", []string{"flannel.cniBinDir=/usr/libexec/cni", "flannel.cniConfDir=/var/lib/cni/conf"}, nil, func(t *testing.T, objs []*unstructured.Unstructured) {
			vols, _, _ := unstructured.NestedSlice(podSpec(t, objs), "volumes")
			paths := map[string]any{}
			for _, v := range vols {
				m := v.(map[string]any)
				if hp, ok := m["hostPath"].(map[string]any); ok {
					paths[m["name"].(string)] = hp["path"]
				}
			}
			jsonEqual(t, "hostPaths", paths, `{"run":"/run/flannel","cni-plugin":"/usr/libexec/cni","cni":"/var/lib/cni/conf","xtables-lock":"/run/xtables.lock",`+
				`"tun":"/dev/net/tun","wireguard":"/var/run/wireguard"}`)
			flannelSeesCNIConfigs(t, objs, "/var/lib/cni/conf")
		}},
		{"skip CNI config", []string{"flannel.skipCNIConfigInstallation=true", "flannel.cniConfDir=/var/lib/cni/conf"}, nil, func(t *testing.T, objs []*unstructured.Unstructured) {
			if container(t, objs, "install-cni") != nil || container(t, objs, "install-cni-plugin") == nil {
				t.Errorf("init containers %v", kubeproc.PodImages(objs))
			}
			// Whoever installs the conflist, diagnose reads it.
			flannelSeesCNIConfigs(t, objs, "/var/lib/cni/conf")
		}},
		{"CNI config", nil, []string{`flannel.cniConf={"name":"cbr0","cniVersion":"1.0.0","plugins":[{"type":"flannel"}]}` + "\n"}, func(t *testing.T, objs []*unstructured.Unstructured) {
			s, _, _ := unstructured.NestedString(find(t, objs, "ConfigMap").Object, "data", "cni-conf.json")
			if strings.TrimSpace(s) != `{"name":"cbr0","cniVersion":"1.0.0","plugins":[{"type":"flannel"}]}` {
				t.Errorf("cni-conf.json = %q", s)
			}
		}},
		{"scheduling and pull secrets", []string{"flannel.nodeSelector.pool=net", "flannel.tolerations[0].operator=Exists", "global.imagePullSecrets[0].name=regcred"}, nil, func(t *testing.T, objs []*unstructured.Unstructured) {
			spec := podSpec(t, objs)
			jsonEqual(t, "nodeSelector", spec["nodeSelector"], `{"pool":"net"}`)
			jsonEqual(t, "tolerations", spec["tolerations"], `[{"operator":"Exists"}]`)
			jsonEqual(t, "imagePullSecrets", spec["imagePullSecrets"], `[{"name":"regcred"}]`)
		}},
		{"resources", []string{"flannel.resources.limits.memory=100Mi"}, nil, func(t *testing.T, objs []*unstructured.Unstructured) {
			jsonEqual(t, "resources", container(t, objs, "kube-flannel")["resources"], `{"requests":{"cpu":"100m","memory":"50Mi"},"limits":{"memory":"100Mi"}}`)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.check(t, mustRender(t, c.set, c.setFile...))
		})
	}
	if _, err := render(t, []string{"netpol.enabled=true"}); err == nil || !strings.Contains(err.Error(), "does not deploy kube-network-policies") {
		t.Errorf("netpol.enabled=true: %v", err)
	}
}

// Renderings of the chart pass a server-side dry-run apply on a real kube-apiserver, as
// does helm's own install --dry-run=server.
func TestIntegrationChartDryRun(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode: starts etcd and kube-apiserver")
	}
	helm(t)
	kubeproc.Need(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	k, err := kubeproc.StartLocal(ctx, filepath.Join(dir, "kube"))
	if err != nil {
		t.Fatal(err)
	}
	defer k.Stop()
	rc := k.API.RESTConfig("")
	// The namespace, as the manifest makes it (helm needs it before the release).
	ns := filepath.Join(dir, "namespace.yaml")
	if err := os.WriteFile(ns, []byte("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: "+namespace+"\n  labels:\n    pod-security.kubernetes.io/enforce: privileged\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := kubeproc.ApplyManifest(ctx, rc, ns, false); err != nil {
		t.Fatal(err)
	}
	for _, set := range [][]string{nil, {"podCidrv6=fd00:10:244::/56", "flannel.backend=host-gw", "flannel.healthz.port=0", "flannel.skipCNIConfigInstallation=true", "global.imagePullSecrets[0].name=regcred"}} {
		args := []string{"template", "flannel", ".", "--namespace", namespace}
		for _, s := range set {
			args = append(args, "--set", s)
		}
		out, err := helmCmd(t, ctx, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("helm %v: %v\n%s", args, err, out)
		}
		path := filepath.Join(dir, "rendered.yaml")
		if err := os.WriteFile(path, out, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := kubeproc.ApplyManifest(ctx, rc, path, true); err != nil {
			t.Errorf("rendered with %v: %v", set, err)
		}
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := k.API.WriteKubeconfig(kubeconfig, ""); err != nil {
		t.Fatal(err)
	}
	cmd := helmCmd(t, ctx, "install", "flannel", ".", "--namespace", namespace, "--dry-run=server", "--kubeconfig", kubeconfig)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("helm install --dry-run=server: %v\n%s", err, out)
	}
}
