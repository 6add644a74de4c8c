package main

import (
	"runtime/debug"
	"testing"
)

// GOGC set by the operator is left to the runtime; otherwise the daemon's default applies.
func TestSetGCPercent(t *testing.T) {
	orig := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(orig) })
	tests := []struct {
		name    string
		env     map[string]string
		want    string
		percent int // in effect afterwards
	}{
		{"unset", nil, "50", defaultGCPercent},
		{"set by the operator", map[string]string{"GOGC": "200"}, "200", 100}, // the runtime applied it at start, not this test
		{"off", map[string]string{"GOGC": "off"}, "off", 100},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			debug.SetGCPercent(100)
			got := setGCPercent(func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok })
			if p := debug.SetGCPercent(100); got != tc.want || p != tc.percent {
				t.Errorf("setGCPercent = %q with GC percent %d; want %q and %d", got, p, tc.want, tc.percent)
			}
		})
	}
}
