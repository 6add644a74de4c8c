// Command benchnet measures pod-to-pod TCP throughput, ping RTT, flanneld CPU per Gbit/s
// and peak RSS per backend and over the underlay, in two-node netns labs, interleaving
// rounds and reporting median per-round ratios; -compare reports build B relative to A.
//
//	sudo go run ./e2e/cmd/benchnet -paths vxlan,udp -runs 6 -flanneld /tmp/A -compare /tmp/B
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/flannel-go/flannel/e2e/benchkit"
	"github.com/flannel-go/flannel/e2e/lab"
)

const labFamily = "fgbnet"

const iperfPort = 5201

// udpTarget is udp's goal share of vxlan's throughput; goals are reported, never enforced.
const udpTarget = 0.30

const udpCPUGrowth = 0.05 // the most udp's CPU per Gbit/s may grow from A to B

// idleCPU is the CPU share below which CPU per Gbit/s is not compared (kernel-only paths).
const idleCPU = 0.05

const wireguardTarget = 0.25 // userspace devices' share of vxlan's throughput

// target is one path measured: a daemon's backend pod to pod, or the underlay.
type target struct {
	name    string          // "underlay", "vxlan", "vxlan/upstream", "vxlan/A", ...
	backend string          // "" for the underlay
	variant string          // "A" or "B" for our builds in a -compare run, else ""
	daemon  benchkit.Daemon // zero for the underlay
	config  string          // flannel network config; "" for the underlay
	lab     *lab.Lab
	from    string     // client namespace
	to      netip.Addr // server address
	toNS    string     // server namespace
	server  *proc      // iperf3 -s
	pids    []int      // flanneld on the two nodes
	setup   string     // what flanneld logged about its data path (udp: offloads)

	gbps []float64 // per round
	rtt  []float64 // ms, per round
	cpu  []float64 // flanneld CPU seconds per second of transfer, both nodes summed, per round
	rss  []float64 // MB, the larger flanneld's peak RSS during the transfer, per round
	idle []float64 // MB, the larger flanneld's RSS before the transfer, per round
}

var pathNames = []string{"underlay", "vxlan", "host-gw", "udp", "wireguard"}

// newTargets returns the targets in only, in measuring order; with b each backend A then B.
func newTargets(only []string, daemons []benchkit.Daemon, b *benchkit.Daemon) ([]*target, error) {
	for _, n := range only {
		if !slices.Contains(pathNames, n) {
			return nil, fmt.Errorf("-paths: unknown path %q (have %s)", n, strings.Join(pathNames, ", "))
		}
	}
	var ts []*target
	for _, n := range pathNames {
		if !slices.Contains(only, n) {
			continue
		}
		if n == "underlay" {
			ts = append(ts, &target{name: n})
			continue
		}
		for _, d := range daemons {
			t := &target{name: n, backend: n, daemon: d, config: `{"Network":"10.5.0.0/16","Backend":{"Type":"` + n + `"}}`}
			if n == "wireguard" {
				if d.IsUpstream() {
					continue // upstream's needs the kernel's WireGuard; ours is measured in userspace
				}
				t.config = `{"Network":"10.5.0.0/16","Backend":{"Type":"wireguard","Implementation":"userspace"}}`
			}
			if d.IsUpstream() {
				t.name += "/" + benchkit.Upstream
			}
			ts = append(ts, t)
			if b != nil && !d.IsUpstream() {
				t.name, t.variant = n+"/A", "A"
				ts = append(ts, &target{name: n + "/B", backend: n, variant: "B", daemon: *b, config: t.config})
			}
		}
	}
	if len(ts) == 0 {
		return nil, errors.New("-paths: nothing to measure")
	}
	return ts, nil
}

// roundOrder is the order of round r (1-based): even rounds run each A/B pair B first.
func roundOrder(ts []*target, r int) []*target {
	out := slices.Clone(ts)
	if r%2 == 1 {
		return out
	}
	for i := 0; i+1 < len(out); i++ {
		if out[i].variant == "A" && out[i+1].variant == "B" && out[i].backend == out[i+1].backend {
			out[i], out[i+1] = out[i+1], out[i]
			i++
		}
	}
	return out
}

