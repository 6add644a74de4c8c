package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"k8s.io/klog/v2"
)

// wantDefaults are upstream's defaults and flannel-go's own, written out independently of
// options.go.
func wantDefaults() Options {
	return Options{
		EtcdEndpoints:             []string{"http://127.0.0.1:4001", "http://127.0.0.1:2379"},
		EtcdPrefix:                "/coreos.com/network",
		SubnetFile:                "/run/flannel/subnet.env",
		SubnetLeaseRenewMargin:    60 * time.Minute,
		KubeAnnotationPrefix:      "flannel.alpha.coreos.com",
		HealthzIP:                 "0.0.0.0",
		IPTablesResync:            5 * time.Second,
		IPTablesForwardRules:      true,
		NetConfigPath:             "/etc/kube-flannel/net-conf.json",
		SetNodeNetworkUnavailable: true,
		TimerSlack:                time.Millisecond,
	}
}

func envFrom(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// klogValue reads one of klog's global flag values through a throwaway Go flag set.
func klogValue(t *testing.T, name string) string {
	t.Helper()
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	klog.InitFlags(fs)
	f := fs.Lookup(name)
	if f == nil {
		t.Fatalf("klog has no flag %q", name)
	}
	v := f.Value.String()
	if name == "log_backtrace_at" && v == ":0" {
		return "" // how klog prints an unset location
	}
	return v
}

// resetKlog puts klog's verbosity flags back to the defaults after a test changed them.
func resetKlog(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		if _, err := parseOptions(nil, nil, io.Discard); err != nil {
			t.Errorf("resetting klog: %v", err)
		}
	})
}

