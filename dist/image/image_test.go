// Package image tests the flannel image of the top-level Dockerfile as `make image` builds
// it without a registry (base images from this machine's Go and Debian packages,
// dist/image/local-bases.sh): the image's OCI archive is unpacked without a container
// engine (e2e/imagekit) and its programs run in a chroot of its root filesystem inside a
// network namespace the test creates, which proves that binaries and shared libraries are
// complete. The Dockerfile's "binaries" stage is also cross-compiled for the other
// architecture (amd64 or arm64) and checked with file(1).
package image

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/flannel-go/flannel/e2e/imagekit"
	"github.com/flannel-go/flannel/e2e/kubeproc"
)

// fileArch is what file(1) says of an executable of each architecture.
var fileArch = map[string]string{"amd64": "x86-64", "arm64": "ARM aarch64"}

func TestImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a container image (minutes)")
	}
	imagekit.Need(t)
	ci := os.Getenv("CI") == "true"
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("ip: %v", err)
	}
	other := map[string]string{"amd64": "arm64", "arm64": "amd64"}[runtime.GOARCH]
	if other == "" {
		t.Skipf("no cross-compilation check for %s", runtime.GOARCH)
	}

	tmp := t.TempDir()
	const version = "v0.0.0-imagetest"
	image := fmt.Sprintf("%s:test%d", imageName(t), os.Getpid())
	archive := filepath.Join(tmp, "flannel.oci.tar")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	start := time.Now()
	remove, err := imagekit.Build(ctx, "../..", image, version, archive)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("make image took %s", time.Since(start).Round(time.Second))
	t.Cleanup(func() {
		if err := remove(); err != nil {
			t.Error(err)
		}
	})

	img, err := imagekit.ReadArchive(archive)
	if err != nil {
		t.Fatal(err)
	}
	if img.RefName != image {
		t.Errorf("archive names the image %q, want %q", img.RefName, image)
	}
	want := daemonSetCommand(t, "../kube-flannel.yml")
	if got := img.Config.Config.Entrypoint; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("image entrypoint %q, but the DaemonSet runs %q", got, want)
	}
	if img.Config.OS != "linux" || img.Config.Architecture != runtime.GOARCH {
		t.Errorf("image platform %s/%s, want linux/%s", img.Config.OS, img.Config.Architecture, runtime.GOARCH)
	}

	root := filepath.Join(tmp, "rootfs")
	if err := img.Unpack(root); err != nil {
		t.Fatal(err)
	}
	// Nothing of the host must be needed: no host library directory, no documentation.
	for _, p := range []string{"usr/share/doc", "usr/share/man"} {
		if _, err := os.Stat(filepath.Join(root, p)); err == nil {
			t.Errorf("image holds /%s", p)
		}
	}
	binaries := []string{"opt/bin/flanneld", "flannel", "opt/bin/install-conf"}
	checkExecutables(t, root, binaries, runtime.GOARCH)

	ns := newNetns(t)
	run := func(stdin string, args ...string) (string, error) {
		return runInImage(ctx, ns, root, stdin, args...)
	}
	mustRun := func(stdin string, args ...string) string {
		t.Helper()
		out, err := run(stdin, args...)
		if err != nil {
			t.Fatalf("%s in the image: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	expect := func(out, want, what string) {
		t.Helper()
		if !strings.Contains(out, want) {
			t.Errorf("%s: output lacks %q:\n%s", what, want, out)
		}
	}

	expect(mustRun("", "/opt/bin/flanneld", "--version"), version, "flanneld --version")
	expect(mustRun("", "/flannel", "--version"), version, "flannel --version")
	// The plugin's VERSION command, as a container runtime runs it.
	var vers struct {
		CNIVersion        string   `json:"cniVersion"`
		SupportedVersions []string `json:"supportedVersions"`
	}
	out := mustRun(`{"cniVersion":"1.1.0"}`, "env", "CNI_COMMAND=VERSION", "/flannel")
	if err := json.Unmarshal([]byte(out), &vers); err != nil || !slices.Contains(vers.SupportedVersions, "0.3.1") || !slices.Contains(vers.SupportedVersions, "1.1.0") {
		t.Errorf("CNI_COMMAND=VERSION /flannel: %v\n%s", err, out)
	}

	// What the DaemonSet's init containers run: install-conf copies the plugin and the
	// conflist, with their modes, atomically.
	for _, c := range initContainerArgs(t, "../kube-flannel.yml") {
		if c[0] != "/opt/bin/install-conf" {
			t.Errorf("init container runs %q, not /opt/bin/install-conf", c)
			continue
		}
		src, dst := c[1], "/tmp/installed"+c[2]
		if strings.HasPrefix(src, "/etc/kube-flannel/") { // the ConfigMap's mount
			mustRun("", "mkdir", "-p", "/etc/kube-flannel")
			if err := os.WriteFile(filepath.Join(root, src), []byte(`{"name":"cbr0"}`), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		mustRun("", c[0], src, dst)
		a, errA := os.ReadFile(filepath.Join(root, src))
		b, errB := os.ReadFile(filepath.Join(root, dst))
		sa, errC := os.Stat(filepath.Join(root, src))
		sb, errD := os.Stat(filepath.Join(root, dst))
		if err := errors.Join(errA, errB, errC, errD); err != nil || !bytes.Equal(a, b) || sa.Mode() != sb.Mode() {
			t.Errorf("install-conf %s %s: %v; same content %t, modes %v and %v", src, dst, err, bytes.Equal(a, b), sa.Mode(), sb.Mode())
		}
	}

	// mk-docker-opts.sh with its tools (awk, mktemp, mv, ip) from the image.
	sample, err := os.ReadFile("../sample_subnet.env")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "run/flannel"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "run/flannel/subnet.env"), sample, 0o644); err != nil {
		t.Fatal(err)
	}
	mustRun("", "/opt/bin/mk-docker-opts.sh")
	if b, err := os.ReadFile(filepath.Join(root, "run/docker_opts.env")); err != nil || !strings.Contains(string(b), `DOCKER_OPTS=" --bip=10.1.74.1/24 --ip-masq=true --mtu=1472"`) {
		t.Errorf("mk-docker-opts.sh in the image wrote %q, %v", b, err)
	}

	// A namespace without rules: iptables-select picks nft and remembers it.
	expect(mustRun("", "iptables", "--version"), "nf_tables", "iptables --version")
	if b, err := os.ReadFile(filepath.Join(root, "run/iptables-select.mode")); err != nil || strings.TrimSpace(string(b)) != "nft" {
		t.Errorf("iptables-select cache: %q, %v; want nft", b, err)
	}
	// The kinds of rules flanneld writes, with the extensions they load (comment, MASQUERADE).
	mustRun("", "iptables", "-t", "nat", "-N", "FLANNEL-POSTRTG")
	mustRun("", "iptables", "-t", "nat", "-A", "FLANNEL-POSTRTG", "-s", "10.244.0.0/16", "!", "-d", "224.0.0.0/4",
		"-m", "comment", "--comment", "flanneld masq", "-j", "MASQUERADE", "--random-fully")
	expect(mustRun("", "iptables-nft", "-t", "nat", "-S"), "-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4", "iptables-nft -t nat -S")
	mustRun("", "ip6tables", "-t", "filter", "-A", "FORWARD", "-s", "fd00:10:244::/56", "-m", "comment", "--comment", "flanneld forward", "-j", "ACCEPT")
	expect(mustRun("", "ip6tables-save", "-t", "filter"), "-A FORWARD -s fd00:10:244::/56", "ip6tables-save")
	mustRun("*filter\n:FLANNEL-FWD - [0:0]\n-A FLANNEL-FWD -d 10.244.0.0/16 -j ACCEPT\nCOMMIT\n", "iptables-restore", "--noflush")
	expect(mustRun("", "iptables", "-t", "filter", "-S", "FLANNEL-FWD"), "-A FLANNEL-FWD -d 10.244.0.0/16 -j ACCEPT", "iptables-restore")

	// nft as knftables runs it: -f -, --check, --json --terse list table.
	expect(mustRun("", "nft", "list", "tables"), "table ip nat", "nft list tables")
	script := "add table inet fgimage\nadd chain inet fgimage fgchain { type filter hook forward priority 0 ; }\n" +
		"add rule inet fgimage fgchain ip saddr 10.244.0.0/16 counter accept\n"
	mustRun(script, "nft", "--check", "-f", "-")
	mustRun(script, "nft", "-f", "-")
	out = mustRun("", "nft", "--json", "--terse", "list", "table", "inet", "fgimage")
	var js struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &js); err != nil || len(js.Nftables) < 3 {
		t.Errorf("nft --json: %v, %d objects:\n%s", err, len(js.Nftables), out)
	}
	expect(out, "10.244.0.0", "nft --json list table")

	// Choosing the backend must not create legacy tables in the namespace.
	for _, f := range []string{"/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"} {
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "cat", f).CombinedOutput()
		if err == nil && len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("iptables-select created legacy tables (%s): %s", f, out)
		}
	}

	// The Dockerfile's binaries cross-compiled for the other architecture (no image).
	crossDir := filepath.Join(tmp, "linux-"+other)
	start = time.Now()
	if err := imagekit.Make(ctx, "../..", "image-binaries", "ARCH="+other, "BINARIES_DIR="+crossDir, "VERSION="+version); err != nil {
		t.Fatal(err)
	}
	t.Logf("make image-binaries took %s", time.Since(start).Round(time.Second))
	checkExecutables(t, crossDir, []string{"flanneld", "flannel", "install-conf"}, other)

	// Hosts using iptables-legacy. Without kubelet's chains the backend with more rules wins.
	legacyNS := newNetns(t)
	if out, err := runInImage(ctx, legacyNS, root, "", "iptables-legacy", "-A", "FORWARD", "-s", "10.244.0.0/16", "-j", "ACCEPT"); err != nil {
		if ci {
			t.Fatalf("iptables-legacy in a network namespace: %v\n%s", err, out)
		}
		t.Logf("skipping the legacy selection: iptables-legacy does not work here: %v\n%s", err, out)
		return
	}
	forget := func() {
		t.Helper()
		if err := os.Remove(filepath.Join(root, "run/iptables-select.mode")); err != nil {
			t.Fatal(err)
		}
	}
	forget()
	if out, err := runInImage(ctx, legacyNS, root, "", "iptables", "--version"); err != nil || !strings.Contains(out, "legacy") {
		t.Errorf("iptables --version with a legacy rule only: %v\n%s", err, out)
	}
	// kubelet's canary chain in legacy beats the nft rules added above.
	mustRun("", "iptables-legacy", "-t", "mangle", "-N", "KUBE-KUBELET-CANARY")
	forget()
	expect(mustRun("", "iptables", "--version"), "legacy", "iptables --version with kubelet's chain in legacy")
	expect(mustRun("", "iptables", "-t", "mangle", "-S"), "-N KUBE-KUBELET-CANARY", "iptables -t mangle -S (legacy)")
	// IPTABLES_MODE overrides the detection.
	expect(mustRun("", "env", "IPTABLES_MODE=nft", "iptables", "--version"), "nf_tables", "IPTABLES_MODE=nft iptables --version")
}

