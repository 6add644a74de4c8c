// Command bench measures flanneld's control plane with N synthetic vxlan peer leases:
// convergence, churn of N/5 leases, idle CPU and peak RSS, as medians over runs.
//
//	sudo make bench-control   # or: sudo go run ./e2e/cmd/bench -sizes 1000,5000,20000 -runs 3 -upstream build
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/flannel-go/flannel/e2e/benchkit"
	"github.com/flannel-go/flannel/e2e/lab"
	"github.com/flannel-go/flannel/pkg/netlinkx"
)

const config = `{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}`

func main() {
	var o options
	flag.StringVar(&o.sizes, "sizes", "1000,5000,20000", "comma-separated numbers of peer leases")
	flag.IntVar(&o.runs, "runs", 3, "runs per size (the median is reported)")
	o.Define("alternating with ours run by run")
	flag.IntVar(&o.upRuns, "upstream-runs", 0, "upstream's runs per size (0: as -runs below 10,000 peers, 1 from there: upstream takes about 25 s to converge 20,000)")
	flag.DurationVar(&o.limit, "limit", 90*time.Second, "a daemon that has not converged (or absorbed the churn) after this long is reported as not within it")
	flag.DurationVar(&o.timeout, "timeout", 5*time.Minute, "give up on one run after this long")
	flag.StringVar(&o.logs, "logs", "", "copy each run's flanneld log into this directory")
	flag.DurationVar(&o.idle, "idle", 30*time.Second, "idle CPU window (0: skip)")
	flag.BoolVar(&o.churn, "churn", true, "measure churn (N/5 deletions + N/5 additions)")
	flag.BoolVar(&o.verbose, "v", false, "print each run's memory breakdown (RssAnon, RssFile) at its end")
	flag.Parse()
	benchkit.Main("bench", "bench-control", func(ctx context.Context) error { return run(ctx, o) })
}

type options struct {
	benchkit.Flags
	sizes          string
	runs, upRuns   int
	limit, timeout time.Duration
	logs           string
	idle           time.Duration
	churn, verbose bool
}

// Targets at 20,000 peers (etcd mode).
const (
	targetPeers    = 20000
	targetConverge = 1.0  // s
	targetChurn    = 0.5  // s
	targetIdle     = 1.0  // % of a core
	targetPeakRSS  = 42.0 // MB
)

// result is one run; a phase over the limit sets its over flag and ends the run.
type result struct {
	converge time.Duration
	convKB   int           // VmHWM at convergence
	churn    time.Duration // 0 when not measured
	churnW   time.Duration // of which writing to etcd
	idleCPU  float64       // % of one core; -1 when not measured
	hwmKB    int           // VmHWM at the end; 0 when not measured

	convOver, churnOver bool
}

