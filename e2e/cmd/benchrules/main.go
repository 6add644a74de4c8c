// Command benchrules measures how fast flanneld --ip-masq restores its iptables or
// nftables rules after they are deleted or flushed (polling adds up to ~20 ms), and what
// keeping them costs at rest.
//
//	sudo make bench-rules    # or: sudo go run ./e2e/cmd/benchrules -runs 5 -upstream build
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/flannel-go/flannel/e2e/benchkit"
	"github.com/flannel-go/flannel/e2e/lab"
)

const family = "fgbrules"

// fault breaks the rules; args builds its command from the current dump (nft deletes by
// handle).
type fault struct {
	name string
	args func(dump string) ([]string, error)
}

func fixed(cmd ...string) func(string) ([]string, error) {
	return func(string) ([]string, error) { return cmd, nil }
}

var handleRE = regexp.MustCompile(` # handle (\d+)`)

// nftRuleHandle finds the handle of the first rule line containing all of want.
func nftRuleHandle(dump string, want ...string) (string, error) {
	for _, ln := range strings.Split(dump, "\n") {
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(ln, w)
		}
		if m := handleRE.FindStringSubmatch(ln); ok && m != nil {
			return m[1], nil
		}
	}
	return "", fmt.Errorf("no nft rule with %q in:\n%s", want, dump)
}

func faults(nft bool) []fault {
	if nft {
		return []fault{
			{"delete one masquerade rule", func(d string) ([]string, error) {
				h, err := nftRuleHandle(d, "masquerade", "224.0.0.0/4")
				return []string{"nft", "delete", "rule", "ip", "flannel-ipv4", "postrtg", "handle", h}, err
			}},
			{"flush the masquerade chain", fixed("nft", "flush", "chain", "ip", "flannel-ipv4", "postrtg")},
			{"delete the whole table", fixed("nft", "delete", "table", "ip", "flannel-ipv4")},
		}
	}
	return []fault{
		{"delete one masquerade rule", fixed("iptables", "-t", "nat", "-D", "FLANNEL-POSTRTG", "5")},
		{"flush FLANNEL-POSTRTG", fixed("iptables", "-t", "nat", "-F", "FLANNEL-POSTRTG")},
		{"delete the POSTROUTING jump", fixed("iptables", "-t", "nat", "-D", "POSTROUTING",
			"-m", "comment", "--comment", "flanneld masq", "-j", "FLANNEL-POSTRTG")},
		{"flush FLANNEL-FWD", fixed("iptables", "-t", "filter", "-F", "FLANNEL-FWD")},
	}
}

func main() {
	var o options
	flag.IntVar(&o.runs, "runs", 5, "injections per fault (the median is reported)")
	flag.DurationVar(&o.idle, "idle", 20*time.Second, "window for the CPU cost at rest")
	flag.DurationVar(&o.limit, "limit", 15*time.Second, "rules not restored after this long are reported as not within it, and that fault is not injected again (upstream checks its iptables rules every 5 s)")
	o.Define("after ours, in a lab of its own per mode")
	flag.Parse()
	benchkit.Main("benchrules", "bench-rules", func(ctx context.Context) error { return run(ctx, o) })
}

type options struct {
	benchkit.Flags
	runs        int
	idle, limit time.Duration
}

const target = time.Second