func TestParseOptions(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want func(o *Options) // edits wantDefaults() into the expected result
	}{
		{name: "no arguments gives upstream defaults", want: func(*Options) {}},
		{
			name: "double-dash etcd endpoints split on comma",
			args: []string{"--etcd-endpoints=http://192.0.2.1:2379,http://192.0.2.2:2379"},
			want: func(o *Options) {
				o.EtcdEndpoints = []string{"http://192.0.2.1:2379", "http://192.0.2.2:2379"}
			},
		},
		{
			name: "single-dash etcd endpoints with separate value",
			args: []string{"-etcd-endpoints", "http://192.0.2.1:2379"},
			want: func(o *Options) { o.EtcdEndpoints = []string{"http://192.0.2.1:2379"} },
		},
		{
			name: "endpoint list tolerates spaces and empty items",
			args: []string{"--etcd-endpoints= http://192.0.2.1:2379 ,,http://192.0.2.2:2379,"},
			want: func(o *Options) {
				o.EtcdEndpoints = []string{"http://192.0.2.1:2379", "http://192.0.2.2:2379"}
			},
		},
		{
			name: "every string flag in both dash forms",
			args: []string{
				"-etcd-prefix=/p", "--etcd-keyfile", "/k", "-etcd-certfile", "/c", "--etcd-cafile=/ca",
				"-etcd-username=u", "--etcd-password=pw", "-iface-can-reach=192.0.2.9", "--subnet-file", "/s.env",
				"-public-ip", "192.0.2.1", "--public-ipv6=2001:db8::1", "-kube-api-url=https://k", "--kube-annotation-prefix=x.io",
				"-kubeconfig-file=/kc", "--healthz-ip=127.0.0.1", "-healthz-port", "8081", "-net-config-path=/n.json",
			},
			want: func(o *Options) {
				o.EtcdPrefix, o.EtcdKeyfile, o.EtcdCertfile, o.EtcdCAFile = "/p", "/k", "/c", "/ca"
				o.EtcdUsername, o.EtcdPassword, o.IfaceCanReach, o.SubnetFile = "u", "pw", "192.0.2.9", "/s.env"
				o.PublicIP, o.PublicIPv6, o.KubeAPIURL, o.KubeAnnotationPrefix = "192.0.2.1", "2001:db8::1", "https://k", "x.io"
				o.KubeConfigFile, o.HealthzIP, o.HealthzPort, o.NetConfigPath = "/kc", "127.0.0.1", 8081, "/n.json"
			},
		},
		{
			name: "iface and iface-regex repeat and are not split on commas",
			args: []string{"--iface=eth0", "-iface", "192.0.2.5", "--iface=a,b", "-iface-regex=^eth[0-9]+$", "--iface-regex", "192\\.0\\.2\\.(1|2)"},
			want: func(o *Options) {
				o.Iface = []string{"eth0", "192.0.2.5", "a,b"}
				o.IfaceRegex = []string{"^eth[0-9]+$", "192\\.0\\.2\\.(1|2)"}
			},
		},
		{
			name: "bool flags: bare, =true, =false, single dash",
			args: []string{"--ip-masq", "-iptables-forward-rules=false", "--set-node-network-unavailable=false", "-kube-subnet-mgr=false"},
			want: func(o *Options) {
				o.IPMasq, o.IPTablesForwardRules, o.SetNodeNetworkUnavailable = true, false, false
			},
		},
		{
			name: "bool flag accepts strconv spellings",
			args: []string{"-ip-masq=1", "--iptables-forward-rules=F"},
			want: func(o *Options) { o.IPMasq, o.IPTablesForwardRules = true, false },
		},
		{
			name: "renew margin is minutes",
			args: []string{"-subnet-lease-renew-margin=1439"},
			want: func(o *Options) { o.SubnetLeaseRenewMargin = 1439 * time.Minute },
		},
		{
			name: "renew margin lower bound",
			args: []string{"--subnet-lease-renew-margin", "1"},
			want: func(o *Options) { o.SubnetLeaseRenewMargin = time.Minute },
		},
		{
			name: "traffic-rule flags",
			args: []string{"--ip-masq-fully-random-disable", "--ip-blackhole-route=true", "--iptables-resync=10", "--iptables-forward-rules=false"},
			want: func(o *Options) {
				o.IPMasqFullyRandomDisable, o.IPBlackholeRoute, o.IPTablesResync, o.IPTablesForwardRules = true, true, 10*time.Second, false
			},
		},
		{
			name: "default-valued later-work flags are accepted",
			args: []string{"--kube-subnet-mgr=false", "--ip-blackhole-route=false", "--ip-masq-fully-random-disable=false", "--iptables-resync=5"},
			want: func(*Options) {},
		},
		{
			name: "a flag value that looks like a flag is still the value",
			args: []string{"--etcd-password", "-secret", "--etcd-prefix", "--x"},
			want: func(o *Options) { o.EtcdPassword, o.EtcdPrefix = "-secret", "--x" },
		},
		{
			name: "double dash with nothing after ends flags",
			args: []string{"--ip-masq", "--"},
			want: func(o *Options) { o.IPMasq = true },
		},
		{
			name: "environment fills flags not given",
			env: map[string]string{
				"FLANNELD_ETCD_ENDPOINTS":            "http://192.0.2.1:2379,http://192.0.2.3:2379",
				"FLANNELD_IP_MASQ":                   "true",
				"FLANNELD_IFACE":                     "eth1,eth2",
				"FLANNELD_IFACE_REGEX":               "^en",
				"FLANNELD_SUBNET_LEASE_RENEW_MARGIN": "30",
				"FLANNELD_HEALTHZ_PORT":              "9000",
				"FLANNELD_IPTABLES_FORWARD_RULES":    "false",
				"FLANNELD_PUBLIC_IPV6":               "2001:db8::7",
				"FLANNELD_KUBE_API_URL":              "https://api",
				"FLANNELD_IPTABLES_RESYNC":           "5",
			},
			want: func(o *Options) {
				o.EtcdEndpoints = []string{"http://192.0.2.1:2379", "http://192.0.2.3:2379"}
				o.IPMasq = true
				o.Iface = []string{"eth1,eth2"} // exactly one value from env
				o.IfaceRegex = []string{"^en"}
				o.SubnetLeaseRenewMargin = 30 * time.Minute
				o.HealthzPort = 9000
				o.IPTablesForwardRules = false
				o.PublicIPv6 = "2001:db8::7"
				o.KubeAPIURL = "https://api"
			},
		},
		{
			name: "command line wins over environment",
			args: []string{"--etcd-prefix=/cli", "-iface=eth9", "--ip-masq=false", "-healthz-port=1"},
			env: map[string]string{
				"FLANNELD_ETCD_PREFIX":  "/env",
				"FLANNELD_IFACE":        "eth0",
				"FLANNELD_IP_MASQ":      "true",
				"FLANNELD_HEALTHZ_PORT": "abc", // not consulted: the flag was given
				"FLANNELD_SUBNET_FILE":  "/env.env",
			},
			want: func(o *Options) {
				o.EtcdPrefix, o.Iface, o.HealthzPort, o.SubnetFile = "/cli", []string{"eth9"}, 1, "/env.env"
			},
		},
		{
			name: "empty environment values are ignored",
			env:  map[string]string{"FLANNELD_ETCD_PREFIX": "", "FLANNELD_SUBNET_LEASE_RENEW_MARGIN": "", "FLANNELD_IFACE": ""},
			want: func(*Options) {},
		},
		{
			name: "unrelated variables are ignored",
			env:  map[string]string{"ETCD_PREFIX": "/x", "FLANNELD_BOGUS": "1", "flanneld_etcd_prefix": "/y"},
			want: func(*Options) {},
		},
		{
			name: "FLANNELD_VERSION is not consulted",
			env:  map[string]string{"FLANNELD_VERSION": "true"},
			want: func(*Options) {},
		},
		{
			name: "kube-only flags are accepted in etcd mode",
			args: []string{"--kubeconfig-file=/k", "--set-node-network-unavailable=false", "--kube-annotation-prefix=a.b"},
			want: func(o *Options) {
				o.KubeConfigFile, o.SetNodeNetworkUnavailable, o.KubeAnnotationPrefix = "/k", false, "a.b"
			},
		},
		{
			name: "kube mode with its flags",
			args: []string{"--kube-subnet-mgr", "--kube-api-url=https://192.0.2.253:6443", "--kubeconfig-file=/kc",
				"--kube-annotation-prefix=example.com/team", "--net-config-path=/etc/n.json", "--set-node-network-unavailable=false"},
			want: func(o *Options) {
				o.KubeSubnetMgr, o.KubeAPIURL, o.KubeConfigFile = true, "https://192.0.2.253:6443", "/kc"
				o.KubeAnnotationPrefix, o.NetConfigPath, o.SetNodeNetworkUnavailable = "example.com/team", "/etc/n.json", false
			},
		},
		{
			name: "kube mode from env",
			env:  map[string]string{"FLANNELD_KUBE_SUBNET_MGR": "true", "FLANNELD_KUBECONFIG_FILE": "/kc"},
			want: func(o *Options) { o.KubeSubnetMgr, o.KubeConfigFile = true, "/kc" },
		},
		{
			name: "exec plugin allowlist: comma-separated, repeatable, or from env",
			args: []string{"--kube-exec-plugin-allowlist=aws-iam-authenticator,/usr/bin/gke-auth", "--kube-exec-plugin-allowlist=kubelogin"},
			want: func(o *Options) {
				o.KubeExecPluginAllowlist = []string{"aws-iam-authenticator", "/usr/bin/gke-auth", "kubelogin"}
			},
		},
		{
			name: "exec plugin allowlist from env",
			env:  map[string]string{"FLANNELD_KUBE_EXEC_PLUGIN_ALLOWLIST": "a,b"},
			want: func(o *Options) { o.KubeExecPluginAllowlist = []string{"a", "b"} },
		},
		{
			name: "healthz ip may be IPv6, healthz port bounds",
			args: []string{"--healthz-ip=::1", "--healthz-port=65535"},
			want: func(o *Options) { o.HealthzIP, o.HealthzPort = "::1", 65535 },
		},
		{
			name: "timer slack 0 keeps the inherited one",
			args: []string{"--timer-slack=0"},
			want: func(o *Options) { o.TimerSlack = 0 },
		},
		{
			name: "timer slack from env",
			env:  map[string]string{"FLANNELD_TIMER_SLACK": "250us"},
			want: func(o *Options) { o.TimerSlack = 250 * time.Microsecond },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var errOut bytes.Buffer
			got, err := parseOptions(tc.args, envFrom(tc.env), &errOut)
			if err != nil {
				t.Fatalf("parseOptions(%q): unexpected error: %v", tc.args, err)
			}
			want := wantDefaults()
			tc.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("parseOptions(%q)\n got: %+v\nwant: %+v", tc.args, got, want)
			}
			if errOut.Len() != 0 {
				t.Errorf("parseOptions wrote to stderr: %q", errOut.String())
			}
		})
	}
}

