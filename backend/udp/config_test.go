package udp

import (
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		raw     string
		port    int
		wantErr string
	}{
		{"", 8285, ""},
		{`{"Type":"udp"}`, 8285, ""},
		{`{"Type":"udp","Port":9000}`, 9000, ""},
		{`{"type":"udp","port":9001,"Other":true}`, 9001, ""},
		{`{"Port":0}`, 8285, ""},
		{`{"Port":70000}`, 0, "out of range"},
		{`{"Port":-1}`, 0, "out of range"},
		{`{"Port":"x"}`, 0, "error decoding UDP backend config"},
		{`[`, 0, "error decoding UDP backend config"},
	}
	for _, tc := range tests {
		c, err := parseConfig([]byte(tc.raw))
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: err %v, want %q", tc.raw, err, tc.wantErr)
			}
			continue
		}
		if err != nil || c.Port != tc.port {
			t.Errorf("%q: %+v, %v; want port %d", tc.raw, c, err, tc.port)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"Type":"udp","Port":8285}`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := parseConfig(raw)
		if err == nil && (c.Port < 1 || c.Port > 65535) {
			t.Fatalf("accepted port %d", c.Port)
		}
	})
}
