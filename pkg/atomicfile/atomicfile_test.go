package atomicfile

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestWriteFile(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	dir := t.TempDir()
	path := filepath.Join(dir, "a", "b", "subnet.env")
	for i, c := range []struct {
		data string
		mode os.FileMode
	}{{"first\n", 0o644}, {"second\n", 0o600}} { // the second write replaces the first
		if err := WriteFile(path, []byte(c.data), c.mode); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		checkFile(t, path, c.data, c.mode)
	}
}

func TestCopy(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	dir := t.TempDir()
	write := func(name, data string, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	plugin := write("flannel", "#!/bin/sh\necho new\n", 0o755)
	conf := write("cni-conf.json", `{"name":"cbr0"}`, 0o644)
	dst := write("old", "old content", 0o600)
	if err := os.Mkdir(filepath.Join(dir, "adir"), 0o755); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name, src, dst string
		want           string
		mode           os.FileMode
		err            string
	}{
		{name: "executable into a new directory", src: plugin, dst: filepath.Join(dir, "bin", "flannel"), want: "#!/bin/sh\necho new\n", mode: 0o755},
		{name: "config over an existing file", src: conf, dst: dst, want: `{"name":"cbr0"}`, mode: 0o644},
		{name: "missing source", src: filepath.Join(dir, "nope"), dst: filepath.Join(dir, "x"), err: "open source"},
		{name: "directory as source", src: filepath.Join(dir, "adir"), dst: filepath.Join(dir, "y"), err: "not a regular file"},
		{name: "directory as destination", src: conf, dst: filepath.Join(dir, "adir"), err: "rename"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Copy(c.src, c.dst)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("Copy: %v, want an error containing %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkFile(t, c.dst, c.want, c.mode)
		})
	}
	// No temporary file is left behind, after successes or failures.
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), ".tmp") {
			t.Errorf("temporary file left: %s", p)
		}
		return nil
	})
}

// A reader of the old file keeps reading the old content: the file is replaced, not
// rewritten (so a plugin binary in use can be replaced).
func TestCopyReplacesNotRewrites(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "flannel")
	if err := os.WriteFile(dst, []byte("old binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	held, err := os.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, []byte("new binary, longer"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Copy(src, dst); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, _ := held.Read(buf)
	if string(buf[:n]) != "old binary" {
		t.Fatalf("the open file now reads %q", buf[:n])
	}
	checkFile(t, dst, "new binary, longer", 0o755)
}

func checkFile(t *testing.T, path, want string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != want {
		t.Errorf("%s holds %q, want %q", path, b, want)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != mode {
		t.Errorf("%s has mode %v, want %v regardless of umask", path, fi.Mode().Perm(), mode)
	}
}