func TestParseOptionsErrors(t *testing.T) {
	resetKlog(t)
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantIs  error  // sentinel, if any
		wantErr string // substring of the one-line error otherwise
	}{
		{name: "long help", args: []string{"--help"}, wantIs: errHelp},
		{name: "single-dash help", args: []string{"-help"}, wantIs: errHelp},
		{name: "short help", args: []string{"-h"}, wantIs: errHelp},
		{name: "help after flags", args: []string{"--ip-masq", "--h"}, wantIs: errHelp},
		{name: "version", args: []string{"--version"}, wantIs: errVersion},
		{name: "single-dash version", args: []string{"-version"}, wantIs: errVersion},
		{name: "version wins over a bad env value", args: []string{"-version=true"}, env: map[string]string{"FLANNELD_HEALTHZ_PORT": "abc"}, wantIs: errVersion},
		{name: "version=false is no version", args: []string{"--version=false", "--bogus"}, wantErr: "unknown flag: --bogus"},
		{name: "unknown flag, double dash", args: []string{"--bogus-flag"}, wantErr: "unknown flag: --bogus-flag"},
		{name: "unknown flag, single dash", args: []string{"-bogus-flag"}, wantErr: "unknown flag: --bogus-flag"},
		{name: "unknown single letter", args: []string{"-x"}, wantErr: "unknown flag: --x"},
		{name: "triple dash", args: []string{"---ip-masq"}, wantErr: "bad flag syntax: ---ip-masq"},
		{name: "missing value", args: []string{"--etcd-prefix"}, wantErr: "flag needs an argument: --etcd-prefix"},
		{name: "bad int", args: []string{"--healthz-port=abc"}, wantErr: `invalid argument "abc" for "--healthz-port" flag`},
		{name: "bad bool", args: []string{"-ip-masq=maybe"}, wantErr: `invalid argument "maybe" for "--ip-masq" flag`},
		{name: "timer slack without unit", args: []string{"--timer-slack=5"}, wantErr: `invalid argument "5" for "--timer-slack" flag`},
		{name: "negative timer slack", args: []string{"--timer-slack=-1ms"}, wantErr: "invalid --timer-slack -1ms: must not be negative"},
		{name: "bool flag followed by its value", args: []string{"--ip-masq", "false", "--iface", "eth0"},
			wantErr: `unexpected argument "false": boolean flags take --ip-masq=false`},
		{name: "single-dash bool followed by value", args: []string{"-kube-subnet-mgr", "true"},
			wantErr: `unexpected argument "true": boolean flags take --kube-subnet-mgr=true`},
		{name: "stray positional", args: []string{"eth0"}, wantErr: `unexpected argument "eth0"`},
		{name: "stray positional after value", args: []string{"--iface", "eth0", "eth1"}, wantErr: `unexpected argument "eth1"`},
		{name: "lone dash", args: []string{"-"}, wantErr: `unexpected argument "-"`},
		{name: "words after --", args: []string{"--", "--iface=eth0"}, wantErr: `unexpected argument "--iface=eth0"`},
		{name: "bad env int names the variable", env: map[string]string{"FLANNELD_HEALTHZ_PORT": "abc"},
			wantErr: `invalid value "abc" for FLANNELD_HEALTHZ_PORT: `},
		{name: "bad env bool names the variable", env: map[string]string{"FLANNELD_IP_MASQ": "yes please"},
			wantErr: `invalid value "yes please" for FLANNELD_IP_MASQ: `},
		{name: "renew margin zero", args: []string{"--subnet-lease-renew-margin=0"},
			wantErr: "Invalid subnet-lease-renew-margin option, out of acceptable range"},
		{name: "renew margin 1440", args: []string{"-subnet-lease-renew-margin", "1440"},
			wantErr: "Invalid subnet-lease-renew-margin option, out of acceptable range"},
		{name: "renew margin negative", args: []string{"--subnet-lease-renew-margin=-5"},
			wantErr: "Invalid subnet-lease-renew-margin option, out of acceptable range"},
		{name: "renew margin from env", env: map[string]string{"FLANNELD_SUBNET_LEASE_RENEW_MARGIN": "2000"},
			wantErr: "Invalid subnet-lease-renew-margin option, out of acceptable range: 2000 (from FLANNELD_SUBNET_LEASE_RENEW_MARGIN)"},
		{name: "kube annotation prefix", args: []string{"--kube-subnet-mgr", "--kube-annotation-prefix=org"},
			wantErr: `invalid --kube-annotation-prefix "org": subnet/kube: prefix must be in a format: fqdn/[0-9a-z-_]*`},
		{name: "kube annotation prefix from env", args: []string{"--kube-subnet-mgr"}, env: map[string]string{"FLANNELD_KUBE_ANNOTATION_PREFIX": "a.b/c/d"},
			wantErr: `invalid --kube-annotation-prefix "a.b/c/d" (from FLANNELD_KUBE_ANNOTATION_PREFIX): subnet/kube: prefix can contain at most single slash`},
		{name: "kube empty net config path", args: []string{"--kube-subnet-mgr", "--net-config-path="},
			wantErr: "--net-config-path must not be empty with --kube-subnet-mgr"},
		{name: "iptables resync zero", args: []string{"--iptables-resync=0"}, wantErr: "invalid --iptables-resync 0: must be at least 1 second"},
		{name: "iptables resync from env", env: map[string]string{"FLANNELD_IPTABLES_RESYNC": "-1"}, wantErr: "invalid --iptables-resync -1 (from FLANNELD_IPTABLES_RESYNC): must be at least 1 second"},
		{name: "public ip not an address", args: []string{"--public-ip=foo"}, wantErr: "invalid public IP address: foo"},
		{name: "public ip is IPv6", args: []string{"--public-ip=2001:db8::1"}, wantErr: "invalid public IP address: 2001:db8::1"},
		{name: "public ip from env", env: map[string]string{"FLANNELD_PUBLIC_IP": "1.2.3"}, wantErr: "invalid public IP address: 1.2.3 (from FLANNELD_PUBLIC_IP)"},
		{name: "public ipv6 is IPv4", args: []string{"-public-ipv6=192.0.2.1"}, wantErr: "invalid public IPv6 address: 192.0.2.1"},
		{name: "public ipv6 garbage", args: []string{"-public-ipv6=zz::"}, wantErr: "invalid public IPv6 address: zz::"},
		{name: "healthz ip", args: []string{"--healthz-ip=localhost"}, wantErr: "invalid healthz IP address: localhost"},
		{name: "healthz port too big", args: []string{"--healthz-port=65536"}, wantErr: "invalid --healthz-port 65536: must be 0..65535"},
		{name: "healthz port negative", args: []string{"--healthz-port=-1"}, wantErr: "invalid --healthz-port -1"},
		{name: "iface regex does not compile", args: []string{"--iface-regex=eth[0-"}, wantErr: `invalid --iface-regex "eth[0-"`},
		{name: "second iface regex does not compile", args: []string{"--iface-regex=eth0", "--iface-regex=("}, wantErr: `invalid --iface-regex "("`},
		{name: "empty iface regex", args: []string{"--iface-regex="}, wantErr: "--iface-regex must not be empty"},
		{name: "empty iface", args: []string{"--iface="}, wantErr: "--iface must not be empty"},
		{name: "iface-can-reach not an IP", args: []string{"--iface-can-reach=example.com"}, wantErr: "invalid --iface-can-reach address: example.com"},
		{name: "certificate without key", args: []string{"--etcd-certfile=/c.pem"}, wantErr: "--etcd-certfile is set without --etcd-keyfile"},
		{name: "key without certificate", args: []string{"--etcd-keyfile=/k.pem", "--etcd-cafile=/ca.pem"}, wantErr: "--etcd-keyfile is set without --etcd-certfile"},
		{name: "key without certificate from env", env: map[string]string{"FLANNELD_ETCD_KEYFILE": "/k.pem"}, wantErr: "--etcd-keyfile (from FLANNELD_ETCD_KEYFILE) is set without"},
		{name: "empty endpoint list", args: []string{"--etcd-endpoints=,"}, wantErr: "--etcd-endpoints must list at least one endpoint"},
		{name: "bad verbosity", args: []string{"-v=abc"}, wantErr: `invalid argument "abc" for "--v" flag`},
		{name: "bad verbosity from env", env: map[string]string{"FLANNELD_V": "high"}, wantErr: `invalid value "high" for FLANNELD_V: `},
		{name: "bad vmodule", args: []string{"-vmodule=foo"}, wantErr: `invalid argument "foo" for "--vmodule" flag`},
		{name: "bad backtrace location", args: []string{"-log_backtrace_at=nofile"}, wantErr: `invalid argument "nofile" for "--log_backtrace_at" flag`},
		{name: "bad backtrace location from env", env: map[string]string{"FLANNELD_LOG_BACKTRACE_AT": "x.go:0"}, wantErr: `invalid value "x.go:0" for FLANNELD_LOG_BACKTRACE_AT`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var errOut bytes.Buffer
			_, err := parseOptions(tc.args, envFrom(tc.env), &errOut)
			if err == nil {
				t.Fatalf("parseOptions(%q, env %v): expected an error", tc.args, tc.env)
			}
			if tc.wantIs != nil {
				if !errors.Is(err, tc.wantIs) {
					t.Fatalf("parseOptions(%q) = %v, want %v", tc.args, err, tc.wantIs)
				}
			} else {
				if errors.Is(err, errHelp) || errors.Is(err, errVersion) {
					t.Fatalf("parseOptions(%q) = %v, want a usage error", tc.args, err)
				}
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseOptions(%q) error = %q, want it to contain %q", tc.args, err, tc.wantErr)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			if errOut.Len() != 0 {
				t.Errorf("parseOptions wrote to stderr: %q", errOut.String())
			}
		})
	}
}