type options struct {
	benchkit.Flags
	runs, secs, streams int
	logs, perf, compare string
	only                []string
}

func main() {
	var o options
	var only string
	flag.IntVar(&o.runs, "runs", 3, "measurement rounds (medians over the rounds are reported)")
	flag.IntVar(&o.secs, "time", 5, "seconds per iperf3 transfer (after 1 s of warm-up that is not counted)")
	flag.IntVar(&o.streams, "P", 1, "parallel TCP streams per transfer (iperf3 -P)")
	o.Define("each backend in a lab of its own, measured in the same rounds")
	flag.StringVar(&only, "paths", strings.Join(pathNames, ","), "comma-separated paths to measure")
	flag.StringVar(&o.logs, "logs", "", "copy the flanneld logs into this directory at the end")
	flag.StringVar(&o.perf, "perf", "", "record `perf record -g` CPU profiles of both flanneld during round 1 into this directory")
	flag.StringVar(&o.compare, "compare", "", "a second build of ours, B: measure every backend path with -flanneld (A) and with it, alternating A/B and B/A round by round, and print B relative to A (no -json)")
	flag.Parse()
	o.only = strings.Split(only, ",")
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "benchnet: needs root (network namespaces); run: sudo make bench-net")
		os.Exit(1)
	}
	tools := []string{"iperf3", "ping", "ip", "ss"}
	if o.perf != "" {
		tools = append(tools, "perf")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(os.Stderr, "benchnet: %s not installed (Debian: apt-get install iperf3 iputils-ping iproute2 linux-perf)\n", tool)
			os.Exit(1)
		}
	}
	// Later signals are swallowed until the bounded clean-up is done.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, o)
	if ctx.Err() != nil {
		fmt.Fprintln(os.Stderr, "benchnet: interrupted; everything it started has been stopped and removed")
		stop()
		os.Exit(130)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchnet: %v\n", err)
		stop()
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) (err error) {
	if o.runs < 1 || o.secs < 1 || o.streams < 1 {
		return fmt.Errorf("bad -runs %d, -time %d or -P %d", o.runs, o.secs, o.streams)
	}
	if o.compare != "" && o.JSON != "" {
		return errors.New("-compare is an A/B run of two builds, not results for the benchmarks page: drop -json")
	}
	work, err := os.MkdirTemp("", "fgbenchnet-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	daemons, err := o.Daemons(ctx, work)
	if err != nil {
		return err
	}
	var b *benchkit.Daemon
	if o.compare != "" {
		bin, err := filepath.Abs(o.compare)
		if err != nil {
			return err
		}
		b = &benchkit.Daemon{Name: benchkit.Ours, Bin: bin}
		if b.Version, err = benchkit.Version(ctx, bin); err != nil {
			return fmt.Errorf("-compare: %w", err)
		}
	}
	targets, err := newTargets(o.only, daemons, b)
	if err != nil {
		return err
	}
	if err := lab.Sweep(labFamily); err != nil {
		fmt.Fprintf(os.Stderr, "benchnet: sweeping leftovers: %v\n", err)
	}

	defer func() {
		for _, t := range targets {
			t.server.stop()
			if t.lab == nil {
				continue
			}
			if o.logs != "" && t.config != "" {
				for n := 1; n <= 2; n++ {
					copyFile(t.lab.LogPath(n), filepath.Join(o.logs, fmt.Sprintf("flanneld-%s-n%d.log", strings.ReplaceAll(t.name, "/", "-"), n)))
				}
			}
			if cerr := t.lab.Close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("%s: clean-up: %w", t.name, cerr))
			}
		}
	}()
	for i, t := range targets {
		fmt.Fprintf(os.Stderr, "setting up %s\n", t.name)
		if err := setUp(ctx, t, i, filepath.Join(work, strconv.Itoa(i))); err != nil {
			return fmt.Errorf("%s: set-up: %w", t.name, err)
		}
	}
	// One uncounted short transfer each warms up ARP, routes and TCP metrics.
	for _, t := range targets {
		if _, err := iperf(ctx, t, 1, 1); err != nil {
			return fmt.Errorf("%s, warm-up: %w", t.name, err)
		}
	}
	for r := 1; r <= o.runs; r++ {
		for _, t := range roundOrder(targets, r) {
			if err := measure(ctx, t, r, o); err != nil {
				return fmt.Errorf("%s, round %d: %w", t.name, r, err)
			}
			fmt.Fprintf(os.Stderr, "round %d %-16s %6.2f Gbit/s  rtt %.3f ms", r, t.name, t.gbps[r-1], t.rtt[r-1])
			if t.config != "" {
				fmt.Fprintf(os.Stderr, "  flanneld CPU %.0f%%", 100*t.cpu[r-1])
			}
			fmt.Fprintln(os.Stderr)
		}
	}
	rep := report(targets, o)
	err = o.Finish(os.Stdout, rep)
	for _, t := range targets {
		if t.setup != "" {
			fmt.Printf("%s data path (flanneld log, node 1): %s\n", t.name, t.setup)
		}
	}
	of := ""
	if b != nil {
		of = " (A)"
	}
	for _, c := range []struct {
		backend string
		target  float64
	}{{"udp", udpTarget}, {"wireguard", wireguardTarget}} {
		if res, ok := rep.Find(benchkit.Ours, c.backend, "share of vxlan"); ok {
			verdict := "met"
			if met, _ := res.Met(); !met {
				verdict = "MISSED"
			}
			fmt.Printf("target %s >= %.0f%% of vxlan%s (median of rounds): %s (%s)\n", c.backend, 100*c.target, of, verdict, res.Cell())
		}
	}
	if b != nil {
		compareReport(os.Stdout, targets, daemons[0], *b)
	}
	return err
}

