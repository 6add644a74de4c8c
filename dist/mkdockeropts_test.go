// Package dist_test tests what dist/ ships for nodes: mk-docker-opts.sh (golden output per
// option, run with several POSIX shells, the routing table from a stand-in ip or from a
// network namespace of the test's own) and the docker.service drop-in (systemd-analyze
// verify, and its start commands run as systemd would against a stand-in dockerd).
package dist_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// sampleAll is upstream's output for sample_subnet.env without options.
const sampleAll = `DOCKER_OPT_BIP="--bip=10.1.74.1/24"
DOCKER_OPT_IPMASQ="--ip-masq=true"
DOCKER_OPT_MTU="--mtu=1472"
DOCKER_OPTS=" --bip=10.1.74.1/24 --ip-masq=true --mtu=1472"
`

// The stand-in ip's calls when the script reads the IPv4, the IPv6 or both routing tables.
var (
	ipCalls4  = []string{"-4 route show"}
	ipCalls6  = []string{"-6 route show"}
	ipCalls46 = []string{"-4 route show", "-6 route show"}
)

// scriptRun is one invocation of mk-docker-opts.sh: -f file -d <temporary file> args...
type scriptRun struct {
	file    string   // the subnet file (a relative path is relative to dist/)
	args    []string // options after -f and -d
	env     []string // environment besides PATH
	routes4 string   // what the stand-in prints for "ip -4 route show"
	routes6 string   // ... and for "ip -6 route show"
}

type scriptResult struct {
	out     string // the file written, if any
	wrote   bool
	stderr  string
	code    int
	ipCalls []string // the stand-in ip's arguments, one call per entry
}

// shells returns the POSIX shells to run the script with: dash (Debian's /bin/sh), bash
// in POSIX mode and BusyBox's ash (the /bin/sh of Alpine-based images) when installed.
func shells(t *testing.T) [][]string {
	t.Helper()
	var out [][]string
	for _, sh := range [][]string{{"dash"}, {"bash", "--posix"}, {"busybox", "sh"}} {
		if _, err := exec.LookPath(sh[0]); err == nil {
			out = append(out, sh)
		} else if sh[0] == "dash" {
			t.Fatalf("dash not found (tools/install-deps.sh installs it): %v", err)
		}
	}
	return out
}

