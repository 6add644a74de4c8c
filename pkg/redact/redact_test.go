package redact

import (
	"slices"
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	tests := []struct{ in, redacted, stripped string }{
		{"http://127.0.0.1:2379", "http://127.0.0.1:2379", "http://127.0.0.1:2379"},
		{"https://flannel:s3cret@etcd:2379", "https://xxxxx@etcd:2379", "https://etcd:2379"},
		{"https://token@etcd:2379/", "https://xxxxx@etcd:2379/", "https://etcd:2379/"},
		{"http://u:p@ss@h:1", "http://xxxxx@h:1", "http://h:1"}, // the last '@' ends it
		{"u:pw@host:2379", "xxxxx@host:2379", "host:2379"},
		{"https://h:1/a@b", "https://h:1/a@b", "https://h:1/a@b"}, // '@' in the path
		{"https://h:1?x=a@b", "https://h:1?x=a@b", "https://h:1?x=a@b"},
		{"unix:///run/etcd.sock", "unix:///run/etcd.sock", "unix:///run/etcd.sock"},
		{"", "", ""},
		{"@", "xxxxx@", ""},
	}
	for _, tt := range tests {
		if got := URL(tt.in); got != tt.redacted {
			t.Errorf("URL(%q) = %q, want %q", tt.in, got, tt.redacted)
		}
		got, had := StripUserinfo(tt.in)
		if got != tt.stripped || had != (tt.in != tt.stripped) {
			t.Errorf("StripUserinfo(%q) = %q %v, want %q", tt.in, got, had, tt.stripped)
		}
	}
	in := []string{"https://a:b@h:1", "http://h:2"}
	if got := URLs(in); !slices.Equal(got, []string{"https://xxxxx@h:1", "http://h:2"}) || in[0] != "https://a:b@h:1" {
		t.Errorf("URLs = %q (input now %q)", got, in)
	}
	if URLs(nil) != nil {
		t.Error("URLs(nil) is not nil")
	}
}

// No output depends on what the user information holds.
func FuzzURL(f *testing.F) {
	for _, s := range []string{"https://u:p@h:1", "u:p@h", "http://h:1/x@y", "a://b://c@d", "@@", "?@"} {
		f.Add(s, "s3cretpw")
	}
	f.Fuzz(func(t *testing.T, u, secret string) {
		if strings.ContainsAny(secret, "@/?#") || strings.Contains(secret, "://") {
			return
		}
		start, end, ok := userinfo(u)
		if ok && (start > end || end >= len(u) || u[end] != '@') {
			t.Fatalf("userinfo(%q) = %d, %d", u, start, end)
		}
		with := func(pw string) string {
			if ok {
				return u[:start] + "user:" + pw + u[end:]
			}
			if i := strings.Index(u, "://"); i >= 0 {
				return u[:i+3] + "user:" + pw + "@" + u[i+3:]
			}
			return "user:" + pw + "@" + u
		}
		a, b := with(secret), with("other")
		if URL(a) != URL(b) {
			t.Fatalf("URL depends on the password: %q -> %q, %q -> %q", a, URL(a), b, URL(b))
		}
		sa, hadA := StripUserinfo(a)
		sb, _ := StripUserinfo(b)
		if sa != sb || !hadA {
			t.Fatalf("StripUserinfo depends on the password: %q -> %q, %q -> %q", a, sa, b, sb)
		}
		if URL(URL(u)) != URL(u) {
			t.Fatalf("URL is not idempotent on %q", u)
		}
	})
}