// compareReport prints per backend B's throughput and CPU per Gbit/s relative to A's.
func compareReport(w io.Writer, targets []*target, a, b benchkit.Daemon) {
	byName := map[string]*target{}
	for _, t := range targets {
		byName[t.name] = t
	}
	fmt.Fprintf(w, "\nA/B: A = %s (%s), B = %s (%s); back to back in each round, B first in even rounds\n", a.Bin, a.Version, b.Bin, b.Version)
	fmt.Fprintf(w, "%-9s %12s %12s %16s %14s  %s\n", "backend", "Gbit/s A", "Gbit/s B/A", "CPU s/Gbit B/A", "peak MB A / B", "rounds (Gbit/s B/A)")
	for _, t := range targets {
		if t.variant != "B" {
			continue
		}
		ta := byName[t.backend+"/A"]
		var rs []string
		for i := range t.gbps {
			rs = append(rs, fmt.Sprintf("%.3f", t.gbps[i]/ta.gbps[i]))
		}
		cpu := "idle"
		if benchkit.Median(ta.cpu) >= idleCPU && benchkit.Median(t.cpu) >= idleCPU {
			cpu = fmt.Sprintf("%+.1f%%", 100*(medianRatio(cpuPerGbit(t), cpuPerGbit(ta))-1))
		}
		rss := fmt.Sprintf("%.0f / %.0f", benchkit.Median(ta.rss), benchkit.Median(t.rss))
		fmt.Fprintf(w, "%-9s %12.2f %+11.1f%% %16s %14s  %s\n", t.backend, benchkit.Median(ta.gbps),
			100*(medianRatio(t.gbps, ta.gbps)-1), cpu, rss, strings.Join(rs, " "))
	}
	ua, ub, vb := byName["udp/A"], byName["udp/B"], byName["vxlan/B"]
	if ua != nil && ub != nil {
		growth := medianRatio(cpuPerGbit(ub), cpuPerGbit(ua)) - 1
		verdict := "met"
		if growth > udpCPUGrowth {
			verdict = "MISSED"
		}
		fmt.Fprintf(w, "target udp CPU per Gbit/s at most %.0f%% above A's (median of rounds): %s (%+.1f%%)\n", 100*udpCPUGrowth, verdict, 100*growth)
	}
	if ub != nil && vb != nil {
		r := medianRatio(ub.gbps, vb.gbps)
		verdict := "met"
		if r < udpTarget {
			verdict = "MISSED"
		}
		fmt.Fprintf(w, "target udp >= %.0f%% of vxlan (B) (median of rounds): %s (%.0f%%)\n", 100*udpTarget, verdict, 100*r)
	}
}

