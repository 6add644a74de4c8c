package logwarn

import (
	"errors"
	"strings"
	"testing"
	"time"

	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/pkg/klogtest"
)

func TestFormat(t *testing.T) {
	cases := []struct {
		msg  string
		kv   []any
		want string
	}{
		{"Plain", nil, `"Plain"`},
		{"Skipping peer lease", []any{"peer", "10.5.2.0-24", "n", 3, "ok", true},
			`"Skipping peer lease" peer="10.5.2.0-24" n=3 ok=true`},
		{"x", []any{"err", errors.New(`bad "y"`), "after", time.Second, "keys", []string{"VIN", "a -> b"}},
			`"x" err="bad \"y\"" after="1s" keys=["VIN","a -> b"]`},
		{"odd", []any{"k"}, `"odd" k="(MISSING)"`},
	}
	for _, c := range cases {
		if got := Format(c.msg, c.kv...); got != c.want {
			t.Errorf("got  %s\nwant %s", got, c.want)
		}
	}
}

func TestSWritesAWarningLine(t *testing.T) {
	buf := klogtest.Capture(t, 0)
	S("Something to know", "key", "v")
	klog.Flush()
	line := buf.String()
	if !strings.HasPrefix(line, "W") || !strings.Contains(line, `logwarn_test.go:`) ||
		!strings.HasSuffix(line, `] "Something to know" key="v"`+"\n") {
		t.Errorf("line %q", line)
	}
}
