// Command benchrules measures how fast flanneld restores its traffic rules (masquerade and
// forward, issue target: back within 1 s) after someone deletes or flushes them, in both
// iptables and nftables mode, and what keeping them costs at rest. Each mode gets a
// one-node lab running flanneld with --ip-masq; each fault is injected several times and the
// median time from the fault until the rule set reads back identical (handles aside) is
// reported. The restoration is observed by polling iptables/nft from outside the daemon,
// so a figure includes up to one poll interval (~10–20 ms of exec) of observation delay.
//
//	sudo make bench-rules    # or: sudo go run ./e2e/cmd/benchrules -runs 5
package main

import (
	"context"
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

// fault is one way of breaking the rules; args builds the command from the current dump
// (nft rules are deleted by handle).
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
	runs := flag.Int("runs", 5, "injections per fault (the median is reported)")
	idle := flag.Duration("idle", 20*time.Second, "window for the CPU cost at rest")
	bin := flag.String("flanneld", "", "flanneld binary (default: go build ./cmd/flanneld)")
	flag.Parse()
	benchkit.Main("benchrules", "bench-rules", func(ctx context.Context) error {
		return run(ctx, *runs, *idle, *bin)
	})
}

func run(ctx context.Context, runs int, idle time.Duration, bin string) error {
	if runs < 1 {
		return fmt.Errorf("-runs must be at least 1")
	}
	work, err := os.MkdirTemp("", "fgbrules-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if bin, err = benchkit.Flanneld(ctx, bin, work); err != nil {
		return err
	}
	_ = lab.Sweep(family)
	fmt.Printf("traffic-rule healing: time from a fault until the rules read back intact, median of %d; %s\n",
		runs, benchkit.Machine())
	fmt.Printf("%-9s  %-28s  %9s  %s\n", "mode", "fault", "median", "all runs")
	for _, nft := range []bool{false, true} {
		if err := benchMode(ctx, nft, runs, idle, bin, filepath.Join(work, modeName(nft))); err != nil {
			return fmt.Errorf("%s: %w", modeName(nft), err)
		}
	}
	return nil
}

func modeName(nft bool) string {
	if nft {
		return "nftables"
	}
	return "iptables"
}

func benchMode(ctx context.Context, nft bool, runs int, idle time.Duration, bin, dir string) error {
	l, err := lab.New(ctx, lab.Options{Name: lab.UniqueName(family, modeName(nft)[:3]), Nodes: 1, WorkDir: dir, FlanneldBin: bin})
	if err != nil {
		return err
	}
	defer l.Close()
	cfg := fmt.Sprintf(`{"Network":"10.5.0.0/16","EnableNFTables":%v,"Backend":{"Type":"vxlan"}}`, nft)
	if err := l.PutConfig(ctx, cfg); err != nil {
		return err
	}
	if err := l.StartFlanneld(1, "--ip-masq"); err != nil {
		return err
	}
	if _, err := l.WaitSubnetEnv(1, time.Minute); err != nil {
		return fmt.Errorf("%w (log tail:\n%s)", err, l.LogTail(1, 20))
	}
	ns := l.NodeNS(1)
	dump := func() (string, error) { return ruleDump(l, ns, nft) }
	// The rules are set up before subnet.env is written; let the first checks settle.
	time.Sleep(time.Second)
	baseline, err := dump()
	if err != nil {
		return err
	}
	if strings.Count(baseline, "flanneld masq") < 6 {
		return fmt.Errorf("rules not installed:\n%s", baseline)
	}
	want := normalise(baseline)

	for _, f := range faults(nft) {
		var took []time.Duration
		for r := 0; r < runs; r++ {
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
				if time.Since(start) > 30*time.Second {
					return fmt.Errorf("%s: not restored after 30 s (log tail:\n%s)", f.name, l.LogTail(1, 20))
				}
				d, err := dump()
				if err == nil && normalise(d) == want {
					break
				}
			}
			took = append(took, time.Since(start))
			time.Sleep(300 * time.Millisecond)
		}
		fmt.Printf("%-9s  %-28s  %8.0fms  %s\n", modeName(nft), f.name, ms(benchkit.Median(took)), list(took))
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
	case <-time.After(idle):
	}
	c1, err := benchkit.CPUTicks(pid)
	if err != nil {
		return err
	}
	fmt.Printf("%-9s  %-28s  %8.2f%% of a core over %v (flanneld with its iptables/nft children)\n",
		modeName(nft), "CPU at rest", float64(c1-c0)/benchkit.TicksPerSecond/idle.Seconds()*100, idle)
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

func list(d []time.Duration) string {
	var parts []string
	for _, x := range d {
		parts = append(parts, fmt.Sprintf("%.0f", ms(x)))
	}
	return strings.Join(parts, " ") + " ms"
}