// TestKlogFlags checks that -v, -vmodule and -log_backtrace_at reach klog in every
// spelling, that defaults are restored by the next parse, and that a failed parse
// leaves klog untouched.
func TestKlogFlags(t *testing.T) {
	resetKlog(t)
	tests := []struct {
		name        string
		args        []string
		env         map[string]string
		v           string
		vmodule     string
		backtraceAt string
	}{
		{name: "defaults", v: "0"},
		{name: "-v=10", args: []string{"-v=10"}, v: "10"},
		{name: "-v 10", args: []string{"-v", "10"}, v: "10"},
		{name: "--v=10", args: []string{"--v=10"}, v: "10"},
		{name: "--v 7", args: []string{"--v", "7"}, v: "7"},
		{name: "FLANNELD_V", env: map[string]string{"FLANNELD_V": "4"}, v: "4"},
		{name: "command line -v wins over FLANNELD_V", args: []string{"-v=2"}, env: map[string]string{"FLANNELD_V": "4"}, v: "2"},
		{name: "-vmodule", args: []string{"-vmodule=options_test=6,foo*=2"}, v: "0", vmodule: "options_test=6,foo*=2"},
		{name: "--vmodule from env", env: map[string]string{"FLANNELD_VMODULE": "bar=3"}, v: "0", vmodule: "bar=3"},
		{name: "-log_backtrace_at", args: []string{"-log_backtrace_at=options.go:42"}, v: "0", backtraceAt: "options.go:42"},
		{name: "--log_backtrace_at separate value", args: []string{"--log_backtrace_at", "main.go:7"}, v: "0", backtraceAt: "main.go:7"},
		{name: "FLANNELD_LOG_BACKTRACE_AT", env: map[string]string{"FLANNELD_LOG_BACKTRACE_AT": "x.go:3"}, v: "0", backtraceAt: "x.go:3"},
		{name: "all three with other flags", args: []string{"--ip-masq", "-v", "3", "-vmodule", "a=1", "-log_backtrace_at", "a.go:1", "--iface=eth0"},
			v: "3", vmodule: "a=1", backtraceAt: "a.go:1"},
		{name: "back to defaults", v: "0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := parseOptions(tc.args, envFrom(tc.env), io.Discard); err != nil {
				t.Fatalf("parseOptions(%q): %v", tc.args, err)
			}
			for name, want := range map[string]string{"v": tc.v, "vmodule": tc.vmodule, "log_backtrace_at": tc.backtraceAt} {
				if got := klogValue(t, name); got != want {
					t.Errorf("klog %s = %q, want %q", name, got, want)
				}
			}
			if got := klogValue(t, "logtostderr"); got != "true" {
				t.Errorf("klog logtostderr = %q, want true", got)
			}
		})
	}

	t.Run("verbosity really changes logging", func(t *testing.T) {
		if _, err := parseOptions([]string{"-v=10"}, nil, io.Discard); err != nil {
			t.Fatal(err)
		}
		if !klog.V(10).Enabled() {
			t.Error("klog.V(10) not enabled after -v=10")
		}
		if _, err := parseOptions([]string{"-vmodule=options_test=5"}, nil, io.Discard); err != nil {
			t.Fatal(err)
		}
		if klog.V(10).Enabled() {
			t.Error("klog.V(10) still enabled after a parse without -v")
		}
		if !klog.V(5).Enabled() {
			t.Error("klog.V(5) not enabled in options_test.go after -vmodule=options_test=5")
		}
	})

	t.Run("a failed parse leaves klog alone", func(t *testing.T) {
		if _, err := parseOptions([]string{"-v=3", "-vmodule=ok=2"}, nil, io.Discard); err != nil {
			t.Fatal(err)
		}
		for _, args := range [][]string{
			{"-v=9", "-vmodule=ok=4", "--healthz-port=x"},
			{"-v=9", "-vmodule=ok=4", "--public-ip=nope"},
			{"-v=9", "-vmodule=ok=4", "-log_backtrace_at=bad"}, // v and vmodule are valid but must be rolled back
			{"-v=9", "--help"},
			{"-v=9", "--version"},
		} {
			if _, err := parseOptions(args, nil, io.Discard); err == nil {
				t.Fatalf("parseOptions(%q): expected an error", args)
			}
			if got := klogValue(t, "v"); got != "3" {
				t.Errorf("after parseOptions(%q): klog v = %q, want 3", args, got)
			}
			if got := klogValue(t, "vmodule"); got != "ok=2" {
				t.Errorf("after parseOptions(%q): klog vmodule = %q, want ok=2", args, got)
			}
		}
	})
}