// shQuote quotes s for a shell command line.
func shQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// standinIP writes an ip(8) stand-in into dir/bin that prints routes4 for
// "ip -4 route show" and routes6 for "ip -6 route show" and records each call in the
// returned file. It returns a PATH that finds it first.
func standinIP(t *testing.T, dir, routes4, routes6 string) (path, calls string) {
	t.Helper()
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	calls = filepath.Join(dir, "ip-calls")
	r4, r6 := filepath.Join(dir, "routes4"), filepath.Join(dir, "routes6")
	writeFile(t, r4, routes4)
	writeFile(t, r6, routes6)
	standin := fmt.Sprintf(`#!/bin/sh
# stand-in for ip(8): prints the test's routing table and records the call
printf '%%s\n' "$*" >>%s
case "$*" in
"-4 route show") cat %s ;;
"-6 route show") cat %s ;;
*) echo "stand-in ip: unexpected arguments: $*" >&2; exit 2 ;;
esac
`, shQuote(calls), shQuote(r4), shQuote(r6))
	if err := os.WriteFile(filepath.Join(bin, "ip"), []byte(standin), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin + ":" + os.Getenv("PATH"), calls
}

// runScript runs mk-docker-opts.sh with shell, the routing table coming from a stand-in
// ip (standinIP).
func runScript(t *testing.T, shell []string, r scriptRun) scriptResult {
	t.Helper()
	dir := t.TempDir()
	path, calls := standinIP(t, dir, r.routes4, r.routes6)
	out := filepath.Join(dir, "docker_opts.env")
	args := append(slices.Clone(shell[1:]), "mk-docker-opts.sh", "-f", r.file, "-d", out)
	cmd := exec.Command(shell[0], append(args, r.args...)...)
	cmd.Env = append([]string{"PATH=" + path}, r.env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	res := scriptResult{code: exitCode(t, cmd.Run())}
	res.stderr = stderr.String()
	if data, err := os.ReadFile(out); err == nil {
		res.out, res.wrote = string(data), true
	} else if !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(calls); err == nil {
		res.ipCalls = strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	}
	leftovers, _ := filepath.Glob(out + ".*")
	if len(leftovers) > 0 {
		t.Errorf("temporary files left beside the output: %v", leftovers)
	}
	return res
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	default:
		t.Fatalf("run the script: %v", err)
		return -1
	}
}

func TestMkDockerOpts(t *testing.T) {
	const (
		sample = "sample_subnet.env"
		dual   = "testdata/subnet-dualstack.env"
		v6only = "testdata/subnet-ipv6only.env"
	)
	cases := []struct {
		name    string
		run     scriptRun
		want    string   // the file written; "" for none
		code    int      // exit status
		stderr  []string // substrings of the error output
		ipCalls []string
	}{
		// Upstream's cases, byte for byte.
		{name: "default", run: scriptRun{file: sample}, want: sampleAll, ipCalls: ipCalls4},
		{name: "individual", run: scriptRun{file: sample, args: []string{"-i"}}, ipCalls: ipCalls4,
			want: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\n"},
		{name: "combined", run: scriptRun{file: sample, args: []string{"-c"}}, ipCalls: ipCalls4,
			want: "DOCKER_OPTS=\" --bip=10.1.74.1/24 --ip-masq=true --mtu=1472\"\n"},
		{name: "custom key", run: scriptRun{file: sample, args: []string{"-k", "CUSTOM_KEY"}}, ipCalls: ipCalls4,
			want: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\n" +
				"CUSTOM_KEY=\" --bip=10.1.74.1/24 --ip-masq=true --mtu=1472\"\n"},
		{name: "no ip-masq", run: scriptRun{file: sample, args: []string{"-m"}}, ipCalls: ipCalls4,
			want: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\nDOCKER_OPTS=\" --bip=10.1.74.1/24 --mtu=1472\"\n"},
		// Combinations.
		{name: "individual and combined", run: scriptRun{file: sample, args: []string{"-i", "-c"}}, want: sampleAll, ipCalls: ipCalls4},
		{name: "combined, custom key, no ip-masq", run: scriptRun{file: sample, args: []string{"-cmk", "DOCKER_NETWORK_OPTIONS"}}, ipCalls: ipCalls4,
			want: "DOCKER_NETWORK_OPTIONS=\" --bip=10.1.74.1/24 --mtu=1472\"\n"},
		{name: "individual with key", run: scriptRun{file: sample, args: []string{"-i", "-k", "X"}}, ipCalls: ipCalls4,
			want: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\n"},
		{name: "flanneld masquerades", run: scriptRun{file: "testdata/subnet-ipmasq.env"}, ipCalls: ipCalls4,
			want: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=false\"\nDOCKER_OPT_MTU=\"--mtu=1450\"\n" +
				"DOCKER_OPTS=\" --bip=10.1.74.1/24 --ip-masq=false --mtu=1450\"\n"},
		{name: "hand-written file", run: scriptRun{file: "testdata/subnet-handwritten.env"}, want: sampleAll, ipCalls: ipCalls4},
		// The combined variable keeps its value from the environment in front, with two
		// spaces between (upstream's output).
		{name: "combined after the environment's value",
			run:     scriptRun{file: sample, args: []string{"-c"}, env: []string{"DOCKER_OPTS=-H unix:///run/docker.sock"}},
			want:    "DOCKER_OPTS=\"-H unix:///run/docker.sock  --bip=10.1.74.1/24 --ip-masq=true --mtu=1472\"\n",
			ipCalls: ipCalls4},
		{name: "custom key after the environment's value",
			run:     scriptRun{file: sample, args: []string{"-c", "-k", "NET"}, env: []string{"NET=--debug", "DOCKER_OPTS=--ignored"}},
			want:    "NET=\"--debug  --bip=10.1.74.1/24 --ip-masq=true --mtu=1472\"\n",
			ipCalls: ipCalls4},
		// Only the file counts: FLANNEL_* and DOCKER_OPT_* in the environment are ignored.
		{name: "environment ignored",
			run: scriptRun{file: sample, env: []string{"FLANNEL_IPV6_SUBNET=2001:db8::1/64", "FLANNEL_MTU=9000",
				"DOCKER_OPT_DNS=--dns=192.0.2.53", "X=DOCKER_OPT_X"}, args: []string{"-6"}},
			want: sampleAll, ipCalls: ipCalls4},
		{name: "no FLANNEL_SUBNET in the environment either",
			run:  scriptRun{file: "testdata/subnet-nosubnet.env", env: []string{"FLANNEL_SUBNET=10.1.74.1/24"}},
			code: 1, stderr: []string{"FLANNEL_SUBNET is missing in testdata/subnet-nosubnet.env"}},
		// IPv6 only with -6: dual-stack and IPv6-only files.
		{name: "dual-stack without -6", run: scriptRun{file: dual}, ipCalls: ipCalls4,
			want: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=false\"\nDOCKER_OPT_MTU=\"--mtu=1430\"\n" +
				"DOCKER_OPTS=\" --bip=10.1.74.1/24 --ip-masq=false --mtu=1430\"\n"},
		{name: "dual-stack with -6", run: scriptRun{file: dual, args: []string{"-6"}}, ipCalls: ipCalls46,
			want: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\n" +
				"DOCKER_OPT_FIXED_CIDR_V6=\"--fixed-cidr-v6=2001:db8:1:4a::/64\"\n" +
				"DOCKER_OPT_IPMASQ=\"--ip-masq=false\"\n" +
				"DOCKER_OPT_IPV6=\"--ipv6\"\n" +
				"DOCKER_OPT_MTU=\"--mtu=1430\"\n" +
				"DOCKER_OPTS=\" --bip=10.1.74.1/24 --fixed-cidr-v6=2001:db8:1:4a::/64 --ip-masq=false --ipv6 --mtu=1430\"\n"},
		{name: "dual-stack with -6, combined, no ip-masq", run: scriptRun{file: dual, args: []string{"-6", "-c", "-m"}}, ipCalls: ipCalls46,
			want: "DOCKER_OPTS=\" --bip=10.1.74.1/24 --fixed-cidr-v6=2001:db8:1:4a::/64 --ipv6 --mtu=1430\"\n"},
		{name: "IPv6-only with -6", run: scriptRun{file: v6only, args: []string{"-6"}}, ipCalls: ipCalls6,
			want: "DOCKER_OPT_FIXED_CIDR_V6=\"--fixed-cidr-v6=2001:db8:1:4a::/64\"\n" +
				"DOCKER_OPT_IPMASQ=\"--ip-masq=true\"\n" +
				"DOCKER_OPT_IPV6=\"--ipv6\"\n" +
				"DOCKER_OPT_MTU=\"--mtu=1430\"\n" +
				"DOCKER_OPTS=\" --fixed-cidr-v6=2001:db8:1:4a::/64 --ip-masq=true --ipv6 --mtu=1430\"\n"},
		{name: "IPv4-only with -6", run: scriptRun{file: sample, args: []string{"-6"}}, want: sampleAll, ipCalls: ipCalls4},
		{name: "IPv6-only without -6", run: scriptRun{file: v6only},
			code: 1, stderr: []string{"FLANNEL_SUBNET is missing in testdata/subnet-ipv6only.env", "-6"}},
		// Refusals: exit 1, nothing written.
		{name: "no FLANNEL_SUBNET", run: scriptRun{file: "testdata/subnet-nosubnet.env"},
			code: 1, stderr: []string{"FLANNEL_SUBNET is missing in testdata/subnet-nosubnet.env"}},
		{name: "no subnet file", run: scriptRun{file: "testdata/absent.env"},
			code: 1, stderr: []string{"cannot read testdata/absent.env", "flanneld"}},
		{name: "bad FLANNEL_IPMASQ", run: scriptRun{file: "testdata/subnet-badipmasq.env"},
			code: 1, stderr: []string{"Invalid value of FLANNEL_IPMASQ: yes"}},
		// Upstream checks FLANNEL_IPMASQ only when it writes --ip-masq.
		{name: "bad FLANNEL_IPMASQ without ip-masq", run: scriptRun{file: "testdata/subnet-badipmasq.env", args: []string{"-m"}}, ipCalls: ipCalls4,
			want: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\nDOCKER_OPTS=\" --bip=10.1.74.1/24 --mtu=1472\"\n"},
		{name: "unknown option", run: scriptRun{file: sample, args: []string{"-x"}}, code: 1, stderr: []string{"usage:"}},
		{name: "stray argument", run: scriptRun{file: sample, args: []string{"-c", "extra"}}, code: 1, stderr: []string{"unexpected argument: extra"}},
		{name: "bad key", run: scriptRun{file: sample, args: []string{"-k", "A;B"}}, code: 1, stderr: []string{"-k A;B: not a shell variable name"}},
		// The routing table: a route for the subnet itself via a gateway refuses (upstream's
		// message); the subnet's own link route, longer or shorter prefixes, other subnets
		// whose text contains it and the default route do not.
		{name: "route via a gateway", run: scriptRun{file: sample,
			routes4: "default via 192.0.2.1 dev eth0\n10.1.74.0/24 via 192.0.2.7 dev eth0 proto static \n"},
			code: 1, ipCalls: ipCalls4,
			stderr: []string{"Your routing table already contains the subnet: 10.1.74.0/24 via 192.0.2.7 dev eth0 proto static\n",
				"ip route del 10.1.74.0/24"}},
		{name: "multipath route", run: scriptRun{file: sample,
			routes4: "10.1.74.0/24 proto static \n\tnexthop via 192.0.2.7 dev eth0 weight 1 \n\tnexthop via 192.0.2.8 dev eth0 weight 1 \n"},
			code: 1, ipCalls: ipCalls4,
			stderr: []string{"Your routing table already contains the subnet: 10.1.74.0/24 proto static nexthop via 192.0.2.7 dev eth0 weight 1 nexthop via 192.0.2.8 dev eth0 weight 1\n"}},
		{name: "unrelated routes", run: scriptRun{file: sample, routes4: "default via 192.0.2.1 dev eth0\n" +
			"10.1.74.0/24 dev docker0 proto kernel scope link src 10.1.74.1\n" +
			"110.1.74.0/24 via 192.0.2.7 dev eth0\n10.1.74.0/25 via 192.0.2.7 dev eth0\n10.1.0.0/16 via 192.0.2.7 dev eth0\n" +
			"10.1.5.0/24 nhid 7 via 10.1.5.0 dev flannel.1 onlink\nblackhole 10.1.74.0/24\n"},
			want: sampleAll, ipCalls: ipCalls4},
		{name: "IPv6 route via a gateway", run: scriptRun{file: dual, args: []string{"-6"},
			routes4: "10.1.74.0/24 dev docker0 proto kernel scope link src 10.1.74.1\n",
			routes6: "2001:db8:1:4a::/64 via fe80::1 dev eth0 metric 1024 pref medium\n"},
			code: 1, ipCalls: ipCalls46,
			stderr: []string{"Your routing table already contains the subnet: 2001:db8:1:4a::/64 via fe80::1 dev eth0 metric 1024 pref medium\n"}},
		{name: "IPv6 route not checked without -6", run: scriptRun{file: dual,
			routes6: "2001:db8:1:4a::/64 via fe80::1 dev eth0 metric 1024 pref medium\n"},
			ipCalls: ipCalls4,
			want: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=false\"\nDOCKER_OPT_MTU=\"--mtu=1430\"\n" +
				"DOCKER_OPTS=\" --bip=10.1.74.1/24 --ip-masq=false --mtu=1430\"\n"},
	}
	for _, sh := range shells(t) {
		t.Run(strings.Join(sh, " "), func(t *testing.T) {
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					got := runScript(t, sh, tc.run)
					if got.code != tc.code {
						t.Errorf("exit status %d, want %d; stderr:\n%s", got.code, tc.code, got.stderr)
					}
					switch {
					case tc.want == "" && got.wrote:
						t.Errorf("wrote a file, want none:\n%s", got.out)
					case tc.want != "" && got.out != tc.want:
						t.Errorf("wrote:\n%s\nwant:\n%s", got.out, tc.want)
					}
					for _, s := range tc.stderr {
						if !strings.Contains(got.stderr, s) {
							t.Errorf("stderr lacks %q:\n%s", s, got.stderr)
						}
					}
					if tc.code == 0 && got.stderr != "" {
						t.Errorf("stderr not empty:\n%s", got.stderr)
					}
					if !slices.Equal(got.ipCalls, tc.ipCalls) {
						t.Errorf("ip called as %q, want %q", got.ipCalls, tc.ipCalls)
					}
				})
			}
		})
	}
}

