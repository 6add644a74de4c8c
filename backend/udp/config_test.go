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
		{`{"Port":"x"}`, 0, `udp: Backend.Port must be a whole number, not the string "x"`},
		{`[`, 0, "udp: Backend must be a JSON object, not an array"},
		{`{"Port":`, 0, "udp: invalid Backend JSON"},
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

func TestCheckConfig(t *testing.T) {
	warns, err := CheckConfig([]byte(`{"Type":"udp","Prot":8285,"port":9000}`))
	if err != nil || len(warns) != 1 || warns[0].String() != `unknown key "Backend.Prot" (did you mean "Port"?)` {
		t.Errorf("got %v, %v", warns, err)
	}
	_, err = CheckConfig([]byte(`{"Type":"udp","Port":1.5}`))
	if err == nil || err.Error() != `udp: Backend.Port must be a whole number (no fraction or exponent), not the number 1.5` {
		t.Errorf("got %v", err)
	}
	if w, err := CheckConfig(nil); w != nil || err != nil {
		t.Errorf("no Backend: %v, %v", w, err)
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
