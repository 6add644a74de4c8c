package cniplugin

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/flannel-go/flannel/pkg/subnetenv"
)

func TestParseNetConf(t *testing.T) {
	cases := []struct {
		name, in string
		check    func(t *testing.T, nc *NetConf)
		wantErr  string
	}{
		{name: "defaults", in: `{"cniVersion":"1.1.0","name":"cbr0","type":"flannel"}`, check: func(t *testing.T, nc *NetConf) {
			if nc.SubnetFile != DefaultSubnetFile || nc.DataDir != DefaultDataDir || nc.Delegate != nil || nc.IPAM != nil || nc.PrevResult != nil {
				t.Errorf("%+v", nc)
			}
			if _, ok := nc.Attachments(); ok {
				t.Error("attachments without a list")
			}
		}},
		{name: "empty strings take the defaults", in: `{"name":"n","subnetFile":"","dataDir":""}`, check: func(t *testing.T, nc *NetConf) {
			if nc.SubnetFile != DefaultSubnetFile || nc.DataDir != DefaultDataDir {
				t.Errorf("%+v", nc)
			}
		}},
		{name: "own keys", in: `{"name":"n","subnetFile":"/x/subnet.env","dataDir":"/x/data","prevResult":{"cniVersion":"1.0.0"}}`, check: func(t *testing.T, nc *NetConf) {
			if nc.SubnetFile != "/x/subnet.env" || nc.DataDir != "/x/data" || string(nc.PrevResult) != `{"cniVersion":"1.0.0"}` {
				t.Errorf("%+v", nc)
			}
		}},
		{name: "null prevResult", in: `{"name":"n","prevResult":null}`, check: func(t *testing.T, nc *NetConf) {
			if nc.PrevResult != nil {
				t.Errorf("prevResult %q", nc.PrevResult)
			}
		}},
		{name: "empty attachment list is a list", in: `{"name":"n","cni.dev/valid-attachments":[]}`, check: func(t *testing.T, nc *NetConf) {
			if a, ok := nc.Attachments(); !ok || len(a) != 0 {
				t.Errorf("%v %v", a, ok)
			}
		}},
		{name: "valid-attachments wins over the legacy key", in: `{"name":"n","cni.dev/attachments":[{"containerID":"b","ifname":"eth0"}],"cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth1"}]}`,
			check: func(t *testing.T, nc *NetConf) {
				if a, ok := nc.Attachments(); !ok || len(a) != 1 || a[0].ContainerID != "a" || a[0].IfName != "eth1" {
					t.Errorf("%v %v", a, ok)
				}
			}},
		{name: "legacy key alone", in: `{"name":"n","cni.dev/attachments":[{"containerID":"b","ifname":"eth0"}]}`,
			check: func(t *testing.T, nc *NetConf) {
				if a, ok := nc.Attachments(); !ok || len(a) != 1 || a[0].ContainerID != "b" {
					t.Errorf("%v %v", a, ok)
				}
			}},
		{name: "dataDir type", in: `{"name":"n","dataDir":true}`, wantErr: `failed to load netconf: field "dataDir" must be a string, not a bool`},
		{name: "runtimeConfig type", in: `{"name":"n","runtimeConfig":[1]}`, wantErr: `field "runtimeConfig" must be an object, not an array`},
		{name: "attachment field type", in: `{"name":"n","cni.dev/valid-attachments":[{"containerID":1}]}`,
			wantErr: `field "cni.dev/valid-attachments.containerID" must be a string, not a number`},
		{name: "prevResult type", in: `{"name":"n","prevResult":"x"}`, check: func(t *testing.T, nc *NetConf) {
			// Kept raw: the delegate's CHECK judges it.
			if string(nc.PrevResult) != `"x"` {
				t.Errorf("%q", nc.PrevResult)
			}
		}},
		{name: "not json", in: `{`, wantErr: "failed to load netconf: unexpected end of JSON input"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			nc, err := ParseNetConf([]byte(c.in))
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c.check(t, nc)
		})
	}
}

// FuzzParseNetConf: any input fails or renders a delegate config that reads back as saved.
func FuzzParseNetConf(f *testing.F) {
	f.Add([]byte(confK8s))
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"cbr0","type":"flannel","delegate":{"type":"ptp","mtu":1e3},"ipam":{"routes":[{"dst":"0.0.0.0/0","gw":"10.0.0.1"}],"ranges":5},"runtimeConfig":{"a":[1]}}`))
	f.Add([]byte(`{"name":"x","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}],"prevResult":{"ips":[]}}`))
	env, err := subnetenv.ParseContents([]byte(envDual))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		nc, err := ParseNetConf(data)
		if err != nil {
			return
		}
		if nc.SubnetFile == "" || nc.DataDir == "" {
			t.Fatalf("defaults not applied: %+v", nc)
		}
		nc.Attachments()
		out, err := DelegateConfig(nc, env)
		if err != nil {
			return
		}
		var m map[string]any
		if err := json.Unmarshal(out, &m); err != nil {
			t.Fatalf("rendered config is not a JSON object: %v\n%s", err, out)
		}
		if m["name"] != nc.Name {
			t.Fatalf("name %v, want %q", m["name"], nc.Name)
		}
		if !strings.Contains(string(out), `{"subnet":"10.244.3.0/24"}`) {
			t.Fatalf("node subnet missing: %s", out)
		}
		if typ, err := ParseSaved(out); err != nil || typ == "" {
			t.Fatalf("rendered config does not read back: %q %v\n%s", typ, err, out)
		}
	})
}
