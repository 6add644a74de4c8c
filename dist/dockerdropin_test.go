package dist_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const dropIn = "docker.service.d/flannel.conf"

// dockerFlavour is one packaging of Docker: its units (in testdata/<dir>) and where its
// docker.service is installed.
type dockerFlavour struct {
	dir      string
	unitPath string
}

var dockerFlavours = []dockerFlavour{
	{dir: "docker-ce", unitPath: "/usr/lib/systemd/system"}, // Docker's own packages
	{dir: "docker.io", unitPath: "/lib/systemd/system"},     // Debian's docker.io
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, mode); err != nil {
		t.Fatal(err)
	}
}

func systemdPath(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command(needTool(t, "systemd-path", "systemd"), name).Output()
	if err != nil {
		t.Fatalf("systemd-path %s: %v", name, err)
	}
	return strings.TrimSpace(string(out))
}

// verifyRoot builds a file system root for systemd-analyze verify --root: the flavour's
// docker.service and docker.socket where its package puts them, dist/flanneld.service
// and the drop-in in /etc/systemd/system, the targets they depend on from this host's
// systemd, and the executables the units name (merged /usr, as on Debian 12).
func verifyRoot(t *testing.T, f dockerFlavour, dropInText string) string {
	t.Helper()
	root := t.TempDir()
	for _, l := range []struct{ link, target string }{{"bin", "usr/bin"}, {"sbin", "usr/sbin"}, {"lib", "usr/lib"}} {
		if err := os.MkdirAll(filepath.Join(root, l.target), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(l.target, filepath.Join(root, l.link)); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range []string{"docker.service", "docker.socket"} {
		copyFile(t, filepath.Join("testdata", f.dir, u), filepath.Join(root, f.unitPath, u), 0o644)
	}
	etc := filepath.Join(root, "etc/systemd/system")
	copyFile(t, "flanneld.service", filepath.Join(etc, "flanneld.service"), 0o644)
	if err := os.MkdirAll(filepath.Join(etc, "docker.service.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(etc, dropIn), dropInText)
	hostUnits := systemdPath(t, "systemd-system-unit")
	targets, _ := filepath.Glob(filepath.Join(hostUnits, "*.target"))
	if len(targets) == 0 {
		t.Fatalf("no targets in %s", hostUnits)
	}
	for _, tg := range targets {
		if fi, err := os.Stat(tg); err == nil && fi.Mode().IsRegular() {
			copyFile(t, tg, filepath.Join(root, "usr/lib/systemd/system", filepath.Base(tg)), 0o644)
		}
	}
	for _, exe := range []string{"env", "kill", "sh"} {
		p := needTool(t, exe, "coreutils, procps, dash")
		copyFile(t, p, filepath.Join(root, "usr/bin", exe), 0o755)
	}
	copyFile(t, "mk-docker-opts.sh", filepath.Join(root, "usr/local/bin/mk-docker-opts.sh"), 0o755)
	return root
}

// TestDockerDropInVerify runs systemd-analyze verify on docker.service with the drop-in,
// for Docker's own unit and for Debian's, together with dist/flanneld.service: no
// message at all is allowed. Two broken drop-ins show that verify does look.
func TestDockerDropInVerify(t *testing.T) {
	analyze := needTool(t, "systemd-analyze", "systemd")
	text, err := os.ReadFile(dropIn)
	if err != nil {
		t.Fatal(err)
	}
	verify := func(root string) (string, error) {
		cmd := exec.Command(analyze, "verify", "--man=no", "--root="+root, "docker.service", "flanneld.service")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for _, f := range dockerFlavours {
		t.Run(f.dir, func(t *testing.T) {
			out, err := verify(verifyRoot(t, f, string(text)))
			if err != nil || out != "" {
				t.Errorf("systemd-analyze verify: %v\n%s", err, out)
			}

			noReset := strings.Replace(string(text), "ExecStart=\n", "", 1)
			if noReset == string(text) {
				t.Fatal("the drop-in has no ExecStart= reset")
			}
			out, err = verify(verifyRoot(t, f, noReset))
			if err == nil || !strings.Contains(out, "more than one ExecStart=") {
				t.Errorf("verify accepted a drop-in that adds a second ExecStart=: %v\n%s", err, out)
			}
			root := verifyRoot(t, f, string(text))
			os.Remove(filepath.Join(root, "usr/local/bin/mk-docker-opts.sh"))
			out, err = verify(root)
			if err == nil || !strings.Contains(out, "/usr/local/bin/mk-docker-opts.sh") {
				t.Errorf("verify accepted a missing mk-docker-opts.sh: %v\n%s", err, out)
			}
		})
	}
}

// standinDockerd records its arguments, NUL-terminated, in /run/dockerd.args.
const standinDockerd = `#!/bin/sh
# stand-in for dockerd: records its arguments and exits
printf '%s\0' "$@" >/run/dockerd.args
`

// TestDockerDropInStart starts docker.service with the drop-in as systemd would
// (ExecStartPre=, then ExecStart= with the environment files read again) for both
// flavours, against a stand-in dockerd that records its arguments. The commands run
// with the test's files mounted over /run, /etc/default, /usr/local/bin and
// /usr/local/sbin (the stand-in) in a namespace of their own.
func TestDockerDropInStart(t *testing.T) {
	if testing.Short() {
		t.Skip("needs root for mount and network namespaces")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for mount and network namespaces")
	}
	path := systemdPath(t, "search-binaries-default")
	dirs := filepath.SplitList(path)
	if dirs[0] != "/usr/local/sbin" || !slices.Contains(dirs, "/usr/bin") || !slices.Contains(dirs, "/usr/sbin") {
		t.Fatalf("systemd's PATH %s: want /usr/local/sbin (the stand-in) first, and /usr/bin and /usr/sbin (dockerd of both flavours)", path)
	}
	binds := []string{"/etc/default", "/usr/local/bin", "/usr/local/sbin", "/run"}
	base := []string{"-H", "fd://", "--containerd=/run/containerd/containerd.sock"}
	sampleArgs := []string{"--bip=10.1.74.1/24", "--ip-masq=true", "--mtu=1472"}
	ipmasqArgs := []string{"--bip=10.1.74.1/24", "--ip-masq=false", "--mtu=1450"}

	cases := []struct {
		name          string
		flavour       string
		subnetFiles   []string // subnet.env at each start (restarts); "" for none
		defaultDocker string   // /etc/default/docker; "" for none
		ipv6          bool     // the drop-in edited to run mk-docker-opts.sh with -6
		want          []string // dockerd's arguments after the last start; nil: not started
	}{
		{name: "docker-ce", flavour: "docker-ce", subnetFiles: []string{"sample_subnet.env"},
			want: append(base, sampleArgs...)},
		{name: "docker.io", flavour: "docker.io", subnetFiles: []string{"sample_subnet.env"},
			defaultDocker: "testdata/docker.io/default-docker", want: append(base, sampleArgs...)},
		{name: "docker.io without /etc/default/docker", flavour: "docker.io", subnetFiles: []string{"testdata/subnet-ipmasq.env"},
			want: append(base, ipmasqArgs...)},
		{name: "docker.io with DOCKER_OPTS", flavour: "docker.io", subnetFiles: []string{"testdata/subnet-ipmasq.env"},
			defaultDocker: "DOCKER_OPTS=\"--dns 192.0.2.53 --log-level=warn\"\n",
			want:          append(append(base, "--dns", "192.0.2.53", "--log-level=warn"), ipmasqArgs...)},
		// The options written at the first start are in the environment of the second
		// start's ExecStartPre: the new options replace them, nothing accumulates.
		{name: "docker-ce restarted after the subnet changed", flavour: "docker-ce",
			subnetFiles: []string{"sample_subnet.env", "testdata/subnet-ipmasq.env"}, want: append(base, ipmasqArgs...)},
		{name: "docker.io restarted after the subnet changed", flavour: "docker.io",
			subnetFiles: []string{"testdata/subnet-ipmasq.env", "sample_subnet.env"}, want: append(base, sampleArgs...)},
		{name: "docker-ce with -6, dual-stack", flavour: "docker-ce", subnetFiles: []string{"testdata/subnet-dualstack.env"}, ipv6: true,
			want: append(base, "--bip=10.1.74.1/24", "--ip-masq=false", "--mtu=1430", "--fixed-cidr-v6=2001:db8:1:4a::/64", "--ipv6")},
		{name: "docker.io with -6, IPv6-only", flavour: "docker.io", subnetFiles: []string{"testdata/subnet-ipv6only.env"}, ipv6: true,
			want: append(base, "--ip-masq=true", "--mtu=1430", "--fixed-cidr-v6=2001:db8:1:4a::/64", "--ipv6")},
		{name: "no subnet file", flavour: "docker-ce", subnetFiles: []string{""}},
		{name: "no FLANNEL_SUBNET", flavour: "docker.io", subnetFiles: []string{"testdata/subnet-nosubnet.env"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			conf := dropIn
			if tc.ipv6 {
				text, err := os.ReadFile(dropIn)
				if err != nil {
					t.Fatal(err)
				}
				edited := strings.Replace(string(text), "mk-docker-opts.sh -i ", "mk-docker-opts.sh -6 -i ", 1)
				if edited == string(text) {
					t.Fatal("no mk-docker-opts.sh -i in the drop-in")
				}
				conf = filepath.Join(t.TempDir(), "flannel.conf")
				writeFile(t, conf, edited)
			}
			svc := loadService(t, filepath.Join("testdata", tc.flavour, "docker.service"), conf)
			for _, b := range binds {
				if err := os.MkdirAll(filepath.Join(root, b), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			copyFile(t, "mk-docker-opts.sh", filepath.Join(root, "usr/local/bin/mk-docker-opts.sh"), 0o755)
			writeFile(t, filepath.Join(root, "usr/local/sbin/dockerd"), standinDockerd)
			if err := os.Chmod(filepath.Join(root, "usr/local/sbin/dockerd"), 0o755); err != nil {
				t.Fatal(err)
			}
			switch {
			case strings.HasPrefix(tc.defaultDocker, "testdata/"):
				copyFile(t, tc.defaultDocker, filepath.Join(root, "etc/default/docker"), 0o644)
			case tc.defaultDocker != "":
				writeFile(t, filepath.Join(root, "etc/default/docker"), tc.defaultDocker)
			}
			argsFile := filepath.Join(root, "run/dockerd.args")
			var log string
			var err error
			for _, sf := range tc.subnetFiles {
				os.Remove(argsFile)
				if sf != "" {
					copyFile(t, sf, filepath.Join(root, "run/flannel/subnet.env"), 0o644)
				}
				log, err = startService(t, svc, path, root, binds)
			}
			recorded, rerr := os.ReadFile(argsFile)
			if tc.want == nil {
				if err == nil || rerr == nil {
					t.Errorf("docker started without a usable subnet file (recorded %q); log:\n%s", recorded, log)
				}
				if !strings.Contains(log, "mk-docker-opts.sh: ") {
					t.Errorf("the log does not show mk-docker-opts.sh's reason:\n%s", log)
				}
				return
			}
			if err != nil || rerr != nil {
				t.Fatalf("start: %v, dockerd arguments: %v; log:\n%s", err, rerr, log)
			}
			got := strings.Split(strings.TrimSuffix(string(recorded), "\x00"), "\x00")
			if !slices.Equal(got, tc.want) {
				t.Errorf("dockerd ran with\n%q\nwant\n%q\nlog:\n%s", got, tc.want, log)
			}
			if opts, err := os.ReadFile(filepath.Join(root, "run/flannel/docker_opts.env")); err != nil ||
				!bytes.HasPrefix(opts, []byte("DOCKER_OPT_")) {
				t.Errorf("/run/flannel/docker_opts.env: %v %q", err, opts)
			}
		})
	}
}

// TestDockerDropInOrdering checks the dependencies between docker.service and
// flanneld.service that verify cannot judge: Docker wants flanneld and starts after it
// (after READY=1, once the subnet file is written), and nothing ties Docker's life to
// flanneld's, so restarting or stopping flanneld leaves Docker and its containers alone.
func TestDockerDropInOrdering(t *testing.T) {
	deps := func(file string) map[string][]string {
		m := map[string][]string{}
		for _, kv := range readUnitFile(t, file) {
			if kv.section == "Unit" || kv.section == "Install" {
				m[kv.key] = append(m[kv.key], strings.Fields(kv.value)...)
			}
		}
		return m
	}
	docker, flanneld := deps(dropIn), deps("flanneld.service")
	for _, c := range []struct {
		units map[string][]string
		key   string
		other string
		want  bool
	}{
		{docker, "Wants", "flanneld.service", true},
		{docker, "After", "flanneld.service", true},
		{flanneld, "Before", "docker.service", true},
		{flanneld, "WantedBy", "docker.service", true},
		{docker, "Requires", "flanneld.service", false},
		{docker, "BindsTo", "flanneld.service", false},
		{docker, "PartOf", "flanneld.service", false},
		{docker, "Requisite", "flanneld.service", false},
		{flanneld, "RequiredBy", "docker.service", false},
	} {
		if got := slices.Contains(c.units[c.key], c.other); got != c.want {
			t.Errorf("%s=%s present: %v, want %v", c.key, c.other, got, c.want)
		}
	}
}
