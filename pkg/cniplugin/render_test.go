package cniplugin

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flannel-go/flannel/pkg/subnetenv"
)

var update = flag.Bool("update", false, "rewrite the golden files of TestDelegateConfigGolden")

// Subnet files as flanneld writes them.
const (
	env4    = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
	env6    = "FLANNEL_IPV6_NETWORK=2001:db8:42::/56\nFLANNEL_IPV6_SUBNET=2001:db8:42:7::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=true\n"
	envDual = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\n" +
		"FLANNEL_IPV6_NETWORK=2001:db8:42::/56\nFLANNEL_IPV6_SUBNET=2001:db8:42:7::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n"
	envMulti = "FLANNEL_NETWORK=10.244.0.0/16,10.245.0.0/16,10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\n" +
		"FLANNEL_IPV6_NETWORK=2001:db8:42::/56,2001:db8:43::/56\nFLANNEL_IPV6_SUBNET=2001:db8:42:7::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
	envNoMasq = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
)

// The DaemonSet's conflist entry.
const confK8s = `{"cniVersion":"0.3.1","name":"cbr0","type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}}`

// TestDelegateConfigGolden compares the rendered config with testdata/delegate/<name>.json
// (go test -run Golden -update rewrites them); refusals must contain wantErr.
func TestDelegateConfigGolden(t *testing.T) {
	cases := []struct {
		name, conf, env string
		wantErr         string
	}{
		{name: "ipv4", conf: confK8s, env: env4},
		{name: "ipv6", conf: confK8s, env: env6},
		{name: "dualstack", conf: confK8s, env: envDual},
		{name: "multinetwork", conf: confK8s, env: envMulti},
		{name: "minimal", conf: `{"name":"cbr0","type":"flannel"}`, env: envNoMasq},
		{name: "cniversion-overrides-delegate", conf: `{"cniVersion":"1.1.0","name":"cbr0","type":"flannel","delegate":{"cniVersion":"0.3.0"}}`, env: env4},
		{name: "delegate-cniversion-kept-without-own", conf: `{"name":"cbr0","type":"flannel","delegate":{"cniVersion":"0.4.0"}}`, env: env4},
		{name: "override-ipmasq-mtu", conf: `{"cniVersion":"1.0.0","name":"cbr0","type":"flannel","delegate":{"ipMasq":true,"mtu":1400}}`, env: env4},
		{name: "override-isgateway", conf: `{"cniVersion":"1.0.0","name":"cbr0","type":"flannel","delegate":{"isGateway":false,"bridge":"kube-bridge"}}`, env: env4},
		{name: "override-type-ptp", conf: `{"cniVersion":"1.0.0","name":"cbr0","type":"flannel","delegate":{"type":"ptp"}}`, env: env4},
		{name: "explicit-bridge", conf: `{"cniVersion":"1.0.0","name":"cbr0","type":"flannel","delegate":{"type":"bridge","forceAddress":true}}`, env: env4},
		{name: "delegate-numbers", conf: `{"cniVersion":"1.0.0","name":"cbr0","type":"flannel","delegate":{"vlan":100,"custom":{"ratio":0.5,"big":1e21,"list":[1,"a",null]}}}`, env: env4},
		{name: "ipam-merged", conf: `{"cniVersion":"1.0.0","name":"cbr0","type":"flannel","ipam":{"dataDir":"/var/lib/cni/other","ranges":[[{"subnet":"192.0.2.0/24"}]],"resolvConf":"/etc/resolv.conf"}}`, env: envDual},
		{name: "ipam-type", conf: `{"cniVersion":"1.0.0","name":"cbr0","type":"flannel","ipam":{"type":"static"}}`, env: env4},
		{name: "ipam-routes", conf: `{"cniVersion":"1.0.0","name":"cbr0","type":"flannel","ipam":{"routes":[{"dst":"0.0.0.0/0"},{"dst":"192.0.2.0/24","gw":"10.244.3.1","mtu":1300,"ignored":1},{"dst":"::/0"}]}}`, env: envDual},
		{name: "ipam-routes-null", conf: `{"cniVersion":"1.0.0","name":"cbr0","type":"flannel","ipam":{"routes":null}}`, env: env4},
		{name: "runtimeconfig", conf: `{"cniVersion":"1.0.0","name":"cbr0","type":"flannel","delegate":{"runtimeConfig":{"old":true}},"runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}}`, env: env4},
		{name: "html-escaping", conf: `{"cniVersion":"1.0.0","name":"cbr0","type":"flannel","delegate":{"note":"a<b>&c"}}`, env: env4},

		{name: "refuse-type-not-string", conf: `{"name":"cbr0","type":"flannel","delegate":{"type":1}}`, env: env4,
			wantErr: "'delegate' dictionary, if present, must have (string) 'type' field"},
		{name: "refuse-type-null", conf: `{"name":"cbr0","type":"flannel","delegate":{"type":null}}`, env: env4,
			wantErr: "'delegate' dictionary, if present, must have (string) 'type' field"},
		{name: "refuse-type-empty", conf: `{"name":"cbr0","type":"flannel","delegate":{"type":""}}`, env: env4,
			wantErr: "'delegate' dictionary, if present, must have (string) 'type' field"},
		{name: "refuse-name", conf: `{"name":"cbr0","type":"flannel","delegate":{"name":"x"}}`, env: env4,
			wantErr: "'delegate' dictionary must not have 'name' field, it'll be set by flannel"},
		{name: "refuse-ipam", conf: `{"name":"cbr0","type":"flannel","delegate":{"ipam":{"type":"host-local"}}}`, env: env4,
			wantErr: "'delegate' dictionary must not have 'ipam' field, it'll be set by flannel"},
		{name: "refuse-self", conf: `{"name":"cbr0","type":"flannel","delegate":{"type":"flannel"}}`, env: env4,
			wantErr: `must not have 'type' "flannel"`},
		{name: "refuse-routes-object", conf: `{"name":"cbr0","type":"flannel","ipam":{"routes":{"dst":"0.0.0.0/0"}}}`, env: env4,
			wantErr: "failed to parse ipam.routes"},
		{name: "refuse-route-dst", conf: `{"name":"cbr0","type":"flannel","ipam":{"routes":[{"dst":"10.0.0.0"}]}}`, env: env4,
			wantErr: "failed to parse ipam.routes: invalid CIDR address: 10.0.0.0"},
		{name: "refuse-route-dst-type", conf: `{"name":"cbr0","type":"flannel","ipam":{"routes":[{"dst":5}]}}`, env: env4,
			wantErr: `failed to parse ipam.routes: field "dst" must be a string, not a number`},
		{name: "refuse-delegate-not-object", conf: `{"name":"cbr0","type":"flannel","delegate":"bridge"}`, env: env4,
			wantErr: `failed to load netconf: field "delegate" must be an object, not a string`},
		{name: "refuse-ipam-not-object", conf: `{"name":"cbr0","type":"flannel","ipam":[]}`, env: env4,
			wantErr: `failed to load netconf: field "ipam" must be an object, not an array`},
		{name: "refuse-subnetfile-type", conf: `{"name":"cbr0","type":"flannel","subnetFile":5}`, env: env4,
			wantErr: `failed to load netconf: field "subnetFile" must be a string, not a number`},
	}
	seen := map[string]bool{}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if seen[c.name] {
				t.Fatalf("duplicate case name")
			}
			seen[c.name] = true
			env, err := subnetenv.ParseContents([]byte(c.env))
			if err != nil {
				t.Fatalf("subnet file: %v", err)
			}
			var got []byte
			nc, err := ParseNetConf([]byte(c.conf))
			if err == nil {
				got, err = DelegateConfig(nc, env)
			}
			golden := filepath.Join("testdata", "delegate", c.name+".json")
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, c.wantErr)
				}
				if _, err := os.Stat(golden); err == nil {
					t.Errorf("%s exists for a refusal", golden)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *update {
				if err := os.WriteFile(golden, append(got, '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(append(got, '\n'), want) {
				t.Errorf("delegate config\n got %s\nwant %s", got, bytes.TrimSpace(want))
			}
			if typ, err := ParseSaved(got); err != nil || typ == "" {
				t.Errorf("the rendered config does not read back as a saved config: %q %v", typ, err)
			}
		})
	}
	// No golden file without a case.
	files, _ := filepath.Glob(filepath.Join("testdata", "delegate", "*.json"))
	for _, f := range files {
		if !seen[strings.TrimSuffix(filepath.Base(f), ".json")] {
			t.Errorf("%s has no case", f)
		}
	}
}

// Rendering leaves the NetConf's maps alone: twice gives the same bytes.
func TestDelegateConfigLeavesNetConfAlone(t *testing.T) {
	nc, err := ParseNetConf([]byte(`{"cniVersion":"1.0.0","name":"cbr0","type":"flannel","delegate":{"hairpinMode":true},"ipam":{"routes":[{"dst":"0.0.0.0/0"}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	env, err := subnetenv.ParseContents([]byte(env4))
	if err != nil {
		t.Fatal(err)
	}
	a, err := DelegateConfig(nc, env)
	if err != nil {
		t.Fatal(err)
	}
	b, err := DelegateConfig(nc, env)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatalf("second rendering differs:\n%s\n%s", a, b)
	}
	if len(nc.Delegate) != 1 || len(nc.IPAM) != 1 {
		t.Fatalf("NetConf changed: delegate %v ipam %v", nc.Delegate, nc.IPAM)
	}
}
