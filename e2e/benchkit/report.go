package benchkit

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The daemons a report compares.
const (
	Ours     = "flannel-go"
	Upstream = "upstream"
)

// Result is one figure of one daemon in one case, every run's value.
type Result struct {
	Case   string    `json:"case"`        // what was measured: "20000 peers", "vxlan"
	X      float64   `json:"x,omitempty"` // the case's scale where results form a curve
	Metric string    `json:"metric"`
	Unit   string    `json:"unit"`
	Daemon string    `json:"daemon"`         // Ours or Upstream
	Runs   []float64 `json:"runs"`           // finished runs, in Unit
	Over   int       `json:"over,omitempty"` // runs that did not finish within Limit
	Limit  float64   `json:"limit,omitempty"`
	Higher bool      `json:"higher,omitempty"` // higher is better (throughput)
	// Target, when not 0, is the goal: an upper bound, or lower when Higher.
	Target float64 `json:"target,omitempty"`
}

// Median is the upper-middle run, runs over Limit counting as longest (then over is set and
// v is Limit); ok is false without runs.
func (r Result) Median() (v float64, over, ok bool) {
	n := len(r.Runs) + r.Over
	if n == 0 {
		return 0, false, false
	}
	i := n / 2
	if i >= len(r.Runs) {
		return r.Limit, true, true
	}
	s := slices.Clone(r.Runs)
	slices.Sort(s)
	return s[i], false, true
}

// Cell formats the median with its unit.
func (r Result) Cell() string {
	v, over, ok := r.Median()
	switch {
	case !ok:
		return "-"
	case over:
		return "not within " + Format(v, r.Unit)
	}
	return Format(v, r.Unit)
}

// AllRuns formats every run, ">Limit" for each run over it.
func (r Result) AllRuns() string {
	var parts []string
	for _, x := range r.Runs {
		parts = append(parts, number(x))
	}
	for range r.Over {
		parts = append(parts, ">"+number(r.Limit))
	}
	return strings.Join(parts, " ")
}

// Met reports whether the median meets Target; ok is false without target or median.
func (r Result) Met() (met, ok bool) {
	v, over, has := r.Median()
	if r.Target == 0 || !has {
		return false, false
	}
	if r.Higher {
		return !over && v >= r.Target, true
	}
	return !over && v <= r.Target, true
}

// Format writes v with three significant digits and its unit (ms from 1000 on as s).
func Format(v float64, unit string) string {
	if unit == "ms" && v >= 1000 {
		v, unit = v/1000, "s"
	}
	s := number(v)
	switch unit {
	case "":
		return s
	case "%":
		return s + " %"
	}
	return s + " " + unit
}