// TestMkDockerOptsFile covers the output file: an existing one is replaced with mode
// 0644 and no temporary file left, a refusal leaves it alone, and a file that is not a
// regular file (here standard output) is written in place.
func TestMkDockerOptsFile(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "docker_opts.env")
	if err := os.WriteFile(out, []byte("STALE=1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path, _ := standinIP(t, t.TempDir(), "", "")
	env := []string{"PATH=" + path}
	run := func(file string) error {
		cmd := exec.Command("dash", "mk-docker-opts.sh", "-m", "-f", file, "-d", out)
		cmd.Env = env
		return cmd.Run()
	}
	if err := run("testdata/subnet-nosubnet.env"); err == nil {
		t.Fatal("a subnet file without FLANNEL_SUBNET was accepted")
	}
	if data, _ := os.ReadFile(out); string(data) != "STALE=1\n" {
		t.Errorf("a refusal changed the output file to %q", data)
	}
	if err := run("sample_subnet.env"); err != nil {
		t.Fatalf("run: %v", err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want := "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\nDOCKER_OPTS=\" --bip=10.1.74.1/24 --mtu=1472\"\n"
	if string(data) != want {
		t.Errorf("wrote %q, want %q", data, want)
	}
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("output mode: %v %v, want 0644", fi.Mode(), err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the output file", len(entries))
	}

	cmd := exec.Command("dash", "mk-docker-opts.sh", "-c", "-f", "sample_subnet.env", "-d", "/dev/stdout")
	cmd.Env = env
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("-d /dev/stdout: %v", err)
	}
	if want := "DOCKER_OPTS=\" --bip=10.1.74.1/24 --ip-masq=true --mtu=1472\"\n"; string(stdout) != want {
		t.Errorf("-d /dev/stdout printed %q, want %q", stdout, want)
	}
}

// TestMkDockerOptsNetworks checks the script's network arithmetic against net/netip with
// random subnets: the IPv4 network through the routing-table check (a route for exactly
// that network via a gateway must refuse), the IPv6 one through --fixed-cidr-v6, in
// canonical and in fully written, upper-case form.
func TestMkDockerOptsNetworks(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 34))
	dir := t.TempDir()
	v4 := []netip.Prefix{netip.MustParsePrefix("10.1.74.1/32"), netip.MustParsePrefix("10.1.74.1/0"),
		netip.MustParsePrefix("255.255.255.255/31"), netip.MustParsePrefix("0.0.0.1/1")}
	for range 40 {
		var a4 [4]byte
		for j := range a4 {
			a4[j] = byte(rng.IntN(256))
		}
		v4 = append(v4, netip.PrefixFrom(netip.AddrFrom4(a4), rng.IntN(33)))
	}
	for i, p := range v4 {
		net := p.Masked()
		dst := net.String()
		if net.Bits() == 32 {
			dst = net.Addr().String() // ip(8) leaves out /32
		}
		file := filepath.Join(dir, fmt.Sprintf("v4-%d.env", i))
		writeFile(t, file, fmt.Sprintf("FLANNEL_SUBNET=%s\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n", p))
		route := dst + " via 192.0.2.1 dev eth0"
		got := runScript(t, []string{"dash"}, scriptRun{file: file, routes4: "default via 192.0.2.1 dev eth0\n" + route + "\n"})
		if got.code != 1 || !strings.Contains(got.stderr, "already contains the subnet: "+route+"\n") {
			t.Errorf("FLANNEL_SUBNET=%s with route %q: exit %d, stderr %q; want the route refused", p, route, got.code, got.stderr)
		}
	}
	// A single zero group stays, the first of equally long runs becomes "::".
	v6 := []netip.Prefix{netip.MustParsePrefix("2001:db8:0:1:1:1:1:1/128"), netip.MustParsePrefix("2001:0:0:1:0:0:1:1/128"),
		netip.MustParsePrefix("1:0:0:2:0:0:0:3/128"), netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("1::/128"),
		netip.MustParsePrefix("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/0"), netip.MustParsePrefix("2001:db8::1:0:0:1/127")}
	for len(v6) < 48 {
		var a16 [16]byte
		for j := 0; j < 16; j += 2 {
			if rng.IntN(2) == 0 { // many zero groups, so that "::" moves around
				a16[j], a16[j+1] = byte(rng.IntN(256)), byte(rng.IntN(256))
			}
		}
		if addr := netip.AddrFrom16(a16); !addr.Is4In6() {
			v6 = append(v6, netip.PrefixFrom(addr, rng.IntN(129)))
		}
	}
	for i, p := range v6 {
		text := p.String()
		if i%2 == 1 {
			a16 := p.Addr().As16()
			var g []string
			for j := 0; j < 16; j += 2 {
				g = append(g, fmt.Sprintf("%02X%02X", a16[j], a16[j+1]))
			}
			text = fmt.Sprintf("%s/%d", strings.Join(g, ":"), p.Bits())
		}
		file := filepath.Join(dir, fmt.Sprintf("v6-%d.env", i))
		writeFile(t, file, fmt.Sprintf("FLANNEL_IPV6_SUBNET=%s\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=true\n", text))
		got := runScript(t, []string{"dash"}, scriptRun{file: file, args: []string{"-c", "-6"}})
		want := fmt.Sprintf("DOCKER_OPTS=\" --fixed-cidr-v6=%s --ip-masq=false --ipv6 --mtu=1430\"\n", p.Masked())
		if got.code != 0 || got.out != want {
			t.Errorf("FLANNEL_IPV6_SUBNET=%s: exit %d, wrote %q, want %q; stderr %q", text, got.code, got.out, want, got.stderr)
		}
	}
	for _, bad := range []string{"10.1.74.1", "10.1.74.1/33", "10.1.74/24", "010.1.74.1/24", "10.1.74.256/24",
		"10.1.74.1/24,10.2.0.1/24", "2001:db8::1/64", "10.1.74.1/+24", " /24"} {
		file := filepath.Join(dir, "bad.env")
		writeFile(t, file, "FLANNEL_SUBNET="+bad+"\nFLANNEL_MTU=1450\n")
		got := runScript(t, []string{"dash"}, scriptRun{file: file})
		if got.code != 1 || got.wrote || !strings.Contains(got.stderr, "FLANNEL_SUBNET in "+file+" is not an IPv4 address") {
			t.Errorf("FLANNEL_SUBNET=%s: exit %d, wrote %v, stderr %q; want a refusal", bad, got.code, got.wrote, got.stderr)
		}
	}
	for _, bad := range []string{"2001:db8::1", "2001:db8::1/129", "2001:db8:::1/64", "2001:db8::1::2/64", "1:2:3:4:5:6:7:8:9/64",
		"12345::/16", "fe80::1%eth0/64", "10.1.74.1/24", "::ffff:10.1.74.1/120"} {
		file := filepath.Join(dir, "bad.env")
		writeFile(t, file, "FLANNEL_IPV6_SUBNET="+bad+"\nFLANNEL_MTU=1450\n")
		got := runScript(t, []string{"dash"}, scriptRun{file: file, args: []string{"-6"}})
		if got.code != 1 || got.wrote || !strings.Contains(got.stderr, "FLANNEL_IPV6_SUBNET in "+file+" is not an IPv6 address") {
			t.Errorf("FLANNEL_IPV6_SUBNET=%s: exit %d, wrote %v, stderr %q; want a refusal", bad, got.code, got.wrote, got.stderr)
		}
	}
	file := filepath.Join(dir, "badmtu.env")
	writeFile(t, file, "FLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1450x\n")
	if got := runScript(t, []string{"dash"}, scriptRun{file: file}); got.code != 1 || !strings.Contains(got.stderr, "FLANNEL_MTU") {
		t.Errorf("FLANNEL_MTU=1450x: exit %d, stderr %q; want a refusal", got.code, got.stderr)
	}
}

