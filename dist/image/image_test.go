// Package image holds the build of the flanneld container image (build.sh) and its test:
// the image is built with buildah, its OCI archive unpacked without a container engine, and
// the binaries in it run in a chroot of its root filesystem inside a network namespace the
// test creates, which proves that binaries and shared libraries are complete.
package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The image name the DaemonSet of dist/kube-flannel.yml uses (without its tag).
const imageRepo = "localhost/flannel-go/flanneld"

func TestImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a container image (about a minute)")
	}
	ci := os.Getenv("CI") == "true"
	need := func(why string) {
		if ci {
			t.Fatalf("CI=true: %s", why)
		}
		t.Skip(why)
	}
	if os.Geteuid() != 0 {
		need("needs root (buildah, dpkg-deb, chroot, network namespaces)")
	}
	for _, c := range []string{"buildah", "apt-get", "apt-cache", "dpkg-deb", "ldconfig", "ip", "chroot", "mount"} {
		if _, err := exec.LookPath(c); err != nil {
			need(fmt.Sprintf("%s not found (tools/install-deps.sh --image installs buildah)", c))
		}
	}

	tmp := t.TempDir()
	const version = "v0.0.0-imagetest"
	image := fmt.Sprintf("%s:test%d", imageRepo, os.Getpid())
	archive := filepath.Join(tmp, "flanneld.oci.tar")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "./build.sh")
	build.Env = append(os.Environ(),
		"IMAGE="+image, "VERSION="+version, "OUT="+archive,
		"STORAGE_ROOT="+filepath.Join(tmp, "storage"))
	start := time.Now()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build.sh: %v\n%s", err, out)
	}
	t.Logf("build.sh took %s", time.Since(start).Round(time.Second))

	img := readOCIArchive(t, archive)
	if img.refName != image {
		t.Errorf("archive names the image %q, want %q", img.refName, image)
	}
	want := daemonSetCommand(t, "../kube-flannel.yml")
	if got := img.config.Config.Entrypoint; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("image entrypoint %q, but the DaemonSet runs %q", got, want)
	}
	if img.config.OS != "linux" {
		t.Errorf("image os %q, want linux", img.config.OS)
	}

	root := filepath.Join(tmp, "rootfs")
	for _, l := range img.layers {
		extractLayer(t, l, root)
	}
	// Nothing of the host must be needed: no host library directory, no documentation.
	for _, p := range []string{"usr/share/doc", "usr/share/man"} {
		if _, err := os.Stat(filepath.Join(root, p)); err == nil {
			t.Errorf("image holds /%s", p)
		}
	}

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
	out := mustRun("", "nft", "--json", "--terse", "list", "table", "inet", "fgimage")
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
	expect(mustRun("", "env-nft", "iptables", "--version"), "nf_tables", "IPTABLES_MODE=nft iptables --version")
}

// runInImage runs args in a chroot of root (with /proc mounted, private to the command's
// mount namespace, which `ip netns exec` creates) inside the network namespace ns. The
// pseudo-command "env-nft" sets IPTABLES_MODE=nft for the rest.
func runInImage(ctx context.Context, ns, root, stdin string, args ...string) (string, error) {
	env := []string{"PATH=/opt/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	if len(args) > 0 && args[0] == "env-nft" {
		env = append(env, "IPTABLES_MODE=nft")
		args = args[1:]
	}
	full := append([]string{"netns", "exec", ns, "/bin/sh", "-c",
		`root="$1"; shift; mount -t proc proc "$root/proc" && exec chroot "$root" "$@"`, "sh", root}, args...)
	cmd := exec.CommandContext(ctx, "ip", full...)
	cmd.Env = env
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

type ociImage struct {
	refName string
	config  struct {
		OS     string `json:"os"`
		Config struct {
			Entrypoint []string `json:"Entrypoint"`
			Env        []string `json:"Env"`
		} `json:"config"`
	}
	layers []layer
}

type layer struct {
	mediaType string
	data      []byte
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations"`
}

// readOCIArchive reads an oci-archive (a tar of an OCI image layout) holding one image,
// checking every blob against its digest and size.
func readOCIArchive(t *testing.T, path string) *ociImage {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("%s: %s: %v", path, h.Name, err)
		}
		files[filepath.Clean(h.Name)] = b
	}
	if !strings.Contains(string(files["oci-layout"]), `"imageLayoutVersion"`) {
		t.Fatalf("%s: no oci-layout file: not an OCI image layout", path)
	}
	blob := func(d descriptor) []byte {
		t.Helper()
		alg, hexd, ok := strings.Cut(d.Digest, ":")
		if !ok || alg != "sha256" {
			t.Fatalf("unsupported digest %q", d.Digest)
		}
		b, ok := files[filepath.Join("blobs", "sha256", hexd)]
		if !ok {
			t.Fatalf("%s: blob %s missing", path, d.Digest)
		}
		if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != hexd || int64(len(b)) != d.Size {
			t.Fatalf("%s: blob %s does not match its digest or size %d", path, d.Digest, d.Size)
		}
		return b
	}
	var index struct {
		Manifests []descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		t.Fatalf("%s: index.json: %v", path, err)
	}
	if len(index.Manifests) != 1 {
		t.Fatalf("%s: %d manifests, want 1", path, len(index.Manifests))
	}
	var manifest struct {
		Config descriptor   `json:"config"`
		Layers []descriptor `json:"layers"`
	}
	if err := json.Unmarshal(blob(index.Manifests[0]), &manifest); err != nil {
		t.Fatalf("%s: manifest: %v", path, err)
	}
	img := &ociImage{refName: index.Manifests[0].Annotations["org.opencontainers.image.ref.name"]}
	if err := json.Unmarshal(blob(manifest.Config), &img.config); err != nil {
		t.Fatalf("%s: config: %v", path, err)
	}
	if len(manifest.Layers) == 0 {
		t.Fatalf("%s: image without layers", path)
	}
	for _, l := range manifest.Layers {
		img.layers = append(img.layers, layer{mediaType: l.MediaType, data: blob(l)})
	}
	return img
}

