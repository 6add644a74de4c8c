package dist_test

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// diagnoseMarker precedes, in the troubleshooting guide, the diagnose command line for
// systemd hosts.
const diagnoseMarker = "<!-- systemd-diagnose -->"

// documentedDiagnose is the shell script of the guide's `sudo sh -c '...'` block.
func documentedDiagnose(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile("../Documentation/troubleshooting.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(doc), diagnoseMarker+"\n```sh\n")
	block, _, ok2 := strings.Cut(after, "\n```\n")
	script, ok3 := strings.CutPrefix(block, "sudo sh -c '")
	script, ok4 := strings.CutSuffix(script, "'")
	if !ok || !ok2 || !ok3 || !ok4 || strings.Contains(script, "'") {
		t.Fatalf("no `sudo sh -c '...'` block after %s in troubleshooting.md", diagnoseMarker)
	}
	return script
}

// TestDiagnoseCommandLineMatchesUnit runs the unit's ExecStart= as systemd would and the
// guide's diagnose command line, both against the same environment files and a stand-in
// flanneld, and wants the same arguments (after "diagnose") and the same FLANNEL*
// variables: diagnose then sees exactly what the daemon does.
func TestDiagnoseCommandLineMatchesUnit(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for mount and network namespaces")
	}
	path := systemdPath(t, "search-binaries-default")
	script := documentedDiagnose(t)
	svc := loadService(t, "flanneld.service")
	binds := []string{"/etc", "/usr/local/bin", "/run"}
	cases := []struct {
		name              string
		defaults, sysconf string // the files' contents; "" for no file
	}{
		{name: "both files",
			defaults: "FLANNELD_IFACE=eth1\nFLANNELD_ETCD_CAFILE=/etc/flannel/ca.pem\n",
			sysconf: "FLANNEL_ETCD_ENDPOINTS=https://192.0.2.254:2379,https://192.0.2.253:2379\n" +
				"FLANNEL_ETCD_PREFIX=/example.com/network\nFLANNEL_OPTIONS=\"--ip-masq --iface-regex=^eth\"\n"},
		{name: "only /etc/default/flanneld", defaults: "FLANNELD_ETCD_ENDPOINTS=http://192.0.2.254:2379\nFLANNELD_IP_MASQ=true\n"},
		{name: "only /etc/sysconfig/flanneld, no options", sysconf: "FLANNEL_ETCD_ENDPOINTS=http://192.0.2.254:2379\n"},
		{name: "sysconfig overrides defaults", defaults: "FLANNEL_OPTIONS=--iface=eth0\n", sysconf: "FLANNEL_OPTIONS='--iface=eth2 -v=2'\n"},
		{name: "no files"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for _, b := range binds {
				if err := os.MkdirAll(filepath.Join(root, b), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			// The dynamic loader's cache, for the commands run with root/etc as /etc.
			if _, err := os.Stat("/etc/ld.so.cache"); err == nil {
				copyFile(t, "/etc/ld.so.cache", filepath.Join(root, "etc/ld.so.cache"), 0o644)
			}
			for file, text := range map[string]string{"etc/default/flanneld": tc.defaults, "etc/sysconfig/flanneld": tc.sysconf} {
				if text != "" {
					if err := os.MkdirAll(filepath.Join(root, filepath.Dir(file)), 0o755); err != nil {
						t.Fatal(err)
					}
					writeFile(t, filepath.Join(root, file), text)
				}
			}
			writeFile(t, filepath.Join(root, "usr/local/bin/flanneld"), standinFlanneld)
			if err := os.Chmod(filepath.Join(root, "usr/local/bin/flanneld"), 0o755); err != nil {
				t.Fatal(err)
			}
			log, err := startService(t, svc, path, root, binds)
			if err != nil {
				t.Fatalf("the unit's ExecStart: %v\n%s", err, log)
			}
			unitArgs, unitEnv := recorded(t, root)

			var out bytes.Buffer
			if err := runMounted([]string{"/bin/sh", "-c", script}, map[string]string{"PATH": path}, root, binds, &out); err != nil {
				t.Fatalf("the guide's command line: %v\n%s", err, out.String())
			}
			args, env := recorded(t, root)
			if want := append([]string{"diagnose"}, unitArgs...); !slices.Equal(args, want) {
				t.Errorf("the guide runs flanneld %q, want %q (the unit's arguments after diagnose)\n%s%s", args, want, log, out.String())
			}
			if !slices.Equal(env, unitEnv) {
				t.Errorf("the guide's FLANNEL* variables %q, the unit's %q", env, unitEnv)
			}
		})
	}
}
