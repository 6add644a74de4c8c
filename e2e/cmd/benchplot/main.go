// Command benchplot turns the benchmarks' -json results into SVG charts and the Markdown
// tables between <!-- bench:NAME --> markers (a command of its own so flanneld never links
// the plotting library).
//
//	go run ./e2e/cmd/benchplot -data Documentation/benchdata -img Documentation/img -doc Documentation/benchmarks.md
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/flannel-go/flannel/e2e/benchkit"
)

// benches are the benchmarks in the order of the page.
var benches = []string{"control", "kube", "net", "heal", "rules", "restart", "diagnose"}

func main() {
	data := flag.String("data", "Documentation/benchdata", "directory of the benchmark results (<bench>.json)")
	img := flag.String("img", "Documentation/img", "directory the SVG charts are written to")
	doc := flag.String("doc", "", "results page whose <!-- bench:NAME --> blocks are rewritten (\"\": none)")
	flag.Parse()
	if err := run(os.Stdout, *data, *img, *doc); err != nil {
		fmt.Fprintf(os.Stderr, "benchplot: %v\n", err)
		os.Exit(1)
	}
}

func run(w io.Writer, data, img, doc string) error {
	reports, err := readReports(data)
	if err != nil {
		return err
	}
	if len(reports) == 0 {
		return fmt.Errorf("no results in %s (the bench commands write them with -json)", data)
	}
	charts, err := writeCharts(reports, img)
	if err != nil {
		return err
	}
	for _, c := range charts {
		fmt.Fprintf(w, "chart: %s\n", c)
	}
	if doc != "" {
		if err := rewriteDoc(doc, reports); err != nil {
			return err
		}
		fmt.Fprintf(w, "tables: %s\n", doc)
	}
	printRatios(w, reports)
	return nil
}

func readReports(dir string) ([]*benchkit.Report, error) {
	var rs []*benchkit.Report
	for _, b := range benches {
		r, err := benchkit.ReadReport(filepath.Join(dir, b+".json"))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if r.Bench != b {
			return nil, fmt.Errorf("%s.json holds the results of %q", b, r.Bench)
		}
		rs = append(rs, r)
	}
	return rs, nil
}

func printRatios(w io.Writer, reports []*benchkit.Report) {
	fmt.Fprintf(w, "\n%s ÷ %s (medians):\n", benchkit.Ours, benchkit.Upstream)
	for _, r := range reports {
		for _, row := range r.Rows() {
			if !row.HasUpstream {
				continue
			}
			fmt.Fprintf(w, "  %-8s %-36s %-34s %14s vs %-18s %s\n", r.Bench, row.Case, row.Metric, row.Ours.Cell(), row.Upstream.Cell(),
				benchkit.FormatRatio(benchkit.Ratio(row.Ours, row.Upstream)))
		}
	}
}

func has(reports []*benchkit.Report, bench string) (*benchkit.Report, bool) {
	i := slices.IndexFunc(reports, func(r *benchkit.Report) bool { return r.Bench == bench })
	if i < 0 {
		return nil, false
	}
	return reports[i], true
}

// label is a daemon's name with its version, as the legends show it.
func label(r *benchkit.Report, daemon string) string {
	if v := r.Daemons[daemon]; v != "" && !strings.Contains(daemon, v) {
		return daemon + " " + v
	}
	return daemon
}