func TestEnvName(t *testing.T) {
	for flagName, want := range map[string]string{
		"etcd-endpoints":            "FLANNELD_ETCD_ENDPOINTS",
		"ip-masq":                   "FLANNELD_IP_MASQ",
		"v":                         "FLANNELD_V",
		"log_backtrace_at":          "FLANNELD_LOG_BACKTRACE_AT",
		"subnet-lease-renew-margin": "FLANNELD_SUBNET_LEASE_RENEW_MARGIN",
	} {
		if got := envName(flagName); got != want {
			t.Errorf("envName(%q) = %q, want %q", flagName, got, want)
		}
	}
}

func TestUsage(t *testing.T) {
	var b bytes.Buffer
	usage(&b)
	out := b.String()
	if !strings.HasPrefix(out, "Usage: flanneld [OPTION]...\n") {
		t.Errorf("usage does not start with the usage line:\n%s", out)
	}
	for _, flagName := range []string{
		"etcd-endpoints", "etcd-prefix", "etcd-keyfile", "etcd-certfile", "etcd-cafile", "etcd-username",
		"etcd-password", "iface", "iface-regex", "iface-can-reach", "subnet-file", "public-ip", "public-ipv6",
		"subnet-lease-renew-margin", "ip-masq", "ip-masq-fully-random-disable", "kube-subnet-mgr", "kube-api-url",
		"kube-annotation-prefix", "kubeconfig-file", "kube-exec-plugin-allowlist", "version", "healthz-ip", "healthz-port", "iptables-resync",
		"iptables-forward-rules", "ip-blackhole-route", "net-config-path", "set-node-network-unavailable",
		"timer-slack", "v", "vmodule", "log_backtrace_at",
	} {
		if !strings.Contains(out, "--"+flagName+" ") && !strings.Contains(out, "--"+flagName+"[=true|false]") {
			t.Errorf("usage does not list --%s", flagName)
		}
	}
	for _, def := range []string{`"http://127.0.0.1:4001,http://127.0.0.1:2379"`, `"/coreos.com/network"`, `"/run/flannel/subnet.env"`, "(default 60)", "(default 5)"} {
		if !strings.Contains(out, def) {
			t.Errorf("usage does not show default %s", def)
		}
	}
}

