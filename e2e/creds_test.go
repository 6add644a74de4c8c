package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-go/flannel/e2e/lab"
)

// enableEtcdAuth gives etcd a root user and a user "flannel" with password pw, allowed
// to read and write under prefix, and turns authentication on. cli stops working then.
func enableEtcdAuth(t *testing.T, cli *clientv3.Client, prefix, pw string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	steps := []func() error{
		func() error { _, err := cli.UserAdd(ctx, "root", "root-pw-not-flannels"); return err },
		func() error { _, _ = cli.RoleAdd(ctx, "root"); return nil }, // may exist already
		func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := cli.RoleAdd(ctx, "flannel"); return err },
		func() error {
			_, err := cli.RoleGrantPermission(ctx, "flannel", prefix+"/", clientv3.GetPrefixRangeEnd(prefix+"/"), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := cli.UserAdd(ctx, "flannel", pw); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "flannel", "flannel"); return err },
		func() error { _, err := cli.AuthEnable(ctx); return err },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("etcd auth step %d: %v", i, err)
		}
	}
}

// No secret reaches a log line, an error, /readyz, /metrics or the control socket: the
// etcd password (flag or FLANNELD_ETCD_PASSWORD), the user information of an endpoint,
// a wrong password, a password in --kube-api-url, and the client key's contents. The
// daemons run at -v=10 against an etcd with TLS and authentication, through an outage
// (the readiness texts then embed datastore errors).
func TestNoSecretInOutput(t *testing.T) {
	l := newLab(t, "creds", 2, func(o *lab.Options) { o.NoEtcd = true })
	pki := newLabPKI(t)
	e := startTLSEtcd(t, l, pki, 2479, false)
	const (
		pwSecret    = "pw-S3cret-0a1b2c3d"
		urlSecret   = "url-S3cret-4e5f6a7b"
		wrongSecret = "wrong-S3cret-8c9d0e1f"
		kubeSecret  = "kube-S3cret-2a3b4c5d"
	)
	key, err := os.ReadFile(pki.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{pwSecret, urlSecret, wrongSecret, kubeSecret}
	for _, line := range strings.Split(string(key), "\n") {
		if line != "" && !strings.HasPrefix(line, "-----") {
			for i := 0; i+16 <= len(line); i += 16 {
				secrets = append(secrets, line[i:i+16]) // any piece of the key
			}
		}
	}
	e.put(t, l.EtcdPrefix()+"/config", vxlanConfig)
	enableEtcdAuth(t, e.cli, l.EtcdPrefix(), pwSecret)

	endpoint := strings.Replace(e.endpoint, "https://", "https://flannel:"+urlSecret+"@", 1)
	common := []string{"--etcd-endpoints=" + endpoint, "--etcd-cafile=" + pki.CA, "--etcd-certfile=" + pki.ClientCert,
		"--etcd-keyfile=" + pki.ClientKey, "--etcd-username=flannel", fmt.Sprintf("--healthz-port=%d", healthzPort), "-v=10"}
	if err := l.StartFlanneld(1, append(common, "--etcd-password="+pwSecret)...); err != nil {
		t.Fatal(err)
	}
	if err := l.StartFlanneldEnv(2, []string{"FLANNELD_ETCD_PASSWORD=" + pwSecret}, common...); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		if _, err := l.WaitSubnetEnv(i, startTimeout); err != nil {
			t.Fatal(err)
		}
	}
	nodes := infos(t, l, "flannel.1")
	waitFullMesh(t, l, "flannel.1", nodes)

	var shown []string // everything the daemons showed, besides their logs
	get := func(i int, path string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		code, body, err := lab.HTTPGet(ctx, l.NodeNS(i), fmt.Sprintf("http://127.0.0.1:%d%s", healthzPort, path))
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%s %d\n%s", path, code, body)
	}
	for i := 1; i <= 2; i++ {
		shown = append(shown, waitReadyz(t, l, i, "?verbose", 200), get(i, "/metrics"))
		out, err := helperCmd(l.NodeNS(i), helperQuery, etcdPrefixKey(l.EtcdPrefix()), false).Output()
		if err != nil || !strings.Contains(string(out), `"phase":"running"`) {
			t.Fatalf("node %d control status: %v\n%s", i, err, out)
		}
		shown = append(shown, string(out))
	}

	// etcd goes away: the readiness texts carry the datastore's errors.
	e.proc.Kill()
	body := waitReadyz(t, l, 1, "?verbose", 503, "lease-watch", e.endpoint)
	shown = append(shown, body, get(1, "/metrics"))
	t.Logf("node 1 during the outage:\n%s", body)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := e.proc.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		waitReadyz(t, l, i, "", 200)
	}

	// A wrong password (another network, so no lock is shared) is retried and reported.
	wrong := append(l.FlanneldCommand(1, common...), "--etcd-password="+wrongSecret, "--healthz-port=0",
		"--etcd-prefix=/fg-wrong/network", "--subnet-file="+filepath.Join(l.NodeDir(1), "wrong.env"))
	code, out := runFlanneldOnce(t, wrong, 20*time.Second)
	if code != -1 || !strings.Contains(out, "authentication failed") {
		t.Errorf("a wrong password: exit %d (want still retrying), output:\n%s", code, out)
	}
	shown = append(shown, out)
	// A password in the API server's URL is refused without being shown.
	kube := l.FlanneldCommand(1, "-v=10", "--kube-subnet-mgr", "--kube-api-url=https://admin:"+kubeSecret+"@192.0.2.254:6443",
		"--subnet-file="+filepath.Join(l.NodeDir(1), "kube.env"))
	code, out = runFlanneldOnce(t, kube, 60*time.Second, "NODE_NAME=n1")
	if code != 1 || !strings.Contains(out, "holds credentials") || !strings.Contains(out, "https://xxxxx@192.0.2.254:6443") {
		t.Errorf("a kube URL with a password: exit %d, output:\n%s", code, out)
	}
	shown = append(shown, out)

	for i := 1; i <= 2; i++ {
		b, err := os.ReadFile(l.LogPath(i))
		if err != nil {
			t.Fatal(err)
		}
		log := string(b)
		// The logs are what they should be: the options line, with the masks.
		for _, want := range []string{`"https://xxxxx@192.0.2.254:2479"`, `"EtcdPassword":"<redacted>"`, "User information in an etcd endpoint URL is ignored"} {
			if !strings.Contains(log, want) {
				t.Errorf("node %d's log lacks %q", i, want)
			}
		}
		// The lab's header lines quote the command lines, which hold the secrets: they
		// show that the search below finds what it looks for, and are left out of it.
		if !strings.Contains(log, urlSecret) {
			t.Errorf("node %d's log has no command line holding the endpoint's password", i)
		}
		shown = append(shown, strings.Join(withoutLabHeaders(log), "\n"))
	}
	all := strings.Join(shown, "\n")
	for _, s := range secrets {
		for _, line := range strings.Split(all, "\n") {
			if strings.Contains(line, s) {
				t.Errorf("secret %q shown: %s", s, line)
			}
		}
	}
}

