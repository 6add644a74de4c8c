package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flannel-go/flannel/diagnose"
	"github.com/flannel-go/flannel/e2e/lab"
)

// diagnosis is one run of flanneld diagnose.
type diagnosis struct {
	code   int
	report diagnose.Report
	out    string // stdout and stderr
}

// text renders the report one check a line, for failure messages.
func (d diagnosis) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "exit %d\n", d.code)
	for _, c := range d.report.Checks {
		fmt.Fprintf(&b, "  %-7s %-16s %s", c.Outcome, c.Name, c.Evidence)
		if c.Fix != "" {
			fmt.Fprintf(&b, " | fix: %s", c.Fix)
		}
		if len(c.Objects) > 0 {
			fmt.Fprintf(&b, " | objects: %q", c.Objects)
		}
		b.WriteByte('\n')
	}
	if len(d.report.Checks) == 0 {
		b.WriteString(d.out)
	}
	return b.String()
}

func (d diagnosis) check(name string) diagnose.Result {
	for _, c := range d.report.Checks {
		if c.Name == name {
			return c
		}
	}
	return diagnose.Result{}
}

func (d diagnosis) failed() []string {
	var out []string
	for _, c := range d.report.Checks {
		if c.Outcome == diagnose.Failed {
			out = append(out, c.Name)
		}
	}
	return out
}

// toolCommand is `flanneld <sub>` in node i's namespace with the daemon's lab flags
// (without -v) followed by extra.
func toolCommand(l *lab.Lab, i int, sub string, extra ...string) []string {
	cmd := []string{"ip", "netns", "exec", l.NodeNS(i), flanneld.bin, sub}
	for _, a := range l.FlanneldArgs(i) {
		if !strings.HasPrefix(a, "-v=") {
			cmd = append(cmd, a)
		}
	}
	return append(cmd, extra...)
}

// runCommand runs argv (with env added) and returns its exit status, stdout and all of
// its output.
func runCommand(t *testing.T, argv []string, env ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, all strings.Builder
	cmd.Stdout = &multiWriter{&stdout, &all}
	cmd.Stderr = &all
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%v: still running after 2 minutes\n%s", argv, all.String())
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), stdout.String(), all.String()
	}
	if err != nil {
		t.Fatalf("%v: %v", argv, err)
	}
	return 0, stdout.String(), all.String()
}

type multiWriter struct{ a, b *strings.Builder }

func (m *multiWriter) Write(p []byte) (int, error) {
	m.a.Write(p)
	return m.b.Write(p)
}

// runDiagnoseArgv runs a diagnose command line with --output=json and decodes the report.
func runDiagnoseArgv(t *testing.T, argv []string, env ...string) diagnosis {
	t.Helper()
	code, stdout, all := runCommand(t, append(argv, "--output=json"), env...)
	d := diagnosis{code: code, out: all}
	if err := json.Unmarshal([]byte(stdout), &d.report); err != nil {
		t.Fatalf("%v: exit %d, no JSON report: %v\n%s", argv, code, err, all)
	}
	if d.report.SchemaVersion != diagnose.SchemaVersion {
		t.Fatalf("schema version %d", d.report.SchemaVersion)
	}
	return d
}

// diagnoseNode runs flanneld diagnose on node i, probing every peer, with cniDir as
// --cni-conf-dir.
func diagnoseNode(t *testing.T, l *lab.Lab, i int, cniDir string, extra ...string) diagnosis {
	t.Helper()
	args := append([]string{"--peers=all", "--cni-conf-dir=" + cniDir}, extra...)
	return runDiagnoseArgv(t, toolCommand(l, i, "diagnose", args...))
}

// wantHealthy polls diagnose on node i until it exits 0 (the cluster may still be
// converging after a repair), failing with the last report.
func wantHealthy(t *testing.T, l *lab.Lab, i int, cniDir string, extra ...string) diagnosis {
	t.Helper()
	var d diagnosis
	deadline := time.Now().Add(convergeTimeout)
	for {
		d = diagnoseNode(t, l, i, cniDir, extra...)
		if d.code == 0 && len(d.failed()) == 0 {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %d: diagnose does not pass on the healthy cluster after %v:\n%s", i, convergeTimeout, d.text())
		}
		time.Sleep(2 * time.Second)
	}
}

