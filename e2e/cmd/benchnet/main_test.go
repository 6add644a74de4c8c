package main

import (
	"strings"
	"testing"

	"github.com/flannel-go/flannel/e2e/benchkit"
)

func names(ts []*target) string {
	var s []string
	for _, t := range ts {
		s = append(s, t.name)
	}
	return strings.Join(s, " ")
}

func TestTargetsAndRoundOrder(t *testing.T) {
	ours := benchkit.Daemon{Name: benchkit.Ours, Bin: "/a"}
	up := benchkit.Daemon{Name: benchkit.Upstream, Bin: "/up"}
	b := &benchkit.Daemon{Name: benchkit.Ours, Bin: "/b"}
	tests := []struct {
		name      string
		only      []string
		daemons   []benchkit.Daemon
		b         *benchkit.Daemon
		odd, even string
		wantErr   string
	}{
		{"ours alone", []string{"udp", "underlay", "vxlan"}, []benchkit.Daemon{ours}, nil,
			"underlay vxlan udp", "underlay vxlan udp", ""},
		{"with upstream", []string{"vxlan", "udp"}, []benchkit.Daemon{ours, up}, nil,
			"vxlan vxlan/upstream udp udp/upstream", "vxlan vxlan/upstream udp udp/upstream", ""},
		{"A/B", []string{"underlay", "vxlan", "udp"}, []benchkit.Daemon{ours}, b,
			"underlay vxlan/A vxlan/B udp/A udp/B", "underlay vxlan/B vxlan/A udp/B udp/A", ""},
		{"A/B and upstream", []string{"udp"}, []benchkit.Daemon{ours, up}, b,
			"udp/A udp/B udp/upstream", "udp/B udp/A udp/upstream", ""},
		{"unknown path", []string{"ipip"}, []benchkit.Daemon{ours}, nil, "", "", "unknown path"},
	}
	for _, tc := range tests {
		ts, err := newTargets(tc.only, tc.daemons, tc.b)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: error %v, want %q", tc.name, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		for r, want := range map[int]string{1: tc.odd, 2: tc.even, 3: tc.odd, 6: tc.even} {
			if got := names(roundOrder(ts, r)); got != want {
				t.Errorf("%s, round %d: %q, want %q", tc.name, r, got, want)
			}
		}
		for _, x := range ts {
			want := map[string]string{"": "", "A": "/a", "B": "/b"}[x.variant]
			if x.variant == "" && x.backend != "" {
				want = map[string]string{benchkit.Ours: "/a", benchkit.Upstream: "/up"}[x.daemon.Name]
			}
			if x.daemon.Bin != want {
				t.Errorf("%s: %s runs %q, want %q", tc.name, x.name, x.daemon.Bin, want)
			}
		}
	}
}

// A -compare run: B/A per backend (vxlan's idle CPU not compared), the udp targets for
// B, and results for the page of A alone.
func TestCompareReport(t *testing.T) {
	a := benchkit.Daemon{Name: benchkit.Ours, Bin: "/a", Version: "va"}
	b := benchkit.Daemon{Name: benchkit.Ours, Bin: "/b", Version: "vb"}
	ts, err := newTargets([]string{"vxlan", "udp"}, []benchkit.Daemon{a}, &b)
	if err != nil {
		t.Fatal(err)
	}
	set := map[string][2][]float64{ // gbps, cpu
		"vxlan/A": {{5, 5, 5}, {0.01, 0, 0}},
		"vxlan/B": {{5, 5, 5}, {0, 0.01, 0}},
		"udp/A":   {{2, 2, 2}, {0.8, 0.8, 0.8}},
		"udp/B":   {{2, 1, 2}, {0.88, 0.44, 0.88}}, // 10% more CPU per Gbit/s each round
	}
	for _, x := range ts {
		x.gbps, x.cpu, x.rtt = set[x.name][0], set[x.name][1], []float64{1, 1, 1}
		x.rss = []float64{40, 42, 41}
		if x.variant == "B" {
			x.rss = []float64{30, 31, 32}
		}
	}
	var w strings.Builder
	compareReport(&w, ts, a, b)
	out := w.String()
	for _, want := range []string{
		"A = /a (va), B = /b (vb)",
		"idle",
		"+10.0%",
		"1.000 0.500 1.000",
		"41 / 31",
		"target udp CPU per Gbit/s at most 5% above A's (median of rounds): MISSED (+10.0%)",
		"target udp >= 30% of vxlan (B) (median of rounds): met (40%)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	rep := report(ts, options{runs: 3, secs: 1})
	if v := rep.Daemons[benchkit.Ours]; v != "va" {
		t.Errorf("report's version of ours %q, want A's", v)
	}
	if res, ok := rep.Find(benchkit.Ours, "udp", "throughput"); !ok || len(res.Runs) != 3 || res.Runs[1] != 2 {
		t.Errorf("report's udp throughput %+v, want A's runs", res)
	}
}

func TestMedianRatioAndCPUPerGbit(t *testing.T) {
	if got := medianRatio([]float64{2, 3, 10}, []float64{1, 1, 2}); got != 3 {
		t.Errorf("medianRatio = %v, want 3 (ratios 2, 3, 5)", got)
	}
	if got := medianRatio(nil, nil); got != 0 {
		t.Errorf("medianRatio of nothing = %v", got)
	}
	x := &target{gbps: []float64{2, 4}, cpu: []float64{0.5, 0.5}}
	if got := cpuPerGbit(x); got[0] != 0.25 || got[1] != 0.125 {
		t.Errorf("cpuPerGbit = %v", got)
	}
}
