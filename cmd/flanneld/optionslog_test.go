package main

import (
	"encoding/json"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/pkg/klogtest"
)

var update = flag.Bool("update", false, "rewrite the golden files of TestStartLineGolden")

// startLine returns the text of the line logStart writes for opts, after klog's header.
func startLine(t *testing.T, opts Options) string {
	t.Helper()
	buf := klogtest.Capture(t, 0)
	logStart("v0.0.0-test", opts, 50)
	klog.Flush()
	line := strings.TrimSuffix(buf.String(), "\n")
	_, text, ok := strings.Cut(line, "] ")
	if !ok || strings.Contains(text, "\n") {
		t.Fatalf("not one klog line: %q", buf.String())
	}
	if !strings.HasPrefix(line, "I") || !strings.Contains(line, " optionslog_test.go:") {
		t.Errorf("line %q: want an Info line attributed to the caller of logStart", line)
	}
	return text
}

// The start line, byte for byte, for typical command lines (testdata/startline-*.golden;
// go test -run Golden -update rewrites them): durations in Go's notation, secrets
// masked, every option named as in Options.
func TestStartLineGolden(t *testing.T) {
	resetKlog(t)
	cases := []struct {
		name string
		args []string
		env  map[string]string
	}{
		{name: "defaults"},
		{name: "etcd", args: []string{"-etcd-endpoints=https://flannel:s3cr3t-url@192.0.2.254:2379,https://192.0.2.253:2379", "-etcd-prefix=/lab/network",
			"-etcd-cafile=/etc/flannel/ca.pem", "-etcd-certfile=/etc/flannel/client.pem", "-etcd-keyfile=/etc/flannel/client-key.pem",
			"-etcd-username=flannel", "-iface=eth0", "-iface-regex=^192\\.0\\.2\\.", "-ip-masq", "-subnet-lease-renew-margin=30", "-iptables-resync=10"},
			env: map[string]string{"FLANNELD_ETCD_PASSWORD": "s3cr3t-pw", "FLANNELD_HEALTHZ_PORT": "8081"}},
		{name: "kube", args: []string{"--kube-subnet-mgr", "--kubeconfig-file=/etc/kubernetes/flannel.conf", "--ip-masq",
			"--healthz-port=8081", "--kube-exec-plugin-allowlist=aws-iam-authenticator"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts, err := parseOptions(c.args, envFrom(c.env), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			got := startLine(t, opts) + "\n"
			for _, secret := range []string{"s3cr3t-pw", "s3cr3t-url"} {
				if strings.Contains(got, secret) {
					t.Errorf("the start line holds a secret: %s", got)
				}
			}
			if strings.Contains(got, "000000000") {
				t.Errorf("a duration in nanoseconds: %s", got)
			}
			path := filepath.Join("testdata", "startline-"+c.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (go test -run Golden -update creates it)", err)
			}
			if got != string(want) {
				t.Errorf("start line\n got: %s\nwant: %s", got, want)
			}
		})
	}
}

// Options logged any other way (klog calls MarshalLog) are just as safe, and valid JSON.
func TestOptionsMarshalLog(t *testing.T) {
	opts := wantDefaults()
	opts.EtcdPassword = "s3cr3t-pw"
	var m0 interface{ MarshalLog() any } = opts // logr.Marshaler, which klog looks for
	b, err := json.Marshal(m0.MarshalLog())
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	if m["EtcdPassword"] == "s3cr3t-pw" || m["SubnetLeaseRenewMargin"] != "1h0m0s" || m["IPTablesResync"] != "5s" {
		t.Errorf("logged options %s", b)
	}
}