func run(ctx context.Context, o options) error {
	if o.runs < 1 {
		return fmt.Errorf("-runs must be at least 1")
	}
	work, err := os.MkdirTemp("", "fgbrules-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	daemons, err := o.Daemons(ctx, work)
	if err != nil {
		return err
	}
	_ = lab.Sweep(family)
	rep := benchkit.NewReport("rules", "traffic rules: time from a fault until the rules read back intact, and CPU at rest", "go run ./e2e/cmd/benchrules")
	rep.SetDaemons(daemons)
	fmt.Printf("traffic-rule healing: time from a fault until the rules read back intact, median of %d; %s\n", o.runs, rep.Machine)
	for _, nft := range []bool{false, true} {
		for _, d := range daemons {
			if err := benchMode(ctx, rep, d, nft, o, filepath.Join(work, d.Name, modeName(nft))); err != nil {
				return fmt.Errorf("%s, %s: %w", d.Name, modeName(nft), err)
			}
		}
	}
	rep.Note("rules not restored within %v count as not within it; that fault is then not injected again (the daemon is restarted to restore them)", o.limit)
	rep.Note("CPU at rest: over %v, flanneld with its iptables/nft children", o.idle)
	return o.Finish(os.Stdout, rep)
}

func modeName(nft bool) string {
	if nft {
		return "nftables"
	}
	return "iptables"
}

func benchMode(ctx context.Context, rep *benchkit.Report, d benchkit.Daemon, nft bool, o options, dir string) error {
	tag := modeName(nft)[:3]
	if d.IsUpstream() {
		tag += "u"
	}
	l, err := lab.New(ctx, lab.Options{Name: lab.UniqueName(family, tag), Nodes: 1, WorkDir: dir, FlanneldBin: d.Bin})
	if err != nil {
		return err
	}
	defer l.Close()
	cfg := fmt.Sprintf(`{"Network":"10.5.0.0/16","EnableNFTables":%v,"Backend":{"Type":"vxlan"}}`, nft)
	if err := l.PutConfig(ctx, cfg); err != nil {
		return err
	}
	start := func() error {
		if err := l.StartFlanneld(1, "--ip-masq"); err != nil {
			return err
		}
		if _, err := l.WaitSubnetEnv(1, time.Minute); err != nil {
			return fmt.Errorf("%w (log tail:\n%s)", err, l.LogTail(1, 20))
		}
		return nil
	}
	if err := start(); err != nil {
		return err
	}
	ns := l.NodeNS(1)
	dump := func() (string, error) { return ruleDump(l, ns, nft) }
	// Rules may appear after the subnet.env write: the baseline is a dump confirmed a second later.
	var baseline string
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Second) {
		d, err := dump()
		if err != nil {
			return err
		}
		if strings.Count(strings.ToLower(d), "masquerade") >= 2 && normalise(d) == normalise(baseline) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("rules not installed, or still changing, a minute after start:\n%s", d)
		}
		baseline = d
	}
	want := normalise(baseline)
	restore := func() error {
		if err := l.StopFlanneld(1); err != nil {
			_ = l.KillFlanneld(1)
		}
		if err := start(); err != nil {
			return err
		}
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			if d, err := dump(); err == nil && normalise(d) == want {
				return nil
			}
			if time.Now().After(deadline) {
				return errors.New("rules not back 30 s after a restart")
			}
		}
	}

	for _, f := range faults(nft) {
		res := benchkit.Result{Case: modeName(nft) + ": " + f.name, Metric: "time to restore", Unit: "ms", Daemon: d.Name, Limit: ms(o.limit)}
		if !d.IsUpstream() {
			res.Target = ms(target)
		}
		for r := 0; r < o.runs && res.Over == 0; r++ {
			cur, err := dump()
			if err != nil {
				return err
			}
			cmd, err := f.args(cur)
			if err != nil {
				return err
			}
			if out, err := l.Exec(ns, cmd...); err != nil {
				return fmt.Errorf("%s: %v: %v\n%s", f.name, cmd, err, out)
			}
			start := time.Now()
			for {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if time.Since(start) > o.limit {
					res.Over++
					if err := restore(); err != nil {
						return fmt.Errorf("%s: %w", f.name, err)
					}
					break
				}
				d, err := dump()
				if err == nil && normalise(d) == want {
					res.Runs = append(res.Runs, ms(time.Since(start)))
					break
				}
			}
			time.Sleep(300 * time.Millisecond)
		}
		rep.Add(res)
		fmt.Fprintf(os.Stderr, "benchrules: %-10s %-9s %-28s %s (%s)\n", d.Name, modeName(nft), f.name, res.Cell(), res.AllRuns())
	}

	pid := l.FlanneldPID(1)
	time.Sleep(2 * time.Second)
	c0, err := benchkit.CPUTicks(pid)
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(o.idle):
	}
	c1, err := benchkit.CPUTicks(pid)
	if err != nil {
		return err
	}
	rep.Add(benchkit.Result{Case: modeName(nft), Metric: "CPU at rest", Unit: "%", Daemon: d.Name,
		Runs: []float64{float64(c1-c0) / benchkit.TicksPerSecond / o.idle.Seconds() * 100}})
	return l.StopFlanneld(1)
}

// ruleDump lists the node's IPv4 flannel rules: our iptables lines, or our nft table.
func ruleDump(l *lab.Lab, ns string, nft bool) (string, error) {
	if nft {
		out, err := l.Exec(ns, "nft", "-a", "list", "table", "ip", "flannel-ipv4")
		if err != nil {
			return "", nil // the table is gone: an empty dump, not an error
		}
		return out, nil
	}
	var lines []string
	for _, table := range []string{"nat", "filter"} {
		out, err := l.Exec(ns, "iptables", "-t", table, "-S")
		if err != nil {
			return "", fmt.Errorf("iptables -t %s -S: %w", table, err)
		}
		for _, ln := range strings.Split(out, "\n") {
			if strings.Contains(ln, "FLANNEL") || strings.Contains(ln, "flanneld") {
				lines = append(lines, ln)
			}
		}
	}
	return strings.Join(lines, "\n"), nil
}

// normalise drops nft handles: restored rules get new ones.
func normalise(dump string) string { return handleRE.ReplaceAllString(dump, "") }

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