// wantFault asserts that d exits 1 with check failed, its evidence saying says and its
// objects naming object (when not empty).
func wantFault(t *testing.T, d diagnosis, check, says, object string) {
	t.Helper()
	c := d.check(check)
	switch {
	case d.code != 1:
		t.Errorf("exit %d, want 1:\n%s", d.code, d.text())
	case c.Outcome != diagnose.Failed:
		t.Errorf("%s is %q, want failed:\n%s", check, c.Outcome, d.text())
	case !strings.Contains(c.Evidence, says):
		t.Errorf("%s evidence %q does not say %q", check, c.Evidence, says)
	case object != "" && !slices.Contains(c.Objects, object):
		t.Errorf("%s objects %q do not name %q", check, c.Objects, object)
	case c.Fix == "":
		t.Errorf("%s failed without a fix", check)
	default:
		t.Logf("%s: %s | fix: %s", check, c.Evidence, c.Fix)
	}
}

// cniConfDir is a CNI config directory holding the flannel conflist of the manifest.
func cniConfDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "net.d")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	conf := `{"name":"cbr0","cniVersion":"0.3.1","plugins":[{"type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}},{"type":"portmap","capabilities":{"portMappings":true}}]}`
	if err := os.WriteFile(filepath.Join(dir, "10-flannel.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// nsCmd runs a command in a lab namespace and fails the test on error.
func nsCmd(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %v\n%s", ns, args, err, out)
	}
	return string(out)
}

var (
	iptCounters = regexp.MustCompile(`\[\d+:\d+\]`)
	nftHandles  = regexp.MustCompile(` # handle \d+`)
	operState   = regexp.MustCompile(` state [A-Z]+ `)
)

// kernelState is what the daemon owns in node i's kernel, in text that changes only
// when it does: links, addresses, routes, permanent neighbour and FDB entries, and the
// traffic rules.
func kernelState(t *testing.T, l *lab.Lab, i int) string {
	t.Helper()
	ns := l.NodeNS(i)
	var b strings.Builder
	for _, args := range [][]string{
		{"ip", "link", "show"},
		{"ip", "-d", "link", "show", "type", "vxlan"},
		{"ip", "-4", "addr", "show"},
		{"ip", "-6", "addr", "show", "scope", "global"},
		{"ip", "route", "show", "table", "all"},
		{"ip", "-6", "route", "show", "table", "all"},
		{"ip", "neigh", "show", "nud", "permanent"},
		{"ip", "nexthop", "show"},
		{"iptables-save"},
		{"nft", "list", "ruleset"},
	} {
		out := nsCmd(t, ns, args...)
		out = iptCounters.ReplaceAllString(out, "")
		out = nftHandles.ReplaceAllString(out, "")
		out = operState.ReplaceAllString(out, " ") // a bridge's settles on the kernel's time
		var keep []string
		for _, line := range strings.Split(out, "\n") {
			// Link-local addresses come and go with the kernel's duplicate address
			// detection, on its own time.
			if !strings.HasPrefix(line, "#") && !strings.Contains(line, "fe80::") {
				keep = append(keep, line)
			}
		}
		fmt.Fprintf(&b, "== %s\n%s\n", strings.Join(args, " "), strings.Join(keep, "\n"))
	}
	for _, line := range strings.Split(nsCmd(t, ns, "bridge", "fdb", "show"), "\n") {
		if strings.Contains(line, "permanent") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

func etcdRevision(t *testing.T, l *lab.Lab) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := l.Etcd().Get(ctx, "/diagnose-revision-probe")
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// newDiagnoseLab is a healthy three-node vxlan cluster with a pod on each node (so each
// node has its cni0 bridge), its etcd serving the v2 API too.
func newDiagnoseLab(t *testing.T, tag string, etcdArgs ...string) *lab.Lab {
	t.Helper()
	l := newLab(t, tag, 3, func(o *lab.Options) { o.EtcdArgs = etcdArgs })
	startAll(t, l, vxlanConfig)
	waitFullMesh(t, l, "flannel.1", infos(t, l, "flannel.1"))
	for i := 1; i <= 3; i++ {
		if _, err := l.AddPod(i, 0); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// diagnose changes nothing: the kernel state of every node and the etcd revision are
// the same after a run as before, with the daemon running and with it stopped.
func TestDiagnoseReadsOnly(t *testing.T) {
	l := newDiagnoseLab(t, "diagro")
	cni := cniConfDir(t)
	for i := 1; i <= 3; i++ {
		wantHealthy(t, l, i, cni)
	}
	check := func(when string) {
		t.Helper()
		var before []string
		for i := 1; i <= 3; i++ {
			before = append(before, kernelState(t, l, i))
		}
		rev := etcdRevision(t, l)
		for i := 1; i <= 3; i++ {
			diagnoseNode(t, l, i, cni)
			if _, _, all := runCommand(t, toolCommand(l, i, "leases")); all == "" {
				t.Errorf("node %d: flanneld leases printed nothing", i)
			}
		}
		for i := 1; i <= 3; i++ {
			if after := kernelState(t, l, i); after != before[i-1] {
				t.Errorf("%s: node %d's kernel state changed:\n%s", when, i, lineDiff(before[i-1], after))
			}
		}
		if after := etcdRevision(t, l); after != rev {
			t.Errorf("%s: the etcd revision moved from %d to %d", when, rev, after)
		}
	}
	check("daemons running")
	if err := l.StopFlanneld(1); err != nil {
		t.Fatal(err)
	}
	check("daemon of node 1 stopped")
}

// lineDiff lists the lines only one of a and b has.
func lineDiff(a, b string) string {
	as, bs := strings.Split(a, "\n"), strings.Split(b, "\n")
	var out []string
	for _, l := range as {
		if !slices.Contains(bs, l) {
			out = append(out, "- "+l)
		}
	}
	for _, l := range bs {
		if !slices.Contains(as, l) {
			out = append(out, "+ "+l)
		}
	}
	return strings.Join(out, "\n")
}

// Each fault injected into the healthy cluster makes diagnose exit 1 naming the cause
// and the object; the cluster passes before each fault and after its repair.
func TestDiagnoseFaults(t *testing.T) {
	l := newDiagnoseLab(t, "diagf", "--enable-v2=true")
	cni := cniConfDir(t)
	ctx := context.Background()
	prefix := l.EtcdPrefix()
	sw := l.SwitchNS()
	n1, n2 := l.NodeNS(1), l.NodeNS(2)

	var savedEnv []byte
	faults := []diagFault{
		{
			name: "vxlan UDP dropped by a firewall on a peer",
			inject: func(t *testing.T) {
				nsCmd(t, n2, "iptables", "-I", "INPUT", "-p", "udp", "--dport", "8472", "-j", "DROP")
			},
			repair: func(t *testing.T) {
				nsCmd(t, n2, "iptables", "-D", "INPUT", "-p", "udp", "--dport", "8472", "-j", "DROP")
			},
			node: 1, check: diagnose.CheckPeerOverlay,
			says: "UDP port 8472 to or from 192.0.2.12", on: "192.0.2.12 udp/8472",
		},
		{
			name:   "a bridge address outside the subnet",
			inject: func(t *testing.T) { nsCmd(t, n1, "ip", "addr", "add", "10.99.0.1/24", "dev", "cni0") },
			repair: func(t *testing.T) { nsCmd(t, n1, "ip", "addr", "del", "10.99.0.1/24", "dev", "cni0") },
			node:   1, check: diagnose.CheckBridgeAddress, says: "cni0 holds 10.99.0.1/24, outside this node's subnet", on: "cni0",
		},
		{
			name: "subnet.env disagreeing with the lease",
			inject: func(t *testing.T) {
				var err error
				if savedEnv, err = os.ReadFile(l.SubnetEnvPath(1)); err != nil {
					t.Fatal(err)
				}
				bad := regexp.MustCompile(`FLANNEL_SUBNET=\S+`).ReplaceAll(savedEnv, []byte("FLANNEL_SUBNET=10.5.250.1/24"))
				if err := os.WriteFile(l.SubnetEnvPath(1), bad, 0o644); err != nil {
					t.Fatal(err)
				}
			},
			repair: func(t *testing.T) {
				if err := os.WriteFile(l.SubnetEnvPath(1), savedEnv, 0o644); err != nil {
					t.Fatal(err)
				}
			},
			node: 1, check: diagnose.CheckSubnetFile, says: "FLANNEL_SUBNET=10.5.250.0/24", on: l.SubnetEnvPath(1),
		},
		{
			name:   "etcd stopped",
			inject: func(t *testing.T) { l.EtcdProc().Stop() },
			repair: func(t *testing.T) {
				rctx, cancel := context.WithTimeout(ctx, time.Minute)
				defer cancel()
				if err := l.EtcdProc().Restart(rctx); err != nil {
					t.Fatal(err)
				}
			},
			node: 1, check: diagnose.CheckEtcdEndpoints, says: "http://192.0.2.254:2379: connection refused", on: "http://192.0.2.254:2379",
		},
		{
			name:   "no network config",
			inject: func(t *testing.T) { etcdDelete(t, l, prefix+"/config") },
			repair: func(t *testing.T) {
				if err := l.PutConfig(ctx, vxlanConfig); err != nil {
					t.Fatal(err)
				}
			},
			node: 1, check: diagnose.CheckNetworkConfig, says: "no network config at " + prefix + "/config", on: prefix + "/config",
		},
		{
			name: "a config written with the v2 API",
			inject: func(t *testing.T) {
				etcdDelete(t, l, prefix+"/config")
				etcdctl2(t, sw, l, "set", prefix+"/config", vxlanConfig)
			},
			repair: func(t *testing.T) {
				etcdctl2(t, sw, l, "rm", prefix+"/config")
				if err := l.PutConfig(ctx, vxlanConfig); err != nil {
					t.Fatal(err)
				}
			},
			node: 1, check: diagnose.CheckEtcdV2Config, says: "exists only in the etcd v2 API", on: prefix + "/config",
		},
		{
			name: "a stale route added while the daemon is stopped",
			inject: func(t *testing.T) {
				if err := l.StopFlanneld(1); err != nil {
					t.Fatal(err)
				}
				nsCmd(t, n1, "ip", "route", "add", "10.5.200.0/24", "via", "10.5.200.0", "dev", "flannel.1", "onlink")
			},
			repair: func(t *testing.T) {
				if err := l.StartFlanneld(1); err != nil {
					t.Fatal(err)
				}
			},
			node: 1, check: diagnose.CheckPeerObjects, says: "stale", on: "route 10.5.200.0/24 via 10.5.200.0 dev flannel.1",
		},
		{
			name:   "a peer's switch port at MTU 1400",
			inject: func(t *testing.T) { nsCmd(t, sw, "ip", "link", "set", "n2", "mtu", "1400") },
			repair: func(t *testing.T) { nsCmd(t, sw, "ip", "link", "set", "n2", "mtu", "1500") },
			node:   1, check: diagnose.CheckPeerMTU, says: "1500-byte packets with DF set (FLANNEL_MTU 1450 + 50 of encapsulation) get no answer from 192.0.2.12", on: "192.0.2.12",
		},
	}
	runFaults(t, l, cni, faults, func(t *testing.T, f diagFault, d diagnosis) {
		switch f.name {
		case "a stale route added while the daemon is stopped":
			wantFault(t, d, diagnose.CheckDaemon, "flanneld is not running", "flanneld")
		case "a config written with the v2 API":
			if c := d.check(diagnose.CheckEtcdV2Config); !strings.Contains(c.Fix, "ETCDCTL_API=3 etcdctl put "+prefix+"/config '"+vxlanConfig+"'") {
				t.Errorf("v2 fix %q does not give the v3 command", c.Fix)
			}
		case "a peer's switch port at MTU 1400":
			if c := d.check(diagnose.CheckPeerMTU); slices.Contains(c.Objects, "192.0.2.13") {
				t.Errorf("node 3, whose port is fine, is blamed: %q", c.Objects)
			}
		}
	})
}

// diagFault is one fault: how to inject and repair it, the node that runs diagnose,
// and what it must say: the failed check, words of its evidence and the object.
type diagFault struct {
	name            string
	inject, repair  func(t *testing.T)
	node            int
	check, says, on string
}

// runFaults checks each fault in turn: healthy before, the fault named, healthy after
// the repair; more checks the report of the fault further.
func runFaults(t *testing.T, l *lab.Lab, cni string, faults []diagFault, more func(t *testing.T, f diagFault, d diagnosis), extra ...string) {
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			wantHealthy(t, l, f.node, cni, extra...)
			f.inject(t)
			repaired := false
			defer func() {
				if !repaired {
					f.repair(t)
				}
			}()
			d := diagnoseNode(t, l, f.node, cni, extra...)
			wantFault(t, d, f.check, f.says, f.on)
			if more != nil {
				more(t, f, d)
			}
			f.repair(t)
			repaired = true
			wantHealthy(t, l, f.node, cni, extra...)
		})
	}
}

func etcdDelete(t *testing.T, l *lab.Lab, key string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := l.Etcd().Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
}

// etcdctl2 runs etcdctl with the v2 API against the lab's etcd (from the switch
// namespace, where etcd listens).
func etcdctl2(t *testing.T, sw string, l *lab.Lab, args ...string) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", sw, "etcdctl", "--endpoints", l.EtcdEndpoint()}, args...)...)
	cmd.Env = append(os.Environ(), "ETCDCTL_API=2")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ETCDCTL_API=2 etcdctl %v: %v\n%s", args, err, out)
	}
}