// FuzzParseOptions checks that no argv makes parseOptions panic, that it never writes
// to stderr, and that a successful parse respects the documented ranges.
func FuzzParseOptions(f *testing.F) {
	for _, seed := range []string{
		"", "--help", "-h", "--version", "-v=10", "-v\x0010", "--iface\x00eth0\x00--iface=eth1",
		"--ip-masq\x00false", "-etcd-endpoints\x00http://a,http://b", "--\x00x", "---x", "-=", "--=", "-v=",
		"--subnet-lease-renew-margin=1440", "-log_backtrace_at=a.go:1", "-vmodule=x=1", "--iface-regex=(",
	} {
		f.Add(seed, "")
	}
	f.Add("", "FLANNELD_HEALTHZ_PORT=abc")
	f.Add("--ip-masq", "FLANNELD_IFACE=eth0\x00FLANNELD_V=3")
	f.Fuzz(func(t *testing.T, argv, envs string) {
		args := strings.Split(argv, "\x00")
		if argv == "" {
			args = nil
		}
		env := map[string]string{}
		for _, kv := range strings.Split(envs, "\x00") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				env[k] = v
			}
		}
		var errOut bytes.Buffer
		o, err := parseOptions(args, envFrom(env), &errOut)
		if errOut.Len() != 0 {
			t.Errorf("parseOptions wrote to stderr: %q", errOut.String())
		}
		if err != nil {
			return
		}
		if o.SubnetLeaseRenewMargin < time.Minute || o.SubnetLeaseRenewMargin > 1439*time.Minute {
			t.Errorf("renew margin %v out of range accepted", o.SubnetLeaseRenewMargin)
		}
		if o.HealthzPort < 0 || o.HealthzPort > 65535 {
			t.Errorf("healthz port %d accepted", o.HealthzPort)
		}
		if len(o.EtcdEndpoints) == 0 {
			t.Error("no etcd endpoints accepted")
		}
		if o.KubeSubnetMgr || o.IPBlackholeRoute || o.IPMasqFullyRandomDisable || o.IPTablesResync != 5*time.Second {
			t.Errorf("a later-work feature was accepted: %+v", o)
		}
	})
}