// withoutLabHeaders drops the lab's own lines from a flanneld log (they quote the
// command line, which holds what the test passed).
func withoutLabHeaders(log string) []string {
	var out []string
	for _, line := range strings.Split(log, "\n") {
		if !strings.HasPrefix(line, "===== lab: ") {
			out = append(out, line)
		}
	}
	return out
}

// With --healthz-ip=127.0.0.1 the endpoints answer on the node's loopback, where a probe
// from the node's own network namespace (the kubelet's, shared by a hostNetwork pod)
// reaches them, and nowhere else.
func TestHealthzOnLoopback(t *testing.T) {
	l := newLab(t, "hzlo", 2)
	startAll(t, l, vxlanConfig, "--healthz-ip=127.0.0.1", fmt.Sprintf("--healthz-port=%d", healthzPort))
	waitReadyz(t, l, 1, "", 200)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if code, body, err := lab.HTTPGet(ctx, l.NodeNS(1), fmt.Sprintf("http://127.0.0.1:%d/metrics", healthzPort)); err != nil || code != 200 || !strings.Contains(body, "flannel_peer_leases") {
		t.Errorf("/metrics on 127.0.0.1: %d %v", code, err)
	}
	for _, from := range []int{1, 2} {
		url := fmt.Sprintf("http://%s:%d/healthz", l.NodeIP(1), healthzPort)
		if code, _, err := lab.HTTPGet(ctx, l.NodeNS(from), url); err == nil {
			t.Errorf("%s answered %d from node %d", url, code, from)
		}
	}
}