func medianRatio(xs, ys []float64) float64 {
	var rs []float64
	for i := range min(len(xs), len(ys)) {
		rs = append(rs, xs[i]/ys[i])
	}
	if len(rs) == 0 {
		return 0
	}
	return benchkit.Median(rs)
}

func cpuPerGbit(t *target) []float64 {
	out := make([]float64, len(t.gbps))
	for i := range t.gbps {
		out[i] = t.cpu[i] / t.gbps[i]
	}
	return out
}

// measure runs one round for t: an iperf3 transfer with flanneld's CPU, then a ping series.
func measure(ctx context.Context, t *target, round int, o options) error {
	var rec *proc
	if o.perf != "" && round == 1 && len(t.pids) > 0 {
		var err error
		if rec, err = startPerf(o.perf, t); err != nil {
			return err
		}
	}
	defer rec.interrupt(10 * time.Second) // perf writes its file on SIGINT; nil-safe
	cpu0, err := cpuTime(t.pids)
	if err != nil {
		return err
	}
	idleKB := 0
	for _, pid := range t.pids {
		if kb, err := benchkit.StatusKB(pid, "VmRSS"); err == nil {
			idleKB = max(idleKB, kb)
		}
	}
	peak := sampleRSS(t.pids)
	start := time.Now()
	g, err := iperf(ctx, t, o.secs, o.streams)
	elapsed := time.Since(start)
	cpu1, cerr := cpuTime(t.pids)
	rssKB := peak()
	rec.interrupt(10 * time.Second)
	if err != nil {
		return err
	}
	if cerr != nil {
		return cerr
	}
	rtt, err := ping(ctx, t)
	if err != nil {
		return err
	}
	t.gbps = append(t.gbps, g)
	t.rtt = append(t.rtt, rtt)
	t.cpu = append(t.cpu, (cpu1-cpu0)/elapsed.Seconds())
	t.rss = append(t.rss, float64(rssKB)/1024)
	t.idle = append(t.idle, float64(idleKB)/1024)
	return nil
}

