package benchkit

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestResultMedian(t *testing.T) {
	for _, tc := range []struct {
		name     string
		r        Result
		want     float64
		over, ok bool
		cell     string
	}{
		{"none", Result{Unit: "s"}, 0, false, false, "-"},
		{"odd", Result{Unit: "s", Runs: []float64{0.9, 0.6, 0.7}}, 0.7, false, true, "0.7 s"},
		{"even takes the upper middle", Result{Unit: "MB", Runs: []float64{40, 37.2, 38, 41}}, 40, false, true, "40 MB"},
		{"one over of three: finished median", Result{Unit: "s", Runs: []float64{24, 26}, Over: 1, Limit: 60}, 26, false, true, "26 s"},
		{"two over of three: over", Result{Unit: "s", Runs: []float64{24}, Over: 2, Limit: 60}, 60, true, true, "not within 60 s"},
		{"only over", Result{Unit: "ms", Over: 1, Limit: 15000}, 15000, true, true, "not within 15 s"},
	} {
		v, over, ok := tc.r.Median()
		if v != tc.want || over != tc.over || ok != tc.ok {
			t.Errorf("%s: Median() = %v, %v, %v; want %v, %v, %v", tc.name, v, over, ok, tc.want, tc.over, tc.ok)
		}
		if got := tc.r.Cell(); got != tc.cell {
			t.Errorf("%s: Cell() = %q, want %q", tc.name, got, tc.cell)
		}
	}
}

func TestFormat(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		unit string
		want string
	}{
		{0.6134, "s", "0.613 s"},
		{24.37, "s", "24.4 s"},
		{37.24, "MB", "37.2 MB"},
		{0.0152, "s", "0.0152 s"},
		{0, "%", "0 %"},
		{0.5, "%", "0.5 %"},
		{113.55, "%", "114 %"},
		{1234, "ms", "1.23 s"},
		{12.04, "ms", "12 ms"},
		{2.2401, "Gbit/s", "2.24 Gbit/s"},
		{3, "pings", "3 pings"},
		{40, "", "40"},
	} {
		if got := Format(tc.v, tc.unit); got != tc.want {
			t.Errorf("Format(%v, %q) = %q, want %q", tc.v, tc.unit, got, tc.want)
		}
	}
}