// checkExecutables checks with file(1) that each of dir's files is a static executable
// for arch.
func checkExecutables(t *testing.T, dir string, files []string, arch string) {
	t.Helper()
	for _, f := range files {
		out, err := exec.Command("file", "-b", filepath.Join(dir, f)).CombinedOutput()
		desc := string(out)
		if err != nil || !strings.Contains(desc, "ELF 64-bit") || !strings.Contains(desc, fileArch[arch]) || !strings.Contains(desc, "statically linked") {
			t.Errorf("%s: want a static %s executable, file says %q (%v)", f, arch, strings.TrimSpace(desc), err)
		}
	}
}

// runInImage runs args in a chroot of root (with /proc and the host's /dev mounted, as a
// container runtime provides them, private to the command's mount namespace, which
// `ip netns exec` creates) inside the network namespace ns.
func runInImage(ctx context.Context, ns, root, stdin string, args ...string) (string, error) {
	full := append([]string{"netns", "exec", ns, "/bin/sh", "-c",
		`root="$1"; shift; mount -t proc proc "$root/proc" && mount --bind /dev "$root/dev" && exec chroot "$root" "$@"`, "sh", root}, args...)
	cmd := exec.CommandContext(ctx, "ip", full...)
	cmd.Env = []string{"PATH=/opt/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// newNetns creates a network namespace for the test (fgimg<pid>x<random>) and deletes it
// when the test ends.
func newNetns(t *testing.T) string {
	t.Helper()
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("fgimg%dx%s", os.Getpid(), hex.EncodeToString(b[:]))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v\n%s", name, err, out)
		}
	})
	return name
}