// No credential survives LogSafe, which the start-up log line and the control socket's
// status show.
func TestLogSafe(t *testing.T) {
	resetKlog(t)
	o, err := parseOptions([]string{
		"--etcd-endpoints=https://flannel:ep-secret@192.0.2.1:2379,ep-user:ep-secret2@192.0.2.2:2379,http://192.0.2.3:2379",
		"--etcd-password=pw-secret", "--kube-api-url=https://admin:kube-secret@192.0.2.4:6443",
	}, envFrom(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	safe := fmt.Sprintf("%+v", o.LogSafe())
	for _, secret := range []string{"ep-secret", "ep-secret2", "pw-secret", "kube-secret", "ep-user"} {
		if strings.Contains(safe, secret) {
			t.Errorf("LogSafe keeps %q: %s", secret, safe)
		}
	}
	for _, kept := range []string{"https://xxxxx@192.0.2.1:2379", "xxxxx@192.0.2.2:2379", "http://192.0.2.3:2379", "https://xxxxx@192.0.2.4:6443", "<redacted>"} {
		if !strings.Contains(safe, kept) {
			t.Errorf("LogSafe lacks %q: %s", kept, safe)
		}
	}
	if o.EtcdPassword != "pw-secret" || !strings.Contains(o.EtcdEndpoints[0], "ep-secret") {
		t.Error("LogSafe changed the options it copied")
	}
	// The half-configured TLS check is etcd's: Kubernetes mode ignores the etcd flags.
	if _, err := parseOptions([]string{"--kube-subnet-mgr", "--etcd-certfile=/c.pem"}, envFrom(nil), io.Discard); err != nil {
		t.Errorf("Kubernetes mode with a lone --etcd-certfile: %v", err)
	}
}
