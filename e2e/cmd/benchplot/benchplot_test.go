package main

import (
	"bytes"
	"encoding/xml"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flannel-go/flannel/e2e/benchkit"
)

func sample(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	control := &benchkit.Report{Bench: "control", Command: "go run ./e2e/cmd/bench -sizes 1000,20000", Machine: "2 CPUs", Load: "0.5 0.4 0.3",
		Start: time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC), Daemons: map[string]string{benchkit.Ours: "v1", benchkit.Upstream: "v0.28.10"}}
	for _, r := range []benchkit.Result{
		{Case: "1000 peers", X: 1000, Metric: "converge", Unit: "s", Daemon: benchkit.Ours, Runs: []float64{0.11, 0.12, 0.13}},
		{Case: "1000 peers", X: 1000, Metric: "converge", Unit: "s", Daemon: benchkit.Upstream, Runs: []float64{1.2}},
		{Case: "20000 peers", X: 20000, Metric: "converge", Unit: "s", Daemon: benchkit.Ours, Runs: []float64{0.6}, Target: 1},
		{Case: "20000 peers", X: 20000, Metric: "converge", Unit: "s", Daemon: benchkit.Upstream, Over: 1, Limit: 20},
		{Case: "1000 peers", X: 1000, Metric: "peak RSS", Unit: "MB", Daemon: benchkit.Ours, Runs: []float64{24}},
		{Case: "1000 peers", X: 1000, Metric: "peak RSS", Unit: "MB", Daemon: benchkit.Upstream, Runs: []float64{50}},
		{Case: "20000 peers", X: 20000, Metric: "peak RSS", Unit: "MB", Daemon: benchkit.Ours, Runs: []float64{43.5}, Target: 42},
		{Case: "20000 peers", X: 20000, Metric: "peak RSS", Unit: "MB", Daemon: benchkit.Upstream, Runs: []float64{93}},
	} {
		control.Add(r)
	}
	control.Note("upstream ran 1 time(s) at 20000 peers (ours 3)")
	if err := control.Write(filepath.Join(dir, "control.json")); err != nil {
		t.Fatal(err)
	}
	net := &benchkit.Report{Bench: "net", Daemons: map[string]string{benchkit.Ours: "v1", benchkit.Upstream: "v0.28.10"}}
	for _, r := range []benchkit.Result{
		{Case: "underlay (no overlay)", Metric: "throughput", Unit: "Gbit/s", Daemon: benchkit.Ours, Runs: []float64{9}, Higher: true},
		{Case: "vxlan", Metric: "throughput", Unit: "Gbit/s", Daemon: benchkit.Ours, Runs: []float64{7}, Higher: true},
		{Case: "vxlan", Metric: "throughput", Unit: "Gbit/s", Daemon: benchkit.Upstream, Runs: []float64{7.2}, Higher: true},
		{Case: "udp", Metric: "throughput", Unit: "Gbit/s", Daemon: benchkit.Ours, Runs: []float64{2.5}, Higher: true},
		{Case: "udp", Metric: "throughput", Unit: "Gbit/s", Daemon: benchkit.Upstream, Runs: []float64{0.3}, Higher: true},
	} {
		net.Add(r)
	}
	if err := net.Write(filepath.Join(dir, "net.json")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestRunWritesChartsTablesAndRatios(t *testing.T) {
	data := sample(t)
	img := filepath.Join(t.TempDir(), "img")
	doc := filepath.Join(t.TempDir(), "benchmarks.md")
	page := "# Benchmarks\n\n## Control plane\n\n<!-- bench:control -->\nold figures\n<!-- /bench:control -->\n\nMethod text stays.\n\n<!-- bench:net -->\n<!-- /bench:net -->\n"
	if err := os.WriteFile(doc, []byte(page), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(&out, data, img, doc); err != nil {
		t.Fatal(err)
	}
	// two scales: both control curves; the net report: the bars; no kube report: no kube curve
	for _, f := range []string{"bench-control-converge.svg", "bench-control-rss.svg", "bench-net-throughput.svg"} {
		svg, err := os.ReadFile(filepath.Join(img, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := wellFormed(svg); err != nil {
			t.Errorf("%s: %v", f, err)
		}
		if !bytes.Contains(svg, []byte("upstream v0.28.10")) || !bytes.Contains(svg, []byte("flannel-go v1")) {
			t.Errorf("%s: legend lacks a daemon", f)
		}
		if bytes.Contains(svg, []byte("@font-face")) {
			t.Errorf("%s: fonts embedded", f)
		}
	}
	if _, err := os.Stat(filepath.Join(img, "bench-kube-rss.svg")); !os.IsNotExist(err) {
		t.Errorf("kube chart without kube results: %v", err)
	}
	// a chart the results no longer make goes; files benchplot does not know stay
	for _, f := range []string{"bench-kube-program.svg", "logo.svg"} {
		if err := os.WriteFile(filepath.Join(img, f), []byte("<svg/>"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := run(io.Discard, data, img, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(img, "bench-kube-program.svg")); !os.IsNotExist(err) {
		t.Errorf("stale kube chart kept: %v", err)
	}
	if _, err := os.Stat(filepath.Join(img, "logo.svg")); err != nil {
		t.Errorf("unknown file removed: %v", err)
	}
	conv, _ := os.ReadFile(filepath.Join(img, "bench-control-converge.svg"))
	if !bytes.Contains(conv, []byte("not within the limit")) || !bytes.Contains(conv, []byte("target")) {
		t.Errorf("converge chart lacks the over-limit series or the target")
	}
	got, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	text := string(got)
	for _, want := range []string{
		"Command: `sudo make bench-control` (`go run ./e2e/cmd/bench -sizes 1000,20000`)",
		"Date: 2026-12-07, 10:00",
		"| case | measure | flannel-go | upstream v0.28.10 | flannel-go ÷ upstream | target |",
		"| 1000 peers | converge | 0.12 s | 1.2 s | 0.1 |  |",
		"| 20000 peers | converge | 0.6 s | not within 20 s | < 0.03 | ≤ 1 s: met |",
		"| 20000 peers | peak RSS | 43.5 MB | 93 MB | 0.468 | ≤ 42 MB: **missed** |",
		"- upstream ran 1 time(s) at 20000 peers (ours 3)",
		"Method text stays.",
		"| udp | throughput | 2.5 Gbit/s | 0.3 Gbit/s | 8.33 |",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("page lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "old figures") {
		t.Errorf("old block kept:\n%s", text)
	}
	if !strings.Contains(out.String(), "20000 peers") || !strings.Contains(out.String(), "< 0.03") {
		t.Errorf("ratios not printed:\n%s", out.String())
	}
	// a second run gives the same page: the blocks are replaced, not added to
	if err := run(io.Discard, data, img, doc); err != nil {
		t.Fatal(err)
	}
	again, _ := os.ReadFile(doc)
	if string(again) != text {
		t.Errorf("second run changed the page:\n%s", again)
	}
}

func wellFormed(svg []byte) error {
	d := xml.NewDecoder(bytes.NewReader(svg))
	for {
		if _, err := d.Token(); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
}

func TestPreviousColumnWhereUpstreamLacksTheFigure(t *testing.T) {
	path := filepath.Join(t.TempDir(), "restart.json")
	old := &benchkit.Report{Bench: "restart", Command: "go run ./e2e/cmd/benchrestart", Daemons: map[string]string{benchkit.Ours: "v1"}}
	old.Add(benchkit.Result{Case: "vxlan", Metric: "kill to ready (/readyz)", Unit: "s", Daemon: benchkit.Ours, Runs: []float64{0.11}})
	if err := old.Write(path); err != nil {
		t.Fatal(err)
	}
	cur := &benchkit.Report{Bench: "restart", Command: old.Command, Daemons: map[string]string{benchkit.Ours: "v2", benchkit.Upstream: "v0.28.10"}}
	cur.Add(benchkit.Result{Case: "vxlan", Metric: "pings lost", Unit: "pings", Daemon: benchkit.Ours, Runs: []float64{0}})
	cur.Add(benchkit.Result{Case: "vxlan", Metric: "pings lost", Unit: "pings", Daemon: benchkit.Upstream, Runs: []float64{21}})
	cur.Add(benchkit.Result{Case: "vxlan", Metric: "kill to ready (/readyz)", Unit: "s", Daemon: benchkit.Ours, Runs: []float64{0.06}})
	if err := cur.Write(path); err != nil {
		t.Fatal(err)
	}
	r, err := benchkit.ReadReport(path)
	if err != nil {
		t.Fatal(err)
	}
	got := table(r)
	for _, want := range []string{
		"flannel-go before (" + r.Previous.End.Format("2006-01-02") + " v1) |",
		"| vxlan | pings lost | 0 pings | 21 pings | 0 |  |",
		"| vxlan | kill to ready (/readyz) | 0.06 s | — | — | 0.11 s |",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
}

func TestReplaceBlockNeedsOneBlock(t *testing.T) {
	for _, text := range []string{
		"no markers",
		"<!-- /bench:net --> <!-- bench:net -->",
		"<!-- bench:net --><!-- /bench:net --><!-- bench:net --><!-- /bench:net -->",
	} {
		if _, err := replaceBlock(text, "net", "x\n"); err == nil {
			t.Errorf("replaceBlock(%q) accepted", text)
		}
	}
}

func TestRunWithoutResults(t *testing.T) {
	if err := run(io.Discard, t.TempDir(), t.TempDir(), ""); err == nil {
		t.Error("run with an empty data directory succeeded")
	}
}

// The daemon must never link the plotting library (nor anything of the e2e tree).
func TestDaemonDoesNotLinkPlotting(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	goCmd, err := exec.LookPath("go")
	if err != nil {
		goCmd = "/usr/local/go/bin/go"
	}
	cmd := exec.Command(goCmd, "list", "-deps", "github.com/flannel-go/flannel/cmd/flanneld")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps ./cmd/flanneld: %v", err)
	}
	if !strings.Contains(string(out), "github.com/flannel-go/flannel/cmd/flanneld") {
		t.Fatalf("go list printed no flanneld:\n%s", out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "gonum.org/") || strings.HasPrefix(pkg, "github.com/flannel-go/flannel/e2e") {
			t.Errorf("flanneld links %s", pkg)
		}
	}
}