func number(v float64) string {
	d := 0
	if v != 0 {
		d = max(0, min(6, 2-int(math.Floor(math.Log10(math.Abs(v))))))
	}
	s := strconv.FormatFloat(v, 'f', d, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// Ratio is ours ÷ upstream of the medians, a "<" or ">" bound when one side went over.
func Ratio(ours, upstream Result) (ratio float64, bound string, ok bool) {
	o, oOver, ok1 := ours.Median()
	u, uOver, ok2 := upstream.Median()
	if !ok1 || !ok2 || (oOver && uOver) || u == 0 {
		return 0, "", false
	}
	switch {
	case uOver:
		bound = "<"
	case oOver:
		bound = ">"
	}
	return o / u, bound, true
}

// FormatRatio formats a Ratio.
func FormatRatio(ratio float64, bound string, ok bool) string {
	if !ok {
		return "-"
	}
	if bound != "" {
		return bound + " " + number(ratio)
	}
	return number(ratio)
}

// Report is one benchmark command run's results, written as JSON for e2e/cmd/benchplot.
type Report struct {
	Bench    string            `json:"bench"`   // control, kube, net, heal, rules, restart
	Title    string            `json:"title"`   // what the benchmark measures, in a few words
	Command  string            `json:"command"` // the command line that reproduces it
	Machine  string            `json:"machine"`
	Start    time.Time         `json:"start"`
	End      time.Time         `json:"end"`
	Load     string            `json:"load"`    // load average at the end
	Daemons  map[string]string `json:"daemons"` // each daemon's --version
	Notes    []string          `json:"notes,omitempty"`
	Results  []Result          `json:"results"`
	Previous *Previous         `json:"previous,omitempty"` // ours from the replaced report
}

// Previous is our part of an earlier report.
type Previous struct {
	End     time.Time `json:"end"`
	Version string    `json:"version"`
	Command string    `json:"command"`
	Results []Result  `json:"results"`
}

// NewReport starts a report for bench, whose command is cmd, with this process's arguments.
func NewReport(bench, title, cmd string) *Report {
	return &Report{
		Bench:   bench,
		Title:   title,
		Command: strings.Join(append([]string{cmd}, os.Args[1:]...), " "),
		Machine: Machine(),
		Start:   time.Now().UTC().Truncate(time.Second),
		Daemons: map[string]string{},
	}
}

// Add appends a result; results without any run are dropped.
func (r *Report) Add(res Result) {
	if len(res.Runs)+res.Over > 0 {
		r.Results = append(r.Results, res)
	}
}

func (r *Report) Note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

func (r *Report) Find(daemon, c, m string) (Result, bool) {
	for _, res := range r.Results {
		if res.Daemon == daemon && res.Case == c && res.Metric == m {
			return res, true
		}
	}
	return Result{}, false
}

// Row is one line of a report's table: a case and metric with each daemon's result.
type Row struct {
	Case, Metric   string
	Ours, Upstream Result
	HasUpstream    bool
}

// Rows lists cases and metrics in the order ours were added (upstream-only cases follow).
func (r *Report) Rows() []Row {
	var rows []Row
	seen := map[[2]string]bool{}
	for _, d := range []string{Ours, Upstream} {
		for _, res := range r.Results {
			k := [2]string{res.Case, res.Metric}
			if res.Daemon != d || seen[k] {
				continue
			}
			seen[k] = true
			row := Row{Case: res.Case, Metric: res.Metric}
			row.Ours, _ = r.Find(Ours, res.Case, res.Metric)
			row.Upstream, row.HasUpstream = r.Find(Upstream, res.Case, res.Metric)
			rows = append(rows, row)
		}
	}
	return rows
}

// PrintTable writes a text table: each case and metric with both medians, ratio and runs.
func (r *Report) PrintTable(w io.Writer) {
	rows := r.Rows()
	cw, mw := len("case"), len("metric")
	for _, row := range rows {
		cw, mw = max(cw, len(row.Case)), max(mw, len(row.Metric))
	}
	fmt.Fprintf(w, "%-*s  %-*s  %16s  %16s  %9s  %s\n", cw, "case", mw, "metric", Ours, Upstream, "ours/up", "runs (ours; upstream)")
	for _, row := range rows {
		up, ratio, runs := "-", "-", row.Ours.AllRuns()
		if row.HasUpstream {
			up = row.Upstream.Cell()
			ratio = FormatRatio(Ratio(row.Ours, row.Upstream))
			runs += "; " + row.Upstream.AllRuns()
		}
		fmt.Fprintf(w, "%-*s  %-*s  %16s  %16s  %9s  %s\n", cw, row.Case, mw, row.Metric, row.Ours.Cell(), up, ratio, runs)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}

// Write sets End and Load and writes the report to path, keeping Previous (see previous).
func (r *Report) Write(path string) error {
	r.End = time.Now().UTC().Truncate(time.Second)
	if load, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(load)); len(f) >= 3 {
			r.Load = strings.Join(f[:3], " ")
		}
	}
	if old, err := ReadReport(path); err == nil {
		r.Previous = previous(old, r.Command)
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// previous is what Write keeps of old: old's Previous if that was cmd's and old another
// command's (a trial run keeps the real figures), else our part of old.
func previous(old *Report, cmd string) *Previous {
	if old.Command != cmd && old.Previous != nil && old.Previous.Command == cmd {
		return old.Previous
	}
	p := &Previous{End: old.End, Version: old.Daemons[Ours], Command: old.Command}
	for _, res := range old.Results {
		if res.Daemon == Ours {
			p.Results = append(p.Results, res)
		}
	}
	if len(p.Results) == 0 {
		return nil
	}
	return p
}

// ReadReport reads a report written by Write.
func ReadReport(path string) (*Report, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Report
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if r.Bench == "" {
		return nil, fmt.Errorf("%s: not a benchmark report (no bench name)", path)
	}
	for _, res := range r.Results {
		if res.Daemon != Ours && res.Daemon != Upstream {
			return nil, fmt.Errorf("%s: result %q/%q of unknown daemon %q", path, res.Case, res.Metric, res.Daemon)
		}
		if res.Over > 0 && !(res.Limit > 0) || slices.ContainsFunc(res.Runs, func(x float64) bool { return math.IsNaN(x) || math.IsInf(x, 0) }) {
			return nil, fmt.Errorf("%s: result %q/%q has runs over no limit or a non-finite run", path, res.Case, res.Metric)
		}
	}
	return &r, nil
}

// PreviousResult is our previous figure for c and m, if made by the same command line.
func (r *Report) PreviousResult(c, m string) (Result, bool) {
	if r.Previous == nil || r.Previous.Command != r.Command {
		return Result{}, false
	}
	for _, res := range r.Previous.Results {
		if res.Case == c && res.Metric == m {
			return res, true
		}
	}
	return Result{}, false
}
