package forwarding

import (
	"os"
	"slices"
	"testing"
)

func TestRead(t *testing.T) {
	read := func(kv map[string]string) func(string) (string, error) {
		return func(name string) (string, error) {
			v, ok := kv[name]
			if !ok {
				return "", os.ErrNotExist
			}
			return v, nil
		}
	}
	cases := []struct {
		name       string
		ipv4, ipv6 bool
		kv         map[string]string
		want       []string // name=value, "!" for an error, "off" appended when Off
	}{
		{"IPv4 on", true, false, map[string]string{IPv4: "1\n", IPv6: "0\n"}, []string{IPv4 + "=1"}},
		{"IPv4 off", true, false, map[string]string{IPv4: "0\n"}, []string{IPv4 + "=0 off"}},
		{"IPv6 only", false, true, map[string]string{IPv4: "0\n", IPv6: "0\n"}, []string{IPv6 + "=0 off"}},
		{"dual, both off", true, true, map[string]string{IPv4: "0\n", IPv6: "0\n"}, []string{IPv4 + "=0 off", IPv6 + "=0 off"}},
		{"IPv6 unreadable", true, true, map[string]string{IPv4: "1\n"}, []string{IPv4 + "=1", IPv6 + "!"}},
		{"neither family", false, false, map[string]string{IPv4: "0"}, nil},
	}
	for _, c := range cases {
		var got []string
		for _, s := range Read(c.ipv4, c.ipv6, read(c.kv)) {
			g := s.Name + "=" + s.Value
			if s.Err != nil {
				g = s.Name + "!"
			}
			if s.Off() {
				g += " off"
			}
			got = append(got, g)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

func TestSysctl(t *testing.T) {
	if _, err := os.Stat("/proc/sys/net/ipv4/ip_forward"); err != nil {
		t.Skipf("no /proc/sys here: %v", err)
	}
	if v, err := Sysctl(IPv4); err != nil || (v != "0\n" && v != "1\n") {
		t.Errorf("Sysctl(%s) = %q, %v", IPv4, v, err)
	}
	for _, bad := range []string{"", "../../etc/passwd", "net/ipv4/ip_forward"} {
		if _, err := Sysctl(bad); err == nil {
			t.Errorf("Sysctl(%q) read something", bad)
		}
	}
}