func run(ctx context.Context, o options) error {
	var sizes []int
	for _, s := range strings.Split(o.sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 5 || n > 50000 {
			return fmt.Errorf("bad size %q (5..50000)", s)
		}
		sizes = append(sizes, n)
	}
	if o.runs < 1 || o.upRuns < 0 {
		return fmt.Errorf("bad -runs %d or -upstream-runs %d", o.runs, o.upRuns)
	}
	work, err := os.MkdirTemp("", "fgbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	daemons, err := o.Daemons(ctx, work)
	if err != nil {
		return err
	}
	_ = lab.Sweep("fgbench")
	rep := benchkit.NewReport("control", "control plane (etcd mode): convergence, churn, idle CPU and memory against peers", "go run ./e2e/cmd/bench")
	rep.SetDaemons(daemons)
	fmt.Printf("flanneld control plane, %d run(s) per size, median; %s\n", o.runs, rep.Machine)
	for _, n := range sizes {
		runs := map[string][]result{}
		for r := 0; r < o.runs; r++ {
			for _, d := range daemons {
				if d.IsUpstream() && r >= upstreamRuns(o, n) {
					continue
				}
				dir := filepath.Join(work, fmt.Sprintf("%s-%d-%d", d.Name, n, r))
				res, err := once(ctx, d.Bin, dir, n, o)
				if o.logs != "" {
					copyLog(filepath.Join(dir, "n1", "flanneld.log"), filepath.Join(o.logs, fmt.Sprintf("%s-%d-%d.log", d.Name, n, r+1)))
				}
				if err != nil {
					return fmt.Errorf("%s, %d leases, run %d: %w", d.Name, n, r+1, err)
				}
				fmt.Fprintf(os.Stderr, "bench: %s, %d leases, run %d: %s\n", d.Name, n, r+1, res)
				runs[d.Name] = append(runs[d.Name], res)
			}
		}
		for _, d := range daemons {
			addResults(rep, d.Name, n, runs[d.Name], o)
		}
		if len(daemons) > 1 && upstreamRuns(o, n) < o.runs {
			rep.Note("upstream ran %d time(s) at %d peers (ours %d)", upstreamRuns(o, n), n, o.runs)
		}
	}
	if o.churn {
		rep.Note("churn: n/5 leases revoked at once, then n/5 new ones written; from the revocation until the kernel shows the new set")
	}
	if o.idle > 0 {
		rep.Note("idle CPU: %% of one core over %v, from 3 s after the churn (ours resyncs every 30 s)", o.idle)
	}
	rep.Note("a phase not finished within %v is reported as not within it, and the phases after it are not measured in that run", o.limit)
	return o.Finish(os.Stdout, rep)
}

func upstreamRuns(o options, n int) int {
	switch {
	case o.upRuns > 0:
		return o.upRuns
	case n >= 10000:
		return 1
	}
	return o.runs
}

func (r result) String() string {
	if r.convOver {
		return "not converged within the limit"
	}
	s := fmt.Sprintf("converge %.2fs, RSS@conv %.1f MB", r.converge.Seconds(), mb(r.convKB))
	switch {
	case r.churnOver:
		return s + ", churn not within the limit"
	case r.churn > 0:
		s += fmt.Sprintf(", churn %.2fs (%.2fs writing)", r.churn.Seconds(), r.churnW.Seconds())
	}
	if r.idleCPU >= 0 {
		s += fmt.Sprintf(", idle %.2f%%", r.idleCPU)
	}
	return s + fmt.Sprintf(", peak RSS %.1f MB", mb(r.hwmKB))
}

func addResults(rep *benchkit.Report, daemon string, n int, rs []result, o options) {
	c := fmt.Sprintf("%d peers", n)
	res := func(metric, unit string, target float64) benchkit.Result {
		r := benchkit.Result{Case: c, X: float64(n), Metric: metric, Unit: unit, Daemon: daemon}
		if daemon == benchkit.Ours && n == targetPeers {
			r.Target = target
		}
		return r
	}
	conv, convKB, churn := res("converge", "s", targetConverge), res("RSS at convergence", "MB", 0), res("churn", "s", targetChurn)
	// The harness's part of the churn, not the daemon's: nothing to compare.
	churnW := res("churn: writing to etcd", "s", 0)
	idle, peak := res("idle CPU", "%", targetIdle), res("peak RSS", "MB", targetPeakRSS)
	conv.Limit, churn.Limit = o.limit.Seconds(), o.limit.Seconds()
	for _, r := range rs {
		if r.convOver {
			conv.Over++
			continue
		}
		conv.Runs, convKB.Runs = append(conv.Runs, r.converge.Seconds()), append(convKB.Runs, mb(r.convKB))
		if r.churnOver {
			churn.Over++
			continue
		}
		if o.churn {
			churn.Runs, churnW.Runs = append(churn.Runs, r.churn.Seconds()), append(churnW.Runs, r.churnW.Seconds())
		}
		if r.idleCPU >= 0 {
			idle.Runs = append(idle.Runs, r.idleCPU)
		}
		peak.Runs = append(peak.Runs, mb(r.hwmKB))
	}
	if daemon != benchkit.Ours {
		churnW.Runs = nil
	}
	for _, r := range []benchkit.Result{conv, convKB, churn, churnW, idle, peak} {
		rep.Add(r)
	}
}

func mb(kb int) float64 { return float64(kb) / 1024 }

var errOver = errors.New("not within the limit")

func once(ctx context.Context, bin, dir string, n int, o options) (result, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	res := result{idleCPU: -1}
	l, err := lab.New(ctx, lab.Options{Name: lab.UniqueName("fgbench", "b"), Nodes: 1, WorkDir: dir, FlanneldBin: bin})
	if err != nil {
		return res, err
	}
	defer l.Close()
	if err := l.PutConfig(ctx, config); err != nil {
		return res, err
	}
	nChurn := n / 5
	cli, prefix := l.Etcd(), l.EtcdPrefix()
	victims, err := cli.Grant(ctx, 3600)
	if err != nil {
		return res, fmt.Errorf("grant: %w", err)
	}
	rest, err := cli.Grant(ctx, 3600)
	if err != nil {
		return res, fmt.Errorf("grant: %w", err)
	}
	// leases [0, nChurn) go in the churn, [nChurn, n) stay, [n, n+nChurn) come
	if err := benchkit.WriteLeases(ctx, cli, prefix, 0, nChurn, victims.ID); err != nil {
		return res, err
	}
	if err := benchkit.WriteLeases(ctx, cli, prefix, nChurn, n, rest.ID); err != nil {
		return res, err
	}
	nsh, err := netns.GetFromName(l.NodeNS(1))
	if err != nil {
		return res, fmt.Errorf("open netns: %w", err)
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		return res, fmt.Errorf("netlink handle: %w", err)
	}
	defer h.Close()
	c, err := netlinkx.OpenAt(nsh)
	if err != nil {
		return res, err
	}
	defer c.Close()

	start := time.Now()
	if err := l.StartFlanneld(1); err != nil {
		return res, err
	}
	pid := l.FlanneldPID(1)
	wait := func(what string, since time.Time, lo, hi int) error {
		for {
			if ctx.Err() != nil {
				return fmt.Errorf("%s: not converged: %w (log tail:\n%s)", what, ctx.Err(), l.LogTail(1, 20))
			}
			if !l.FlanneldRunning(1) {
				return fmt.Errorf("%s: flanneld exited (log tail:\n%s)", what, l.LogTail(1, 20))
			}
			if converged(h, c, lo, hi) {
				return nil
			}
			if time.Since(since) > o.limit {
				return errOver
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	over := func() (result, error) {
		if err := l.StopFlanneld(1); err != nil {
			_ = l.KillFlanneld(1)
		}
		return res, nil
	}
	if err := wait("start", start, 0, n); errors.Is(err, errOver) {
		res.convOver = true
		return over()
	} else if err != nil {
		return res, err
	}
	res.converge = time.Since(start)
	if res.convKB, err = vmHWM(pid); err != nil {
		return res, err
	}
	if o.churn && nChurn > 0 {
		time.Sleep(2 * time.Second) // let the start-up settle
		t0 := time.Now()
		if _, err := cli.Revoke(ctx, victims.ID); err != nil {
			return res, fmt.Errorf("revoke: %w", err)
		}
		if err := benchkit.WriteLeases(ctx, cli, prefix, n, n+nChurn, rest.ID); err != nil {
			return res, err
		}
		res.churnW = time.Since(t0)
		if err := wait("churn", t0, nChurn, n+nChurn); errors.Is(err, errOver) {
			res.churnOver = true
			return over()
		} else if err != nil {
			return res, err
		}
		res.churn = time.Since(t0)
	}
	if o.idle > 0 {
		time.Sleep(3 * time.Second)
		t0, err := benchkit.CPUTicks(pid)
		if err != nil {
			return res, err
		}
		time.Sleep(o.idle)
		t1, err := benchkit.CPUTicks(pid)
		if err != nil {
			return res, err
		}
		res.idleCPU = float64(t1-t0) / benchkit.TicksPerSecond / o.idle.Seconds() * 100
	}
	if res.hwmKB, err = vmHWM(pid); err != nil {
		return res, err
	}
	if o.verbose {
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
			for _, line := range strings.Split(string(st), "\n") {
				if strings.HasPrefix(line, "Rss") || strings.HasPrefix(line, "VmHWM") {
					fmt.Fprintf(os.Stderr, "bench: %d leases: %s\n", n, strings.Join(strings.Fields(line), " "))
				}
			}
		}
	}
	return res, l.StopFlanneld(1)
}

// converged reports whether flannel.1 has exactly peers [lo, hi) in routes, neighbours and
// FDB, using kernel-filtered dumps to take little CPU.
func converged(h *netlink.Handle, c *netlinkx.Conn, lo, hi int) bool {
	link, err := h.LinkByName("flannel.1")
	if err != nil {
		return false
	}
	idx := link.Attrs().Index
	n, ok := 0, true
	err = c.Routes(netlinkx.RouteFilter{Family: unix.AF_INET, Table: unix.RT_TABLE_MAIN, Oif: idx}, func(r *netlinkx.Route) {
		if r.Protocol == unix.RTPROT_KERNEL {
			return
		}
		n++
		a := r.Dst.Addr().As4()
		i := (int(a[1])-1)*256 + int(a[2])
		if a[0] != 10 || r.Dst.Bits() != 24 || i < lo || i >= hi || benchkit.PeerSubnet(i) != r.Dst {
			ok = false
		}
	})
	if err != nil || !ok || n != hi-lo {
		return false
	}
	count := func(fam uint8) int {
		k := 0
		if err := c.Neighs(fam, idx, func(nb *netlinkx.Neigh) {
			if nb.State&unix.NUD_PERMANENT != 0 {
				k++
			}
		}); err != nil {
			return -1
		}
		return k
	}
	return count(unix.AF_INET) == hi-lo && count(unix.AF_BRIDGE) == hi-lo
}

func vmHWM(pid int) (int, error) { return benchkit.StatusKB(pid, "VmHWM") }

// copyLog keeps a run's daemon log (best effort).
func copyLog(from, to string) {
	data, err := os.ReadFile(from)
	if err == nil {
		err = os.MkdirAll(filepath.Dir(to), 0o755)
	}
	if err == nil {
		err = os.WriteFile(to, data, 0o644)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: keeping log: %v\n", err)
	}
}
