package main

import (
	"runtime/debug"
	"testing"
)

// A GOGC set by the operator is left as the runtime applied it (here: the percentage the
// test sets beforehand); unset or empty, the daemon's default applies.
func TestSetGCPercent(t *testing.T) {
	orig := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(orig) })
	tests := []struct {
		name    string
		env     map[string]string
		runtime int // what the runtime applied from the environment
		want    int
	}{
		{"unset", nil, 100, defaultGCPercent},
		{"empty", map[string]string{"GOGC": ""}, 100, defaultGCPercent},
		{"set by the operator", map[string]string{"GOGC": "200"}, 200, 200},
		{"off", map[string]string{"GOGC": "off"}, -1, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			debug.SetGCPercent(tc.runtime)
			got := setGCPercent(func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok })
			if p := debug.SetGCPercent(100); got != tc.want || p != tc.want {
				t.Errorf("setGCPercent = %d with the GC percent at %d; want %d", got, p, tc.want)
			}
		})
	}
}
