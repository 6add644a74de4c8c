package benchkit

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseCPUTicks(t *testing.T) {
	for _, tc := range []struct {
		stat string
		want int64
		bad  bool
	}{
		{"1 (flanneld) S 0 1 1 0 -1 4194560 100 0 0 0 7 3 2 1 20 0 8 0 5 0 0", 13, false},
		{"42 (a) b) (c) R 1 1 1 0 -1 0 0 0 0 0 10 20 30 40 20 0 1 0 5 0 0", 100, false},
		{"1 (x) S 0 1 1 0 -1 0 0 0 0 0 7 3", 0, true},
		{"no parenthesis", 0, true},
		{"1 (x) S 0 1 1 0 -1 0 0 0 0 0 7 x 2 1 20", 0, true},
	} {
		got, err := parseCPUTicks(tc.stat)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("parseCPUTicks(%q) = %d, %v; want %d, error %v", tc.stat, got, err, tc.want, tc.bad)
		}
	}
}

func TestCPUTicksOfThisProcess(t *testing.T) {
	if _, err := CPUTicks(os.Getpid()); err != nil {
		t.Fatal(err)
	}
}

func TestMedian(t *testing.T) {
	xs := []time.Duration{5, 1, 3, 4}
	if got := Median(xs); got != 4 {
		t.Errorf("Median(%v) = %v, want 4", xs, got)
	}
	if xs[0] != 5 {
		t.Errorf("Median changed its input: %v", xs)
	}
	if got := Median([]float64{2.5}); got != 2.5 {
		t.Errorf("Median of one = %v", got)
	}
}

func TestUpstreamVersionMatchesBuildScript(t *testing.T) {
	data, err := os.ReadFile("../../tools/flanneld-upstream/VERSION")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(data)); got != UpstreamVersion {
		t.Fatalf("tools/flanneld-upstream/VERSION is %q, UpstreamVersion %q", got, UpstreamVersion)
	}
}
