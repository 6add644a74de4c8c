package dist_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// standinFlanneld records its arguments, NUL-terminated, and its FLANNELD_* environment.
const standinFlanneld = `#!/bin/sh
# stand-in for flanneld: records its arguments and FLANNELD_* variables, and exits
printf '%s\0' "$@" >/run/flanneld.args
env | grep '^FLANNELD_' | sort >/run/flanneld.env
exit 0
`

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
			recorded, err := os.ReadFile(filepath.Join(root, "run/flanneld.args"))
			if err != nil {
				t.Fatalf("flanneld did not run: %v; log:\n%s", err, log)
			}
			got := []string{}
			if s := strings.TrimSuffix(string(recorded), "\x00"); s != "" {
				got = strings.Split(s, "\x00")
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("flanneld ran with\n%q\nwant\n%q\nlog:\n%s", got, tc.want, log)
			}
			env, err := os.ReadFile(filepath.Join(root, "run/flanneld.env"))
			if err != nil || string(env) != tc.wantEnv {
				t.Errorf("flanneld's FLANNELD_* environment %q (%v), want %q", env, err, tc.wantEnv)
			}
		})
	}
}