// sampleRSS samples VmRSS every 50 ms until the returned func reports the peak in kB.
func sampleRSS(pids []int) func() int {
	done := make(chan struct{})
	result := make(chan int, 1)
	go func() {
		peak := 0
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, pid := range pids {
				if kb, err := benchkit.StatusKB(pid, "VmRSS"); err == nil && kb > peak {
					peak = kb
				}
			}
			select {
			case <-done:
				result <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return func() int { close(done); return <-result }
}

// setUp builds t's two-node lab with the iperf3 server in the second pod (or node).
func setUp(ctx context.Context, t *target, i int, dir string) error {
	l, err := lab.New(ctx, lab.Options{Name: lab.UniqueName(labFamily, strconv.Itoa(i)), Nodes: 2, WorkDir: dir,
		FlanneldBin: t.daemon.Bin, NoEtcd: t.config == "", OwnWireguardDir: t.backend == "wireguard"})
	if err != nil {
		return err
	}
	t.lab = l
	if t.config == "" {
		t.from, t.toNS, t.to = l.NodeNS(1), l.NodeNS(2), l.NodeIP(2)
	} else {
		if err := l.PutConfig(ctx, t.config); err != nil {
			return err
		}
		for n := 1; n <= 2; n++ {
			if err := l.StartFlanneld(n); err != nil {
				return err
			}
		}
		for n := 1; n <= 2; n++ {
			if _, err := l.WaitSubnetEnv(n, time.Minute); err != nil {
				return fmt.Errorf("%w (log tail:\n%s)", err, l.LogTail(n, 20))
			}
			t.pids = append(t.pids, l.FlanneldPID(n))
		}
		t.setup = offloads(l.LogPath(1))
		var pods []lab.Pod
		for n := 1; n <= 2; n++ {
			p, err := l.AddPod(n, 0)
			if err != nil {
				return err
			}
			pods = append(pods, p)
		}
		var perr error
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
			if perr = l.Ping(pods[0].NS, pods[1].IP); perr == nil || ctx.Err() != nil {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if perr != nil {
			return fmt.Errorf("pod to pod: %w", perr)
		}
		t.from, t.toNS, t.to = pods[0].NS, pods[1].NS, pods[1].IP
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	t.server, err = start("ip", "netns", "exec", t.toNS, "iperf3", "--server", "--bind", t.to.String())
	if err != nil {
		return fmt.Errorf("iperf3 server: %w", err)
	}
	return waitListening(ctx, t.toNS, t.server)
}

func waitListening(ctx context.Context, ns string, server *proc) error {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "ss", "-Hltn", fmt.Sprintf("sport = :%d", iperfPort)).Output()
		if err == nil && len(strings.TrimSpace(string(out))) > 0 {
			return nil
		}
		if server.exited() {
			return errors.New("iperf3 server exited")
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("iperf3 server not listening after 10 s")
}

type iperfResult struct {
	Error string `json:"error"`
	End   struct {
		SumReceived struct {
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
}

// iperf runs one TCP transfer to t's server and returns the receiver's Gbit/s.
func iperf(ctx context.Context, t *target, secs, streams int) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs+60)*time.Second)
	defer cancel()
	out, err := output(ctx, "ip", "netns", "exec", t.from, "iperf3", "--client", t.to.String(),
		"--time", strconv.Itoa(secs), "--omit", "1", "--parallel", strconv.Itoa(streams),
		"--connect-timeout", "5000", "--json")
	var res iperfResult
	if jerr := json.Unmarshal(out, &res); jerr != nil {
		if err == nil {
			err = jerr
		}
		return 0, fmt.Errorf("iperf3: %w\n%s", err, out)
	}
	if res.Error != "" || err != nil {
		return 0, fmt.Errorf("iperf3: %v %s", err, res.Error)
	}
	if res.End.SumReceived.BitsPerSecond <= 0 {
		return 0, errors.New("iperf3: no data received")
	}
	return res.End.SumReceived.BitsPerSecond / 1e9, nil
}

var rttRE = regexp.MustCompile(`= ([0-9.]+)/([0-9.]+)/([0-9.]+)/([0-9.]+) ms`)

// ping returns the average RTT of 50 pings, in milliseconds.
func ping(ctx context.Context, t *target) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := output(ctx, "ip", "netns", "exec", t.from, "ping", "-n", "-q", "-c", "50", "-i", "0.01", "-W", "1", t.to.String())
	if err != nil {
		return 0, fmt.Errorf("ping: %v\n%s", err, out)
	}
	m := rttRE.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("ping: no rtt line in\n%s", out)
	}
	return strconv.ParseFloat(string(m[2]), 64)
}

func startPerf(dir string, t *target) (*proc, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var pids []string
	for _, p := range t.pids {
		pids = append(pids, strconv.Itoa(p))
	}
	file := filepath.Join(dir, strings.ReplaceAll(t.name, "/", "-")+".perf.data")
	p, err := start("perf", "record", "--quiet", "-F", "999", "-g", "-o", file, "-p", strings.Join(pids, ","))
	if err != nil {
		return nil, fmt.Errorf("perf record: %w", err)
	}
	time.Sleep(300 * time.Millisecond) // let it attach before the transfer starts
	fmt.Fprintf(os.Stderr, "recording %s (perf report -i %s)\n", file, file)
	return p, nil
}

func cpuTime(pids []int) (float64, error) {
	var sum int64
	for _, pid := range pids {
		t, err := benchkit.CPUTicks(pid)
		if err != nil {
			return 0, fmt.Errorf("flanneld pid %d: %w", pid, err)
		}
		sum += t
	}
	return float64(sum) / benchkit.TicksPerSecond, nil
}

// report turns the rounds into results, shares of vxlan and underlay taken within a round.
func report(targets []*target, o options) *benchkit.Report {
	rep := benchkit.NewReport("net", "data plane: TCP throughput and ping pod to pod across two nodes", "go run ./e2e/cmd/benchnet")
	for _, t := range targets {
		if t.daemon.Name != "" && t.variant != "B" {
			rep.Daemons[t.daemon.Name] = t.daemon.Version
		}
	}
	find := func(backend string, daemon benchkit.Daemon) *target {
		for _, t := range targets {
			if t.backend == backend && t.daemon.Name == daemon.Name && t.variant != "B" {
				return t
			}
		}
		return nil
	}
	share := func(t, ref *target) []float64 {
		if ref == nil || ref == t {
			return nil
		}
		var rs []float64
		for i := range t.gbps {
			rs = append(rs, 100*t.gbps[i]/ref.gbps[i])
		}
		return rs
	}
	underlay := find("", benchkit.Daemon{})
	for _, t := range targets {
		if t.variant == "B" {
			continue // compareReport's
		}
		daemon, c := t.daemon.Name, t.backend
		if t.backend == "" {
			daemon, c = benchkit.Ours, "underlay (no overlay)"
		}
		res := func(metric, unit string, runs []float64) benchkit.Result {
			return benchkit.Result{Case: c, Metric: metric, Unit: unit, Daemon: daemon, Runs: runs}
		}
		tp := res("throughput", "Gbit/s", t.gbps)
		tp.Higher = true
		rep.Add(tp)
		rep.Add(res("ping RTT", "ms", t.rtt))
		if t.backend != "" {
			var cpu []float64
			for _, x := range t.cpu {
				cpu = append(cpu, 100*x)
			}
			rep.Add(res("flanneld CPU (both nodes)", "%", cpu))
			var perGbit []float64
			for _, x := range cpuPerGbit(t) {
				perGbit = append(perGbit, 100*x)
			}
			rep.Add(res("flanneld CPU per Gbit/s", "% per Gbit/s", perGbit))
			rep.Add(res("flanneld RSS before the transfer", "MB", t.idle))
			rep.Add(res("flanneld peak RSS during the transfer", "MB", t.rss))
			sv := res("share of vxlan", "%", share(t, find("vxlan", t.daemon)))
			sv.Higher = true
			switch {
			case daemon != benchkit.Ours:
			case t.backend == "udp":
				sv.Target = 100 * udpTarget
			case t.backend == "wireguard":
				sv.Target = 100 * wireguardTarget
			}
			rep.Add(sv)
			su := res("share of underlay", "%", share(t, underlay))
			su.Higher = true
			rep.Add(su)
		}
	}
	rep.Note("iperf3, one TCP stream unless -P, %d s per transfer after 1 s not counted; %d round(s), the paths in turn within each round", o.secs, o.runs)
	rep.Note("shares are ratios within a round (the median over the rounds); flanneld CPU: CPU seconds per second of transfer, both nodes; per Gbit/s: that divided by the round's throughput; RSS: the larger of the two daemons' VmRSS, before the transfer and at its peak (sampled every 50 ms)")
	rep.Note("wireguard: userspace devices (Implementation userspace), ours only: upstream's needs the kernel's WireGuard")
	return rep
}

// offloadRE and wgOffloadRE pick the offload report from the udp and wireguard start lines.
var (
	offloadRE   = regexp.MustCompile(`"udp backend started".*?(mtu=\d+).*?(tunOffloads=\w+) (udpGSO=\w+) (udpGRO=\w+)`)
	wgOffloadRE = regexp.MustCompile(`"Userspace WireGuard device running" device="flannel-wg" (tunOffloads=\w+ batch=\d+)`)
)

func offloads(logPath string) string {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return ""
	}
	if m := offloadRE.FindSubmatch(b); m != nil {
		return fmt.Sprintf("%s %s %s %s", m[1], m[2], m[3], m[4])
	}
	if m := wgOffloadRE.FindSubmatch(b); m != nil {
		return string(m[1])
	}
	return ""
}

func copyFile(from, to string) {
	b, err := os.ReadFile(from)
	if err == nil {
		err = os.MkdirAll(filepath.Dir(to), 0o755)
	}
	if err == nil {
		err = os.WriteFile(to, b, 0o644)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchnet: keeping log %s: %v\n", from, err)
	}
}