// extractLayer unpacks a layer tarball below root. Names must stay below root, and no path
// is written through a symbolic link (the layer's links point into the image, not the host).
func extractLayer(t *testing.T, l layer, root string) {
	t.Helper()
	var r io.Reader = bytes.NewReader(l.data)
	switch {
	case strings.HasSuffix(l.mediaType, "+gzip"):
		zr, err := gzip.NewReader(r)
		if err != nil {
			t.Fatalf("layer: %v", err)
		}
		r = zr
	case strings.HasSuffix(l.mediaType, ".tar"):
	default:
		t.Fatalf("unsupported layer media type %q", l.mediaType)
	}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatalf("layer: %v", err)
		}
		name := filepath.Clean("/" + h.Name)
		if strings.HasPrefix(filepath.Base(name), ".wh.") {
			t.Fatalf("layer: whiteout %s in a single-layer image", name)
		}
		dst := filepath.Join(root, name)
		if err := noSymlinkBelow(root, filepath.Dir(dst)); err != nil {
			t.Fatalf("layer: %s: %v", name, err)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				t.Fatal(err)
			}
			var f *os.File
			f, err = os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
			if err == nil {
				_, err = io.Copy(f, tr)
				if cerr := f.Close(); err == nil {
					err = cerr
				}
			}
		case tar.TypeSymlink:
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				t.Fatal(err)
			}
			err = os.Symlink(h.Linkname, dst)
		case tar.TypeLink:
			target := filepath.Join(root, filepath.Clean("/"+h.Linkname))
			err = os.Link(target, dst)
		default:
			t.Fatalf("layer: %s: unexpected entry type %q", name, h.Typeflag)
		}
		if err != nil {
			t.Fatalf("layer: %s: %v", name, err)
		}
		if err := os.Lchown(dst, h.Uid, h.Gid); err != nil {
			t.Fatalf("layer: %s: %v", name, err)
		}
		// After the owner: chown clears the setuid and setgid bits.
		if h.Typeflag == tar.TypeDir || h.Typeflag == tar.TypeReg {
			if err := os.Chmod(dst, os.FileMode(h.Mode).Perm()|modeBits(h.Mode)); err != nil {
				t.Fatalf("layer: %s: %v", name, err)
			}
		}
	}
}

// modeBits keeps the setuid, setgid and sticky bits of a tar mode as os.FileMode bits.
func modeBits(m int64) os.FileMode {
	var fm os.FileMode
	if m&0o4000 != 0 {
		fm |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		fm |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		fm |= os.ModeSticky
	}
	return fm
}

// noSymlinkBelow fails when a directory between root and dir is a symbolic link.
func noSymlinkBelow(root, dir string) error {
	rel, err := filepath.Rel(root, dir)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return fmt.Errorf("outside the root filesystem")
	}
	p := root
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		if part == "." {
			continue
		}
		p = filepath.Join(p, part)
		fi, err := os.Lstat(p)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			return fmt.Errorf("parent %s is a symbolic link", p)
		}
	}
	return nil
}

// daemonSetCommand returns the command of the container of path's DaemonSet that runs
// the image this repository builds.
func daemonSetCommand(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	found, inCommand := false, false
	var cmd []string
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "image: "+imageRepo+":"):
			found = true
		case found && line == "command:":
			inCommand = true
		case inCommand && strings.HasPrefix(line, "- "):
			cmd = append(cmd, strings.Trim(strings.TrimPrefix(line, "- "), `"'`))
		case inCommand:
			return cmd
		}
	}
	if len(cmd) == 0 {
		t.Fatalf("%s: no container with image %s and a command", path, imageRepo)
	}
	return cmd
}