// worldReadable makes a directory others can read and search, removed when the test
// ends, and opens the lab's own directories to them: a node's files are readable by
// every user on a real host (/run/flannel/subnet.env is 0644).
func worldReadable(t *testing.T, l *lab.Lab) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "fgdiag-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	for _, d := range []string{dir, filepath.Dir(l.WorkDir()), l.WorkDir(), l.NodeDir(1), l.NodeDir(2)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// Run as a user other than root, diagnose skips what needs root (the control socket,
// the rules, ICMP without ping sockets) with the reason, and passes the rest. Where
// etcd serves no v2 API, the v2 check is skipped with the reason. flanneld leases lists
// the leases decoded, this node's marked, with their expiry.
func TestDiagnoseNobodyNoV2AndLeases(t *testing.T) {
	l := newLab(t, "diagnb", 2)
	startAll(t, l, vxlanConfig)
	waitFullMesh(t, l, "flannel.1", infos(t, l, "flannel.1"))
	for i := 1; i <= 2; i++ {
		if _, err := l.AddPod(i, 0); err != nil {
			t.Fatal(err)
		}
	}
	shared := worldReadable(t, l)
	cni := filepath.Join(shared, "net.d")
	if err := os.CopyFS(cni, os.DirFS(cniConfDir(t))); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(shared, "flanneld")
	data, err := os.ReadFile(flanneld.bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	wantHealthy(t, l, 1, cni)

	argv := toolCommand(l, 1, "diagnose", "--peers=all", "--cni-conf-dir="+cni)
	argv = append(append([]string{}, argv[:4]...), append([]string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", bin}, argv[5:]...)...)
	d := runDiagnoseArgv(t, argv)
	if d.code != 0 {
		t.Errorf("as nobody: exit %d:\n%s", d.code, d.text())
	}
	for check, why := range map[string]string{
		diagnose.CheckDaemon:       "answers root only",
		diagnose.CheckTrafficRules: "needs root",
		diagnose.CheckPeerUnderlay: "no permission to send ICMP",
	} {
		if c := d.check(check); c.Outcome != diagnose.Skipped || !strings.Contains(c.Evidence, why) {
			t.Errorf("as nobody, %s: %s %q, want skipped saying %q", check, c.Outcome, c.Evidence, why)
		}
	}
	for _, check := range []string{diagnose.CheckLease, diagnose.CheckSubnetFile, diagnose.CheckDevice, diagnose.CheckPeerObjects, diagnose.CheckBridgeAddress} {
		if c := d.check(check); c.Outcome != diagnose.Passed {
			t.Errorf("as nobody, %s: %s %q, want passed", check, c.Outcome, c.Evidence)
		}
	}
	t.Logf("as nobody:\n%s", d.text())

	// No config, and no v2 API to look in.
	etcdDelete(t, l, l.EtcdPrefix()+"/config")
	d = diagnoseNode(t, l, 1, cni)
	wantFault(t, d, diagnose.CheckNetworkConfig, "no network config", l.EtcdPrefix()+"/config")
	if c := d.check(diagnose.CheckEtcdV2Config); c.Outcome != diagnose.Skipped || !strings.Contains(c.Evidence, "does not serve the v2 API") {
		t.Errorf("v2 check without a v2 API: %s %q", c.Outcome, c.Evidence)
	}
	if err := l.PutConfig(context.Background(), vxlanConfig); err != nil {
		t.Fatal(err)
	}
	wantHealthy(t, l, 1, cni)

	// The leases, with one the daemons' admission rule rejects: under a key that is not
	// its subnet's, claiming node 2's address. diagnose takes the running daemon's
	// judgement, leases applies the same rule itself.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hostile := l.EtcdPrefix() + "/subnets/10.5.200.7-24"
	if _, err := l.Etcd().Put(ctx, hostile, `{"PublicIP":"192.0.2.12","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:00:00:00:00:c8"}}`); err != nil {
		t.Fatal(err)
	}
	code, out, all := runCommand(t, toolCommand(l, 1, "leases"))
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 4 || !strings.HasPrefix(lines[0], "KEY") ||
		!regexp.MustCompile(`192\.0\.2\.11 .* in 2[34]h\d+m0s +own`).MatchString(out) ||
		!regexp.MustCompile(`192\.0\.2\.12 .* admitted`).MatchString(out) ||
		!regexp.MustCompile(`10\.5\.200\.7-24 .* never \(reservation\) +rejected: non_canonical_key: key "10\.5\.200\.7-24" is not "10\.5\.200\.0-24"`).MatchString(out) {
		t.Errorf("flanneld leases: exit %d\n%s", code, all)
	}
	t.Logf("flanneld leases:\n%s", out)
	code, out, all = runCommand(t, toolCommand(l, 1, "leases", "--output=json"))
	var r diagnose.LeaseReport
	err = json.Unmarshal([]byte(out), &r)
	status := map[string]string{}
	for _, row := range r.Leases {
		status[row.Name] = row.Status + " " + row.Reason
	}
	if code != 0 || err != nil || r.SchemaVersion != diagnose.SchemaVersion || len(r.Leases) != 3 ||
		status["10.5.200.7-24"] != diagnose.LeaseRejected+" non_canonical_key" {
		t.Errorf("flanneld leases --output=json: exit %d, %v\n%s", code, err, all)
	}
	d = diagnoseNode(t, l, 1, cni)
	if d.code != 0 || !strings.Contains(d.check(diagnose.CheckPeerObjects).Evidence, "match the 1 admitted peer") {
		t.Errorf("diagnose beside a rejected lease: exit %d\n%s", d.code, d.text())
	}
	etcdDelete(t, l, hostile)
	// Bad usage is exit status 2.
	if code, _, all := runCommand(t, toolCommand(l, 1, "diagnose", "--output=yaml")); code != 2 || !strings.Contains(all, "invalid --output") {
		t.Errorf("--output=yaml: exit %d\n%s", code, all)
	}
}
