package kube

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/subnet"

	"github.com/flannel-go/flannel/pkg/klogtest"
)

// No credential appears in any log line at -v=10, where client-go logs every request: no
// kubeconfig, token file or exec plugin token, refused or not, no server URL password.
func TestIntegrationNoCredentialInLogs(t *testing.T) {
	k := apiserver(t)
	cs := adminClient(t, k)
	buf := klogtest.Capture(t, 10)
	dir := t.TempDir()
	token := k.API.AdminToken()
	writeFile(t, dir, "token", token+"\n", 0o600)
	execPlugin(t, dir, token)
	const refused, urlPassword = "refused-0123456789abcdef", "url-pw-0123456789"
	caData := "    certificate-authority-data: " + base64.StdEncoding.EncodeToString(k.API.CAPEM()) + "\n"
	withPassword := strings.Replace(k.API.URL(), "https://", "https://flanneld:"+urlPassword+"@", 1)
	tests := []struct {
		name, kubeconfig string
		refused          bool
	}{
		{"token", kubeconfig(t, dir, k.API.URL(), caData, "    token: "+token+"\n"), false},
		{"token file", kubeconfig(t, dir, k.API.URL(), caData, "    tokenFile: token\n"), false},
		{"exec plugin", kubeconfig(t, dir, k.API.URL(), caData, "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: ./bin/cred.sh\n      interactiveMode: Never\n"), false},
		{"refused token", kubeconfig(t, dir, k.API.URL(), caData, "    token: "+refused+"\n"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			own, peer := uniq(t, "own"), uniq(t, "peer")
			createNode(t, cs, own, []string{"10.244.60.0/24"}, nil)
			m, err := New(Config{KubeconfigFile: tt.kubeconfig, NodeName: own, NetConfigPath: writeNetConf(t, itNetConf), SetNodeNetworkUnavailable: true})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			cfg, err := m.GetNetworkConfig(ctx)
			if tt.refused {
				if err == nil || !strings.Contains(err.Error(), "Unauthorized") {
					t.Fatalf("GetNetworkConfig with a refused token: %v", err)
				}
				m.netCfg = &subnet.Config{EnableIPv4: true}
				wctx, wcancel := context.WithTimeout(ctx, 3*time.Second)
				defer wcancel()
				_ = m.WatchLeases(wctx, make(chan subnet.WatchResult, 1))
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			l, err := m.AcquireLease(ctx, cfg, vxlanAttrs("192.0.2.60", "0e:00:00:00:00:60"))
			if err != nil {
				t.Fatal(err)
			}
			out := make(chan subnet.WatchResult, 16)
			done := make(chan error, 2)
			go func() { done <- m.WatchLeases(ctx, out) }()
			go func() { done <- m.KeepLease(ctx, l) }()
			if r := watchNext(t, out); !r.IsSnapshot() {
				t.Fatalf("first result %+v", r)
			}
			createNode(t, cs, peer, []string{"10.244.61.0/24"}, peerAnn("192.0.2.61", "0e:00:00:00:00:61"))
			if ev := nextEvents(t, out, func(key string) bool { return key == "10.244.61.0-24" }); len(ev) != 1 {
				t.Fatalf("events %+v", ev)
			}
			waitCondition(t, cs, own)
			cancel()
			for range 2 {
				if err := <-done; err != nil {
					t.Error(err)
				}
			}
		})
	}
	// A server URL with a password is refused without quoting it.
	for _, kc := range []string{kubeconfig(t, dir, withPassword, caData, "    token: "+token+"\n"), ""} {
		_, err := New(Config{KubeconfigFile: kc, APIURL: map[bool]string{true: withPassword}[kc == ""], NodeName: "n"})
		if err == nil || !strings.Contains(err.Error(), "holds credentials") || strings.Contains(err.Error(), urlPassword) {
			t.Errorf("server URL with a password (kubeconfig %q): %v", kc, err)
		}
	}
	klog.Flush()
	logs := buf.String()
	for _, secret := range []string{token, refused, urlPassword} {
		for _, line := range strings.Split(logs, "\n") {
			if strings.Contains(line, secret) {
				t.Errorf("a log line holds a credential: %s", line)
			}
		}
	}
	// The logs did record the requests, headers included: the test saw what it checks.
	for _, want := range []string{"Authorization: Bearer <masked>", "/api/v1/nodes", "Response Body"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the -v=10 logs lack %q: not what client-go logs at -v=10?", want)
		}
	}
}