// imageName is the image (without its tag) of every container of dist/kube-flannel.yml.
func imageName(t *testing.T) string {
	t.Helper()
	name, _, _ := strings.Cut(kubeproc.Image, ":")
	return name
}

// daemonSetPod returns the pod template spec of path's DaemonSet.
func daemonSetPod(t *testing.T, path string) map[string]any {
	t.Helper()
	objs, err := kubeproc.ReadManifest(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.GetKind() == "DaemonSet" {
			spec, ok, err := unstructured.NestedMap(o.Object, "spec", "template", "spec")
			if !ok || err != nil {
				t.Fatalf("%s: DaemonSet without a pod spec: %v", path, err)
			}
			return spec
		}
	}
	t.Fatalf("%s: no DaemonSet", path)
	return nil
}

// command is a container's command followed by its args.
func command(c map[string]any) []string {
	cmd, _, _ := unstructured.NestedStringSlice(c, "command")
	args, _, _ := unstructured.NestedStringSlice(c, "args")
	return append(cmd, args...)
}

// daemonSetCommand returns the command of the DaemonSet's flanneld container.
func daemonSetCommand(t *testing.T, path string) []string {
	t.Helper()
	cs, _, _ := unstructured.NestedSlice(daemonSetPod(t, path), "containers")
	for _, c := range cs {
		if m, ok := c.(map[string]any); ok && m["name"] == "kube-flannel" {
			cmd, _, _ := unstructured.NestedStringSlice(m, "command")
			return cmd
		}
	}
	t.Fatalf("%s: no kube-flannel container", path)
	return nil
}

// initContainerArgs returns the command lines of the DaemonSet's init containers.
func initContainerArgs(t *testing.T, path string) [][]string {
	t.Helper()
	cs, _, _ := unstructured.NestedSlice(daemonSetPod(t, path), "initContainers")
	var out [][]string
	for _, c := range cs {
		m, _ := c.(map[string]any)
		if cmd := command(m); len(cmd) == 3 {
			out = append(out, cmd)
		} else {
			t.Errorf("%s: init container %v: want /opt/bin/install-conf SOURCE DESTINATION", path, m["name"])
		}
	}
	if len(out) != 2 {
		t.Errorf("%s: %d init containers, want 2 (plugin, conflist)", path, len(out))
	}
	return out
}