func TestRatio(t *testing.T) {
	ours := Result{Unit: "s", Runs: []float64{0.6}}
	for _, tc := range []struct {
		name     string
		ours, up Result
		want     string
	}{
		{"both finished", ours, Result{Unit: "s", Runs: []float64{24}}, "0.025"},
		{"upstream over: an upper bound", ours, Result{Unit: "s", Over: 1, Limit: 60}, "< 0.01"},
		{"ours over: a lower bound", Result{Unit: "s", Over: 1, Limit: 60}, Result{Unit: "s", Runs: []float64{6}}, "> 10"},
		{"both over", Result{Over: 1, Limit: 1}, Result{Over: 1, Limit: 1}, "-"},
		{"upstream zero", ours, Result{Runs: []float64{0}}, "-"},
		{"upstream missing", ours, Result{}, "-"},
		{"higher is better keeps ours over upstream", Result{Runs: []float64{2.24}, Higher: true}, Result{Runs: []float64{0.166}, Higher: true}, "13.5"},
	} {
		if got := FormatRatio(Ratio(tc.ours, tc.up)); got != tc.want {
			t.Errorf("%s: ratio %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestMet(t *testing.T) {
	for _, tc := range []struct {
		name    string
		r       Result
		met, ok bool
	}{
		{"no target", Result{Runs: []float64{1}}, false, false},
		{"under an upper bound", Result{Runs: []float64{37}, Target: 42}, true, true},
		{"at the bound", Result{Runs: []float64{42}, Target: 42}, true, true},
		{"over an upper bound", Result{Runs: []float64{43}, Target: 42}, false, true},
		{"over the limit", Result{Over: 1, Limit: 60, Target: 1}, false, true},
		{"above a lower bound", Result{Runs: []float64{38}, Target: 30, Higher: true}, true, true},
		{"below a lower bound", Result{Runs: []float64{27}, Target: 30, Higher: true}, false, true},
	} {
		if met, ok := tc.r.Met(); met != tc.met || ok != tc.ok {
			t.Errorf("%s: Met() = %v, %v; want %v, %v", tc.name, met, ok, tc.met, tc.ok)
		}
	}
}

func TestReportRowsAndTable(t *testing.T) {
	r := &Report{Bench: "control", Daemons: map[string]string{Ours: "v1", Upstream: "v0.28.10"}}
	r.Add(Result{Case: "1000 peers", Metric: "converge", Unit: "s", Daemon: Ours, Runs: []float64{0.11}})
	r.Add(Result{Case: "1000 peers", Metric: "converge", Unit: "s", Daemon: Upstream, Runs: []float64{1.2}})
	r.Add(Result{Case: "1000 peers", Metric: "kill to ready", Unit: "s", Daemon: Ours, Runs: []float64{0.06}})
	r.Add(Result{Case: "1000 peers", Metric: "nothing", Unit: "s", Daemon: Ours}) // no run: dropped
	r.Add(Result{Case: "upstream only", Metric: "m", Unit: "s", Daemon: Upstream, Runs: []float64{1}})
	rows := r.Rows()
	if len(rows) != 3 {
		t.Fatalf("Rows() = %+v, want 3 rows", rows)
	}
	if !rows[0].HasUpstream || rows[0].Upstream.Runs[0] != 1.2 || rows[1].HasUpstream || rows[2].Case != "upstream only" {
		t.Errorf("Rows() = %+v", rows)
	}
	var b bytes.Buffer
	r.PrintTable(&b)
	for _, want := range []string{"0.11 s", "1.2 s", "0.0917", "0.06 s"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

func TestWriteKeepsPrevious(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.json")
	const cmd = "go run ./e2e/cmd/bench -runs 3"
	write := func(command, version string, converge float64) *Report {
		t.Helper()
		r := &Report{Bench: "control", Command: command, Daemons: map[string]string{Ours: version, Upstream: "v0.28.10"}}
		r.Add(Result{Case: "200 peers", Metric: "converge", Unit: "s", Daemon: Ours, Runs: []float64{converge}})
		r.Add(Result{Case: "200 peers", Metric: "converge", Unit: "s", Daemon: Upstream, Runs: []float64{0.43}, Over: 1, Limit: 90})
		if err := r.Write(path); err != nil {
			t.Fatal(err)
		}
		back, err := ReadReport(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(back.Results) != 2 || back.Results[1].Over != 1 || back.End.IsZero() {
			t.Fatalf("read back %+v", back)
		}
		return back
	}
	prevConverge := func(r *Report) float64 {
		t.Helper()
		p, ok := r.PreviousResult("200 peers", "converge")
		if !ok {
			return 0
		}
		if len(r.Previous.Results) != 1 {
			t.Errorf("previous holds upstream's results: %+v", r.Previous)
		}
		return p.Runs[0]
	}
	if r := write(cmd, "v1", 0.13); r.Previous != nil {
		t.Fatalf("first report has a previous: %+v", r.Previous)
	}
	if r := write(cmd, "v2", 0.12); prevConverge(r) != 0.13 || r.Previous.Version != "v1" {
		t.Errorf("same command: previous %+v", r.Previous)
	}
	// a trial run with other flags keeps the previous of the command it does not replace
	if r := write("go run ./e2e/cmd/bench -runs 1", "v3", 0.5); prevConverge(r) != 0 {
		t.Errorf("trial run shows the figures of another command as its previous: %+v", r.Previous)
	}
	if r := write(cmd, "v4", 0.11); prevConverge(r) != 0.12 || r.Previous.Version != "v2" {
		t.Errorf("after a trial run: previous %+v, want v2's", r.Previous)
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("temporary file left behind: %v", err)
	}
}

func TestReadReportRejects(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"notjson":  "{",
		"nobench":  `{"results":[]}`,
		"daemon":   `{"bench":"x","results":[{"case":"c","metric":"m","daemon":"other","runs":[1]}]}`,
		"overless": `{"bench":"x","results":[{"case":"c","metric":"m","daemon":"flannel-go","over":1}]}`,
	} {
		p := filepath.Join(dir, name+".json")
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadReport(p); err == nil {
			t.Errorf("%s: ReadReport accepted %s", name, body)
		}
	}
}

func TestMachine(t *testing.T) {
	got := machine(2, "processor\t: 0\nmodel name\t: AMD  EPYC 7B13\n", "MemTotal:       24615092 kB\n", "6.18.4", "go1.26.8")
	if want := "2 CPUs (AMD EPYC 7B13), 23 GiB, Linux 6.18.4, go1.26.8"; got != want {
		t.Errorf("machine() = %q, want %q", got, want)
	}
}