// TestMkDockerOptsRoutes runs the script against the kernel's routing table in a network
// namespace of its own (gone when the process ends), with real ip output.
func TestMkDockerOptsRoutes(t *testing.T) {
	if testing.Short() {
		t.Skip("needs root for a network namespace")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	file := filepath.Join(t.TempDir(), "subnet.env")
	writeFile(t, file, "FLANNEL_NETWORK=198.51.100.0/24\nFLANNEL_SUBNET=198.51.100.65/26\n"+
		"FLANNEL_IPV6_NETWORK=2001:db8:1::/56\nFLANNEL_IPV6_SUBNET=2001:db8:1:4a::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
	// Every namespace gets a veth pair with addresses on the documentation ranges, so
	// that gateways are on-link; the case adds its routes.
	const link = "ip link add fgv0 type veth peer name fgv1 && ip link set fgv0 up && ip link set fgv1 up && " +
		"ip addr add 192.0.2.1/24 dev fgv0 && ip -6 addr add 2001:db8::1/64 dev fgv0 nodad"
	cases := []struct {
		name   string
		routes string // ip commands run after link
		args   []string
		refuse string // the route named in the refusal; "" for success
	}{
		{name: "empty table"},
		{name: "own link route", routes: "ip addr add 198.51.100.65/26 dev fgv1 && ip route add 198.51.100.0/24 via 192.0.2.2 && " +
			"ip route add 198.51.100.64/27 via 192.0.2.2 && ip route add default via 192.0.2.254",
			args: []string{"-6"}},
		{name: "route via a gateway", routes: "ip route add 198.51.100.64/26 via 192.0.2.2",
			refuse: "198.51.100.64/26 via 192.0.2.2 dev fgv0"},
		{name: "multipath route", routes: "ip route add 198.51.100.64/26 nexthop via 192.0.2.2 nexthop via 192.0.2.3",
			refuse: "198.51.100.64/26 nexthop via 192.0.2.2 dev fgv0 weight 1 nexthop via 192.0.2.3 dev fgv0 weight 1"},
		{name: "IPv6 route via a gateway", routes: "ip -6 route add 2001:db8:1:4a::/64 via 2001:db8::2", args: []string{"-6"},
			refuse: "2001:db8:1:4a::/64 via 2001:db8::2 dev fgv0 metric 1024"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			script := link
			if tc.routes != "" {
				script += " && " + tc.routes
			}
			script += ` && exec dash mk-docker-opts.sh "$@"`
			cmd := exec.Command("sh", append([]string{"-c", script, "sh", "-c", "-f", file, "-d", "/dev/stdout"}, tc.args...)...)
			cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			code := exitCode(t, err)
			if tc.refuse == "" {
				if code != 0 || !strings.HasPrefix(string(out), `DOCKER_OPTS=" --bip=198.51.100.65/26 `) {
					t.Errorf("exit %d, printed %q; stderr:\n%s", code, out, stderr.String())
				}
				return
			}
			if code != 1 || len(out) != 0 ||
				!strings.Contains(stderr.String(), "Your routing table already contains the subnet: "+tc.refuse) {
				t.Errorf("exit %d, printed %q, stderr:\n%s\nwant a refusal naming %q", code, out, stderr.String(), tc.refuse)
			}
		})
	}
}

// TestMkDockerOptsShellcheck holds the script to POSIX sh: shellcheck -s sh finds nothing.
func TestMkDockerOptsShellcheck(t *testing.T) {
	out, err := exec.Command(needTool(t, "shellcheck", "shellcheck"), "-s", "sh", "mk-docker-opts.sh").CombinedOutput()
	if err != nil || len(out) != 0 {
		t.Errorf("shellcheck -s sh mk-docker-opts.sh: %v\n%s", err, out)
	}
}

// needTool skips the test when a command is missing, or fails it under CI=true, where
// tools/install-deps.sh must have installed it.
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true: %s not found (Debian package %s, tools/install-deps.sh)", name, pkg)
		}
		t.Skipf("%s not found (Debian package %s)", name, pkg)
	}
	return p
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}
