package wireguard

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeyFilePath(t *testing.T) {
	env := func(m map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	if got := KeyFile("/run/flannel/subnet.env", env(nil)); got != "/run/flannel/wgkey" {
		t.Errorf("default = %s, want upstream's /run/flannel/wgkey", got)
	}
	if got := KeyFile("/var/lib/fl/b.env", env(nil)); got != "/var/lib/fl/wgkey" {
		t.Errorf("beside another subnet file = %s", got)
	}
	if got := KeyFile("/run/flannel/subnet.env", env(map[string]string{KeyFileEnv: "/etc/wg/k"})); got != "/etc/wg/k" {
		t.Errorf("with %s = %s", KeyFileEnv, got)
	}
	if got := KeyFile("/run/flannel/subnet.env", env(map[string]string{KeyFileEnv: ""})); got != "/run/flannel/wgkey" {
		t.Errorf("with an empty %s = %s", KeyFileEnv, got)
	}
}

func TestLoadOrCreateKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "wgkey")
	k, st, created, err := loadOrCreateKey(path)
	if err != nil || !created {
		t.Fatalf("first use: created=%v err=%v", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o400 {
		t.Errorf("generated key file mode %04o, want 0400 (as upstream)", fi.Mode().Perm())
	}
	raw, _ := os.ReadFile(path)
	if string(raw) != k.String() {
		t.Errorf("file holds %d bytes, want the base64 key without newline (upstream's format)", len(raw))
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "sub", ".wgkey.tmp*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
	k2, st2, created, err := loadOrCreateKey(path)
	if err != nil || created || k2 != k || st2 != st {
		t.Fatalf("second use: key equal=%v created=%v stamp equal=%v err=%v", k2 == k, created, st2 == st, err)
	}

	// a key made by wg genkey (trailing newline) in a new file moved into place
	other := peerPriv.String() + "\n"
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(other), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	k3, st3, _, err := loadOrCreateKey(path)
	if err != nil || k3 != peerPriv || st3 == st {
		t.Fatalf("replaced file: key ok=%v stamp changed=%v err=%v", k3 == peerPriv, st3 != st, err)
	}
}

func TestReadKeyRefusals(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	secret := testPriv.String()
	tests := []struct {
		name, path string
		err        []string
	}{
		{"readable by others", write("open", secret, 0o644), []string{"has mode 0644", "chmod 0400 " + filepath.Join(dir, "open"), "restart flanneld"}},
		{"readable by the group", write("group", secret, 0o640), []string{"has mode 0640"}},
		{"not base64", write("garbage", "s3cr3t-"+secret[7:], 0o400), []string{"could not parse private key from file"}},
		{"too short", write("short", secret[:40], 0o600), []string{"could not parse private key from file"}},
		{"all zeros", write("zero", strings.Repeat("A", 43)+"=", 0o600), []string{"the key is all zeros"}},
		{"a directory", dir, []string{"is not a regular file"}},
	}
	for _, tt := range tests {
		_, _, err := readKey(tt.path)
		if err == nil {
			t.Errorf("%s: accepted", tt.name)
			continue
		}
		for _, w := range tt.err {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q lacks %q", tt.name, err, w)
			}
		}
		if strings.Contains(err.Error(), secret[8:30]) {
			t.Errorf("%s: the error quotes the key: %v", tt.name, err)
		}
	}
	if _, _, err := readKey(filepath.Join(dir, "absent")); !errors.Is(err, errKeyFileMissing) {
		t.Errorf("absent file: %v", err)
	}
	// a refused file is never replaced by a generated one
	p := write("kept", secret, 0o644)
	if _, _, _, err := loadOrCreateKey(p); err == nil {
		t.Error("loadOrCreateKey accepted a key file readable by others")
	}
	if raw, _ := os.ReadFile(p); string(raw) != secret {
		t.Error("loadOrCreateKey changed a refused key file")
	}
}
