// Package imagekit builds the flannel image for tests as `make image` does and reads its
// OCI archive without a container engine, unpacking layers where the programs can run.
package imagekit

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
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
)

// Need skips the test unless the machine can build the image; with CI=true it fails.
func Need(tb testing.TB) {
	tb.Helper()
	var why string
	if os.Geteuid() != 0 {
		why = "needs root (buildah, dpkg-deb, chroot)"
	}
	for _, c := range []string{"buildah", "apt-get", "apt-cache", "dpkg-deb", "ldconfig", "make", "file", "chroot", "mount"} {
		if _, err := exec.LookPath(c); err != nil && why == "" {
			why = c + " not found (tools/install-deps.sh --image installs buildah and file)"
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		tb.Fatalf("CI=true: %s", why)
	}
	tb.Skip(why)
}

// CacheDir is $FLANNEL_GO_CACHE or ~/.cache/flannel-go.
func CacheDir() (string, error) {
	if d := os.Getenv("FLANNEL_GO_CACHE"); d != "" {
		return d, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("imagekit: no home directory: %w", err)
	}
	return filepath.Join(home, ".cache", "flannel-go"), nil
}

// Storage is the buildah storage of the tests, kept between runs for the base images.
func Storage() (string, error) {
	c, err := CacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(c, "buildah"), nil
}

// Make runs `make -C repo target` with IMAGE_STORAGE=Storage() and vars ("NAME=value").
func Make(ctx context.Context, repo, target string, vars ...string) error {
	storage, err := Storage()
	if err != nil {
		return err
	}
	args := append([]string{"-C", repo, target, "IMAGE_STORAGE=" + storage}, vars...)
	out, err := exec.CommandContext(ctx, "make", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("make %s: %w\n%s", strings.Join(args[2:], " "), err, out)
	}
	return nil
}

// Build runs `make image`, writes the OCI archive and returns a func removing the image.
func Build(ctx context.Context, repo, image, version, archive string) (remove func() error, err error) {
	if err := Make(ctx, repo, "image", "IMAGE="+image, "IMAGE_ARCHIVE="+archive, "VERSION="+version); err != nil {
		return nil, err
	}
	storage, err := Storage()
	if err != nil {
		return nil, err
	}
	return func() error {
		out, err := exec.Command("buildah", "--storage-driver", "vfs", "--root", storage+"/root", "--runroot", storage+"/run", "rmi", image).CombinedOutput()
		if err != nil {
			return fmt.Errorf("buildah rmi %s: %w\n%s", image, err, out)
		}
		return nil
	}, nil
}

// Image is an image read from an OCI archive.
type Image struct {
	RefName string // the name the archive gives the image
	Config  struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
		Config       struct {
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

// ReadArchive reads a one-image oci-archive, checking each blob's digest and size.
func ReadArchive(path string) (*Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("imagekit: %w", err)
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
			return nil, fmt.Errorf("imagekit: %s: %w", path, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("imagekit: %s: %s: %w", path, h.Name, err)
		}
		files[filepath.Clean(h.Name)] = b
	}
	if !strings.Contains(string(files["oci-layout"]), `"imageLayoutVersion"`) {
		return nil, fmt.Errorf("imagekit: %s: no oci-layout file: not an OCI image layout", path)
	}
	blob := func(d descriptor) ([]byte, error) {
		alg, hexd, ok := strings.Cut(d.Digest, ":")
		if !ok || alg != "sha256" {
			return nil, fmt.Errorf("imagekit: %s: unsupported digest %q", path, d.Digest)
		}
		b, ok := files[filepath.Join("blobs", "sha256", hexd)]
		if !ok {
			return nil, fmt.Errorf("imagekit: %s: blob %s missing", path, d.Digest)
		}
		if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != hexd || int64(len(b)) != d.Size {
			return nil, fmt.Errorf("imagekit: %s: blob %s does not match its digest or size %d", path, d.Digest, d.Size)
		}
		return b, nil
	}
	var index struct {
		Manifests []descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		return nil, fmt.Errorf("imagekit: %s: index.json: %w", path, err)
	}
	if len(index.Manifests) != 1 {
		return nil, fmt.Errorf("imagekit: %s: %d manifests, want 1", path, len(index.Manifests))
	}
	mb, err := blob(index.Manifests[0])
	if err != nil {
		return nil, err
	}
	var manifest struct {
		Config descriptor   `json:"config"`
		Layers []descriptor `json:"layers"`
	}
	if err := json.Unmarshal(mb, &manifest); err != nil {
		return nil, fmt.Errorf("imagekit: %s: manifest: %w", path, err)
	}
	img := &Image{RefName: index.Manifests[0].Annotations["org.opencontainers.image.ref.name"]}
	cb, err := blob(manifest.Config)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(cb, &img.Config); err != nil {
		return nil, fmt.Errorf("imagekit: %s: config: %w", path, err)
	}
	if len(manifest.Layers) == 0 {
		return nil, fmt.Errorf("imagekit: %s: image without layers", path)
	}
	for _, l := range manifest.Layers {
		b, err := blob(l)
		if err != nil {
			return nil, err
		}
		img.layers = append(img.layers, layer{mediaType: l.MediaType, data: b})
	}
	return img, nil
}

// Unpack writes the image's root filesystem below root, layer over layer.
func (img *Image) Unpack(root string) error {
	for i, l := range img.layers {
		if err := extractLayer(l, root); err != nil {
			return fmt.Errorf("imagekit: layer %d: %w", i, err)
		}
	}
	return nil
}

// extractLayer unpacks a layer over the earlier ones, never outside root or through a symlink.
func extractLayer(l layer, root string) error {
	var r io.Reader = bytes.NewReader(l.data)
	switch {
	case strings.HasSuffix(l.mediaType, "+gzip"):
		zr, err := gzip.NewReader(r)
		if err != nil {
			return err
		}
		r = zr
	case strings.HasSuffix(l.mediaType, ".tar"):
	default:
		return fmt.Errorf("unsupported media type %q", l.mediaType)
	}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean("/" + h.Name)
		if err := extractEntry(tr, h, root, name); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
}

func extractEntry(tr *tar.Reader, h *tar.Header, root, name string) error {
	dst := filepath.Join(root, name)
	if err := noSymlinkBelow(root, filepath.Dir(dst)); err != nil {
		return err
	}
	// Whiteouts delete an entry, or a directory's content (opaque), of lower layers.
	if base := filepath.Base(name); strings.HasPrefix(base, ".wh.") {
		dir := filepath.Dir(dst)
		if base != ".wh..wh..opq" {
			return os.RemoveAll(filepath.Join(dir, strings.TrimPrefix(base, ".wh.")))
		}
		ents, _ := os.ReadDir(dir)
		var err error
		for _, e := range ents {
			err = errors.Join(err, os.RemoveAll(filepath.Join(dir, e.Name())))
		}
		return err
	}
	// An entry replaces a lower layer's (a directory stays a directory).
	if fi, err := os.Lstat(dst); err == nil && !(fi.IsDir() && h.Typeflag == tar.TypeDir) {
		if err := os.RemoveAll(dst); err != nil {
			return err
		}
	}
	if h.Typeflag != tar.TypeDir {
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
	}
	var err error
	switch h.Typeflag {
	case tar.TypeDir:
		err = os.MkdirAll(dst, 0o755)
	case tar.TypeReg:
		var f *os.File
		f, err = os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
		if err == nil {
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
	case tar.TypeSymlink:
		err = os.Symlink(h.Linkname, dst)
	case tar.TypeLink:
		err = os.Link(filepath.Join(root, filepath.Clean("/"+h.Linkname)), dst)
	default:
		return fmt.Errorf("unexpected entry type %q", h.Typeflag)
	}
	if err != nil {
		return err
	}
	if err := os.Lchown(dst, h.Uid, h.Gid); err != nil {
		return err
	}
	// After the owner: chown clears the setuid and setgid bits.
	if h.Typeflag == tar.TypeDir || h.Typeflag == tar.TypeReg {
		return os.Chmod(dst, os.FileMode(h.Mode).Perm()|modeBits(h.Mode))
	}
	return nil
}

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
