package dist_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// standinFlanneld records its arguments and its FLANNEL* variables (FLANNELD_* ones
// included), each NUL-terminated; recorded reads them back.
const standinFlanneld = `#!/bin/sh
# stand-in for flanneld: records its arguments and environment and exits
: >/run/flanneld.args
[ $# -eq 0 ] || printf '%s\0' "$@" >/run/flanneld.args
env | grep '^FLANNEL' | sort | tr '\n' '\0' >/run/flanneld.env
`

// recorded is what the stand-in flanneld under root recorded of its last run: its
// arguments and its FLANNEL* variables ("NAME=value"), nil for none.
func recorded(t *testing.T, root string) (args, env []string) {
	t.Helper()
	split := func(f string) []string {
		data, err := os.ReadFile(filepath.Join(root, "run", f))
		if err != nil {
			t.Fatalf("flanneld did not run: %v", err)
		}
		if len(data) == 0 {
			return nil
		}
		return strings.Split(strings.TrimSuffix(string(data), "\x00"), "\x00")
	}
	return split("flanneld.args"), split("flanneld.env")
}

// TestFlanneldServiceStart starts dist/flanneld.service as systemd would, against a
// stand-in flanneld, with the environment files of the packages that came before: the
// RPM-era /etc/sysconfig/flanneld under its older (FLANNEL_ETCD, FLANNEL_ETCD_KEY) and
// newer (FLANNEL_ETCD_ENDPOINTS, FLANNEL_ETCD_PREFIX) names, and Debian's
// /etc/default/flanneld with FLANNELD_* variables, which reach flanneld untouched.
func TestFlanneldServiceStart(t *testing.T) {
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("needs root for mount and network namespaces")
	}
	path := systemdPath(t, "search-binaries-default")
	binds := []string{"/usr/local/bin", "/run", "/etc"}
	cases := []struct {
		name      string
		sysconfig string // /etc/sysconfig/flanneld ("": none)
		deflt     string // /etc/default/flanneld ("": none)
		want      []string
		wantEnv   string
	}{
		{name: "no environment file", want: []string{}},
		{name: "older names", sysconfig: "FLANNEL_ETCD=\"http://192.0.2.254:2379\"\nFLANNEL_ETCD_KEY=\"/atomic.io/network\"\n",
			want: []string{"-etcd-endpoints=http://192.0.2.254:2379", "-etcd-prefix=/atomic.io/network"}},
		{name: "newer names", sysconfig: "FLANNEL_ETCD_ENDPOINTS=http://192.0.2.254:2379,http://192.0.2.253:2379\nFLANNEL_ETCD_PREFIX=/coreos.com/network\nFLANNEL_OPTIONS=\"-iface=eth1 -ip-masq\"\n",
			want: []string{"-etcd-endpoints=http://192.0.2.254:2379,http://192.0.2.253:2379", "-etcd-prefix=/coreos.com/network", "-iface=eth1", "-ip-masq"}},
		{name: "both names: the newer wins", sysconfig: "FLANNEL_ETCD=http://192.0.2.1:2379\nFLANNEL_ETCD_ENDPOINTS=http://192.0.2.254:2379\nFLANNEL_ETCD_KEY=/old\nFLANNEL_ETCD_PREFIX=/new\n",
			want: []string{"-etcd-endpoints=http://192.0.2.254:2379", "-etcd-prefix=/new"}},
		{name: "older endpoints name alone", sysconfig: "FLANNEL_ETCD=http://192.0.2.254:2379\nFLANNEL_OPTIONS=-iface=eth0\n",
			want: []string{"-etcd-endpoints=http://192.0.2.254:2379", "-iface=eth0"}},
		{name: "FLANNELD variables", deflt: "FLANNELD_ETCD_ENDPOINTS=http://192.0.2.254:2379\nFLANNELD_IFACE=eth0\n",
			want: []string{}, wantEnv: "FLANNELD_ETCD_ENDPOINTS=http://192.0.2.254:2379\nFLANNELD_IFACE=eth0\n"},
	}
	svc := loadService(t, "flanneld.service")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for _, b := range append(binds, "/etc/default", "/etc/sysconfig") {
				if err := os.MkdirAll(filepath.Join(root, b), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			// /etc is replaced for the commands: keep the dynamic loader's cache.
			if _, err := os.Stat("/etc/ld.so.cache"); err == nil {
				copyFile(t, "/etc/ld.so.cache", filepath.Join(root, "etc/ld.so.cache"), 0o644)
			}
			writeFile(t, filepath.Join(root, "usr/local/bin/flanneld"), standinFlanneld)
			if err := os.Chmod(filepath.Join(root, "usr/local/bin/flanneld"), 0o755); err != nil {
				t.Fatal(err)
			}
			if tc.sysconfig != "" {
				writeFile(t, filepath.Join(root, "etc/sysconfig/flanneld"), tc.sysconfig)
			}
			if tc.deflt != "" {
				writeFile(t, filepath.Join(root, "etc/default/flanneld"), tc.deflt)
			}
			log, err := startService(t, svc, path, root, binds)
			if err != nil {
				t.Fatalf("start: %v; log:\n%s", err, log)
			}
			got, vars := recorded(t, root)
			if !slices.Equal(got, tc.want) {
				t.Errorf("flanneld ran with\n%q\nwant\n%q\nlog:\n%s", got, tc.want, log)
			}
			var env strings.Builder
			for _, v := range vars {
				if strings.HasPrefix(v, "FLANNELD_") {
					env.WriteString(v + "\n")
				}
			}
			if env.String() != tc.wantEnv {
				t.Errorf("flanneld's FLANNELD_* environment %q, want %q", env.String(), tc.wantEnv)
			}
		})
	}
}
