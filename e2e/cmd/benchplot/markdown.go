package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/flannel-go/flannel/e2e/benchkit"
)

var makeTargets = map[string]string{
	"control": "bench-control", "kube": "bench-kube", "net": "bench-net",
	"heal": "bench-heal", "rules": "bench-rules", "restart": "bench-restart", "diagnose": "bench-diagnose",
}

func markers(bench string) (begin, end string) {
	return "<!-- bench:" + bench + " -->", "<!-- /bench:" + bench + " -->"
}

// rewriteDoc replaces each report's block in the page at path; missing markers are an error.
func rewriteDoc(path string, reports []*benchkit.Report) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	text := string(data)
	for _, r := range reports {
		if text, err = replaceBlock(text, r.Bench, reportMarkdown(r)); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	return os.WriteFile(path, []byte(text), 0o644)
}

func replaceBlock(text, bench, body string) (string, error) {
	begin, end := markers(bench)
	i := strings.Index(text, begin)
	j := strings.Index(text, end)
	if i < 0 || j < i || strings.Count(text, begin) != 1 || strings.Count(text, end) != 1 {
		return "", fmt.Errorf("want exactly one %s ... %s block", begin, end)
	}
	return text[:i+len(begin)] + "\n" + body + text[j:], nil
}

// reportMarkdown is a report's block: how to reproduce, where and when, daemons, table, notes.
func reportMarkdown(r *benchkit.Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Command: `sudo make %s` (`%s`).  \n", makeTargets[r.Bench], r.Command)
	fmt.Fprintf(&b, "Machine: %s; load average at the end %s.  \n", r.Machine, r.Load)
	fmt.Fprintf(&b, "Date: %s, %s–%s UTC.", r.Start.Format("2006-01-02"), r.Start.Format("15:04"), r.End.Format("15:04"))
	var ds []string
	for _, d := range []string{benchkit.Ours, benchkit.Upstream} {
		if v, ok := r.Daemons[d]; ok {
			ds = append(ds, d+" "+v)
		}
	}
	fmt.Fprintf(&b, " Daemons: %s.\n\n", strings.Join(ds, ", "))
	b.WriteString(table(r))
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "- %s\n", n)
	}
	return b.String()
}

// table has a row per case and metric.
func table(r *benchkit.Report) string {
	rows := r.Rows()
	withUp, withPrev, withTarget := false, false, false
	for _, row := range rows {
		withUp = withUp || row.HasUpstream
		if _, ok := r.PreviousResult(row.Case, row.Metric); ok && !row.HasUpstream {
			withPrev = true
		}
		withTarget = withTarget || row.Ours.Target != 0
	}
	head := []string{"case", "measure", benchkit.Ours}
	align := []string{"---", "---", "---:"}
	if withUp {
		head = append(head, label(r, benchkit.Upstream), benchkit.Ours+" ÷ upstream")
		align = append(align, "---:", "---:")
	}
	if withPrev {
		head = append(head, fmt.Sprintf("%s before (%s)", benchkit.Ours, previousWhen(r.Previous)))
		align = append(align, "---:")
	}
	if withTarget {
		head = append(head, "target")
		align = append(align, "---")
	}
	var b strings.Builder
	line := func(cells []string) { fmt.Fprintf(&b, "| %s |\n", strings.Join(cells, " | ")) }
	line(head)
	line(align)
	for _, row := range rows {
		cells := []string{row.Case, row.Metric, cell(row.Ours)}
		if withUp {
			up, ratio := "—", "—"
			if row.HasUpstream {
				up, ratio = cell(row.Upstream), benchkit.FormatRatio(benchkit.Ratio(row.Ours, row.Upstream))
			}
			cells = append(cells, up, ratio)
		}
		if withPrev {
			prev := ""
			if p, ok := r.PreviousResult(row.Case, row.Metric); ok && !row.HasUpstream {
				prev = p.Cell()
			}
			cells = append(cells, prev)
		}
		if withTarget {
			cells = append(cells, target(row.Ours))
		}
		line(cells)
	}
	b.WriteString("\n")
	return b.String()
}

func cell(res benchkit.Result) string {
	if len(res.Runs)+res.Over == 0 {
		return "—"
	}
	return res.Cell()
}

// target is "≤ 42 MB: met", "≥ 30 %: missed" or "".
func target(res benchkit.Result) string {
	met, ok := res.Met()
	if !ok {
		return ""
	}
	rel, verdict := "≤", "met"
	if res.Higher {
		rel = "≥"
	}
	if !met {
		verdict = "**missed**"
	}
	return fmt.Sprintf("%s %s: %s", rel, benchkit.Format(res.Target, res.Unit), verdict)
}

func previousWhen(p *benchkit.Previous) string {
	if p == nil {
		return ""
	}
	return strings.TrimSpace(p.End.Format("2006-01-02") + " " + p.Version)
}
