package cniplugin

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func TestStoreLayout(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	st := Store{Dir: filepath.Join(t.TempDir(), "var", "lib", "cni", "flannel")}
	conf := []byte(`{"name":"cbr0","type":"bridge"}`)
	if err := st.Save("c1", "eth0", conf); err != nil {
		t.Fatal(err)
	}
	// Upstream's layout: <dataDir>/<containerID>, 0600 in a 0700 directory, the bytes as given.
	fi, err := os.Stat(st.Dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("data dir %v %v, want 0700", fi.Mode(), err)
	}
	path := filepath.Join(st.Dir, "c1")
	fi, err = os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("saved config %v %v, want 0600", fi, err)
	}
	if b, _ := os.ReadFile(path); string(b) != string(conf) {
		t.Fatalf("saved %q, want exactly %q", b, conf)
	}
	if got, err := st.Load("c1"); err != nil || string(got) != string(conf) {
		t.Fatalf("Load %q %v", got, err)
	}
	if n, ok := st.IfName("c1"); !ok || n != "eth0" {
		t.Fatalf("IfName %q %v", n, ok)
	}
	if _, err := st.Load("c2"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load of nothing: %v", err)
	}

	// A config saved by upstream's plugin: no interface name.
	if err := os.WriteFile(filepath.Join(st.Dir, "c2"), conf, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, ok := st.IfName("c2"); ok {
		t.Fatal("interface name for an upstream-saved config")
	}
	// An interface name whose config upstream's plugin deleted; junk that is no container.
	if err := os.WriteFile(filepath.Join(st.Dir, ifNameDir, "c3"), []byte("eth0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, junk := range []string{".c4.tmp123", "-x"} {
		if err := os.WriteFile(filepath.Join(st.Dir, junk), conf, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(st.Dir, "dir"), 0o700); err != nil {
		t.Fatal(err)
	}
	saved, orphans, err := st.List()
	if err != nil || !slices.Equal(saved, []string{"c1", "c2"}) || !slices.Equal(orphans, []string{"c3"}) {
		t.Fatalf("List: saved %v orphans %v %v", saved, orphans, err)
	}
	for _, id := range []string{"c1", "c2", "c3", "c9"} {
		if err := st.Remove(id); err != nil {
			t.Fatalf("Remove %s: %v", id, err)
		}
	}
	saved, orphans, err = st.List()
	if err != nil || len(saved) != 0 || len(orphans) != 0 {
		t.Fatalf("after Remove: %v %v %v", saved, orphans, err)
	}
	if saved, _, err := (Store{Dir: filepath.Join(st.Dir, "nothing")}).List(); err != nil || saved != nil {
		t.Fatalf("missing dir: %v %v", saved, err)
	}
}

func TestParseSaved(t *testing.T) {
	cases := []struct {
		in, want, wantErr string
	}{
		{in: `{"cniVersion":"0.3.1","hairpinMode":true,"ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.244.3.0/24"}]],"routes":[{"dst":"10.244.0.0/16"}],"type":"host-local"},"isDefaultGateway":true,"isGateway":true,"mtu":1450,"name":"cbr0","type":"bridge"}`, want: "bridge"},
		{in: "{\"type\":\"ptp\"}\n", want: "ptp"},
		{in: `{"type":""}`, wantErr: "no 'type'"},
		{in: `{}`, wantErr: "no 'type'"},
		{in: `null`, wantErr: "no 'type'"},
		{in: `{"type":1}`, wantErr: "not a JSON object with a string 'type'"},
		{in: `[]`, wantErr: "not a JSON object"},
		{in: `{"type":"bridge"} {}`, wantErr: "not a JSON object"},
		{in: ``, wantErr: "not a JSON object"},
	}
	for _, c := range cases {
		got, err := ParseSaved([]byte(c.in))
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%q: %q %v, want error containing %q", c.in, got, err, c.wantErr)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%q: %q %v, want %q", c.in, got, err, c.want)
		}
	}
}

func FuzzParseSaved(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"0.3.1","ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.244.3.0/24"}]],"type":"host-local"},"name":"cbr0","type":"bridge"}`))
	f.Add([]byte(`{"type":"x"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		typ, err := ParseSaved(data)
		if err == nil && typ == "" {
			t.Fatal("accepted without a type")
		}
		if err != nil {
			return
		}
		// What CHECK sends the delegate is derived from an accepted saved config.
		nc := &NetConf{CNIVersion: "1.1.0", PrevResult: []byte(`{"cniVersion":"1.1.0"}`)}
		if _, err := withPrevResult(data, nc); err != nil {
			t.Fatalf("accepted config cannot carry a prevResult: %v", err)
		}
	})
}
