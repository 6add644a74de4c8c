package cniplugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// call is one run of a delegate plugin as the fake saw it.
type call struct {
	plugin, command, containerID, netns, ifName, path, args string
	conf                                                    []byte
	savedAtRun                                              bool // the container's config was on disk when the delegate ran
}

// fakeExec stands in for the delegate plugins: it records each run and answers ADD with
// result, or any verb with the error in fail.
type fakeExec struct {
	dataDir string
	result  string
	fail    map[string]error
	calls   []call
}

func (f *fakeExec) ExecPlugin(_ context.Context, path string, stdin []byte, environ []string) ([]byte, error) {
	env := map[string]string{}
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	c := call{plugin: filepath.Base(path), command: env["CNI_COMMAND"], containerID: env["CNI_CONTAINERID"],
		netns: env["CNI_NETNS"], ifName: env["CNI_IFNAME"], path: env["CNI_PATH"], args: env["CNI_ARGS"], conf: stdin}
	if c.containerID != "" {
		_, err := os.Stat(filepath.Join(f.dataDir, c.containerID))
		c.savedAtRun = err == nil
	}
	f.calls = append(f.calls, c)
	if err := f.fail[c.command]; err != nil {
		return nil, err
	}
	if c.command == "ADD" {
		return []byte(f.result), nil
	}
	return nil, nil
}

func (f *fakeExec) FindInPath(plugin string, paths []string) (string, error) {
	if len(paths) == 0 || plugin == "" || strings.Contains(plugin, "/") {
		return "", fmt.Errorf("failed to find plugin %q in path %s", plugin, paths)
	}
	return filepath.Join(paths[0], plugin), nil
}

func (f *fakeExec) Decode(b []byte) (version.PluginInfo, error) {
	return (&version.PluginDecoder{}).Decode(b)
}

const bridgeResult = `{"cniVersion":"1.0.0","interfaces":[{"name":"cni0","mac":"aa:bb:cc:dd:ee:01"},{"name":"veth1","mac":"aa:bb:cc:dd:ee:02"},{"name":"eth0","mac":"aa:bb:cc:dd:ee:03","sandbox":"/run/netns/p"}],"ips":[{"interface":2,"address":"10.244.3.2/24","gateway":"10.244.3.1"}],"routes":[{"dst":"10.244.0.0/16"}],"dns":{}}`

// node is a subnet file and a data directory in a temporary directory, the plugin under
// test and its fake delegates.
type node struct {
	dir, subnetFile, dataDir string
	exec                     *fakeExec
	out                      *bytes.Buffer
	p                        *Plugin
}

func newNode(t *testing.T, env string) *node {
	t.Helper()
	dir := t.TempDir()
	n := &node{dir: dir, subnetFile: filepath.Join(dir, "run", "subnet.env"), dataDir: filepath.Join(dir, "data"), out: &bytes.Buffer{}}
	n.exec = &fakeExec{dataDir: n.dataDir, result: bridgeResult, fail: map[string]error{}}
	n.p = &Plugin{Exec: n.exec, Stdout: n.out}
	if env != "" {
		n.writeEnv(t, env)
	}
	return n
}

func (n *node) writeEnv(t *testing.T, env string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(n.subnetFile), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(n.subnetFile, []byte(env), 0o644); err != nil {
		t.Fatal(err)
	}
}

// conf is the plugin's config with the node's files and extra keys (JSON members).
func (n *node) conf(cniVersion, extra string) []byte {
	s := fmt.Sprintf(`{"cniVersion":%q,"name":"cbr0","type":"flannel","subnetFile":%q,"dataDir":%q,"delegate":{"hairpinMode":true,"isDefaultGateway":true}`,
		cniVersion, n.subnetFile, n.dataDir)
	if extra != "" {
		s += "," + extra
	}
	return []byte(s + "}")
}

func args(id, ifName string, conf []byte) *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: id, Netns: "/run/netns/" + id, IfName: ifName, Args: "K8S_POD_NAME=p-" + id,
		Path: "/cni/bin:/more/bin", StdinData: conf}
}

func (n *node) saved(id string) ([]byte, bool) {
	b, err := os.ReadFile(filepath.Join(n.dataDir, id))
	return b, err == nil
}

func cniError(t *testing.T, err error) *types.Error {
	t.Helper()
	var e *types.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a CNI error result", err, err)
	}
	return e
}

func TestAbout(t *testing.T) {
	want := fmt.Sprintf("CNI Plugin flannel version v1.2.3 (%s/%s) commit abc123", runtime.GOOS, runtime.GOARCH)
	if got := About("v1.2.3", "abc123"); got != want {
		t.Fatalf("%q, want %q", got, want)
	}
}

func TestAddSavesThenDelegates(t *testing.T) {
	n := newNode(t, env4)
	conf := n.conf("0.3.1", "")
	if err := n.p.Add(context.Background(), args("c1", "eth0", conf)); err != nil {
		t.Fatal(err)
	}
	golden, err := os.ReadFile(filepath.Join("testdata", "delegate", "ipv4.json"))
	if err != nil {
		t.Fatal(err)
	}
	saved, ok := n.saved("c1")
	if !ok || !bytes.Equal(saved, bytes.TrimSpace(golden)) {
		t.Fatalf("saved %s\nwant  %s", saved, golden)
	}
	if len(n.exec.calls) != 1 {
		t.Fatalf("calls %+v", n.exec.calls)
	}
	c := n.exec.calls[0]
	if c.plugin != "bridge" || c.command != "ADD" || !bytes.Equal(c.conf, saved) || !c.savedAtRun {
		t.Fatalf("delegate run %+v, want bridge ADD with the saved bytes, saved first", c)
	}
	if c.containerID != "c1" || c.netns != "/run/netns/c1" || c.ifName != "eth0" || c.path != "/cni/bin:/more/bin" || c.args != "K8S_POD_NAME=p-c1" {
		t.Fatalf("runtime arguments not passed on: %+v", c)
	}
	// The delegate's result, in the config's version, is ours.
	var res map[string]any
	if err := json.Unmarshal(n.out.Bytes(), &res); err != nil {
		t.Fatalf("result %q: %v", n.out, err)
	}
	if res["cniVersion"] != "0.3.1" || !strings.Contains(n.out.String(), "10.244.3.2/24") {
		t.Fatalf("result %s", n.out)
	}
}

func TestAddRefusals(t *testing.T) {
	cases := []struct {
		name, env, conf string
		code            uint
		want            []string
	}{
		{name: "no subnet file", code: types.ErrTryAgainLater, want: []string{
			"failed to load flannel 'subnet.env' file: open ", "no such file or directory. Check the flannel pod log for this node.",
			"flanneld is not running or not ready on this node"}},
		{name: "incomplete subnet file", env: "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\n", code: types.ErrInternal, want: []string{
			"failed to load flannel 'subnet.env' file: ", "subnet.env is missing FLANNEL_MTU, FLANNEL_IPMASQ. Check the flannel pod log for this node.",
			"incomplete or damaged", "restart flanneld"}},
		{name: "unparsable subnet file", env: "FLANNEL_NETWORK=10.244.0.0\n", code: types.ErrInternal, want: []string{
			"failed to load flannel 'subnet.env' file: FLANNEL_NETWORK: invalid CIDR address: 10.244.0.0. Check the flannel pod log"}},
		{name: "bad field", env: env4, conf: `"dataDir":1`, code: types.ErrInvalidNetworkConfig, want: []string{`field "dataDir" must be a string, not a number`}},
		{name: "bad delegate", env: env4, conf: `"delegate":{"name":"x"}`, code: types.ErrInvalidNetworkConfig, want: []string{"'delegate' dictionary must not have 'name' field"}},
		{name: "bad delegate before a missing subnet file", conf: `"delegate":{"ipam":{}}`, code: types.ErrInvalidNetworkConfig, want: []string{"must not have 'ipam' field"}},
		{name: "bad routes", env: env4, conf: `"ipam":{"routes":[{"dst":"x"}]}`, code: types.ErrInvalidNetworkConfig, want: []string{"failed to parse ipam.routes"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := newNode(t, c.env)
			conf := n.conf("1.0.0", "")
			if c.conf != "" { // replaces the delegate or adds a key; the later key wins in encoding/json
				conf = n.conf("1.0.0", c.conf)
			}
			err := n.p.Add(context.Background(), args("c1", "eth0", conf))
			e := cniError(t, err)
			if e.Code != c.code {
				t.Errorf("code %d, want %d (%s)", e.Code, c.code, e.Msg)
			}
			for _, w := range c.want {
				if !strings.Contains(e.Msg, w) {
					t.Errorf("message %q lacks %q", e.Msg, w)
				}
			}
			if len(n.exec.calls) != 0 {
				t.Errorf("delegate ran: %+v", n.exec.calls)
			}
			if _, ok := n.saved("c1"); ok {
				t.Error("a config was saved")
			}
		})
	}
}

func TestAddDelegateFailureKeepsConfigForDel(t *testing.T) {
	n := newNode(t, env4)
	n.exec.fail["ADD"] = &types.Error{Code: 11, Msg: "bridge says no"}
	err := n.p.Add(context.Background(), args("c1", "eth0", n.conf("1.0.0", "")))
	if e := cniError(t, err); e.Msg != "bridge says no" || e.Code != 11 {
		t.Fatalf("error %+v, want the delegate's", e)
	}
	if _, ok := n.saved("c1"); !ok {
		t.Fatal("saved config removed: the runtime's DEL could not reach the delegate")
	}
	if err := n.p.Del(context.Background(), args("c1", "eth0", n.conf("1.0.0", ""))); err != nil {
		t.Fatal(err)
	}
	if len(n.exec.calls) != 2 || n.exec.calls[1].command != "DEL" {
		t.Fatalf("calls %+v", n.exec.calls)
	}
}

// upstreamSaved is a delegate config as upstream's plugin saves it (its rendering of the
// DaemonSet's config), written without an interface name beside it.
func (n *node) upstreamSaved(t *testing.T, id string) []byte {
	t.Helper()
	conf := []byte(`{"cniVersion":"0.3.1","hairpinMode":true,"ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.244.3.0/24"}]],"routes":[{"dst":"10.244.0.0/16"}],"type":"host-local"},"isDefaultGateway":true,"isGateway":true,"mtu":1450,"name":"cbr0","type":"bridge"}`)
	if err := os.MkdirAll(n.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(n.dataDir, id), conf, 0o600); err != nil {
		t.Fatal(err)
	}
	return conf
}

func TestDel(t *testing.T) {
	ctx := context.Background()
	t.Run("upstream-saved config", func(t *testing.T) {
		n := newNode(t, "") // DEL needs no subnet file
		conf := n.upstreamSaved(t, "c1")
		if err := n.p.Del(ctx, args("c1", "eth0", n.conf("0.3.1", `"runtimeConfig":{"portMappings":[]}`))); err != nil {
			t.Fatal(err)
		}
		if len(n.exec.calls) != 1 {
			t.Fatalf("calls %+v", n.exec.calls)
		}
		c := n.exec.calls[0]
		if c.plugin != "bridge" || c.command != "DEL" || !bytes.Equal(c.conf, conf) || c.containerID != "c1" || c.ifName != "eth0" || c.netns != "/run/netns/c1" {
			t.Fatalf("delegate run %+v, want bridge DEL with exactly the saved bytes", c)
		}
		if _, ok := n.saved("c1"); ok {
			t.Fatal("saved config left after DEL")
		}
	})
	t.Run("nothing saved", func(t *testing.T) {
		n := newNode(t, "")
		if err := n.p.Del(ctx, args("c1", "eth0", n.conf("1.0.0", ""))); err != nil {
			t.Fatal(err)
		}
		if len(n.exec.calls) != 0 {
			t.Fatalf("calls %+v", n.exec.calls)
		}
	})
	t.Run("delegate fails", func(t *testing.T) {
		n := newNode(t, env4)
		if err := n.p.Add(ctx, args("c1", "eth0", n.conf("1.0.0", ""))); err != nil {
			t.Fatal(err)
		}
		n.exec.fail["DEL"] = &types.Error{Code: 999, Msg: "busy"}
		if e := cniError(t, n.p.Del(ctx, args("c1", "eth0", n.conf("1.0.0", "")))); e.Msg != "busy" {
			t.Fatalf("%+v", e)
		}
		if _, ok := n.saved("c1"); !ok {
			t.Fatal("saved config removed although the delegate's DEL failed")
		}
		if _, ok := (Store{Dir: n.dataDir}).IfName("c1"); !ok {
			t.Fatal("interface name removed although the delegate's DEL failed")
		}
	})
	t.Run("unusable saved config", func(t *testing.T) {
		n := newNode(t, "")
		if err := os.MkdirAll(n.dataDir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(n.dataDir, "c1"), []byte("{trunc"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := n.p.Del(ctx, args("c1", "eth0", n.conf("1.0.0", ""))); err != nil {
			t.Fatal(err)
		}
		if len(n.exec.calls) != 0 {
			t.Fatalf("calls %+v", n.exec.calls)
		}
		if _, ok := n.saved("c1"); ok {
			t.Fatal("unusable saved config kept")
		}
	})
	t.Run("bad netconf", func(t *testing.T) {
		n := newNode(t, "")
		n.upstreamSaved(t, "c1")
		if e := cniError(t, n.p.Del(ctx, args("c1", "eth0", n.conf("1.0.0", `"dataDir":[]`)))); e.Code != types.ErrInvalidNetworkConfig {
			t.Fatalf("%+v", e)
		}
	})
}

func TestCheck(t *testing.T) {
	ctx := context.Background()
	n := newNode(t, env4)
	if err := n.p.Add(ctx, args("c1", "eth0", n.conf("1.0.0", ""))); err != nil {
		t.Fatal(err)
	}
	saved, _ := n.saved("c1")
	// The runtime checks with a newer config version than ADD had and its cached result.
	prev := `{"cniVersion":"1.1.0","ips":[{"address":"10.244.3.2/24","gateway":"10.244.3.1"}]}`
	if err := n.p.Check(ctx, args("c1", "eth0", n.conf("1.1.0", `"prevResult":`+prev))); err != nil {
		t.Fatal(err)
	}
	c := n.exec.calls[len(n.exec.calls)-1]
	if c.plugin != "bridge" || c.command != "CHECK" || c.netns != "/run/netns/c1" || c.ifName != "eth0" {
		t.Fatalf("delegate run %+v", c)
	}
	var got, want map[string]any
	if err := json.Unmarshal(c.conf, &got); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(saved, &want); err != nil {
		t.Fatal(err)
	}
	want["cniVersion"] = "1.1.0"
	var p any
	if err := json.Unmarshal([]byte(prev), &p); err != nil {
		t.Fatal(err)
	}
	want["prevResult"] = p
	gb, _ := json.Marshal(got)
	wb, _ := json.Marshal(want)
	if !bytes.Equal(gb, wb) {
		t.Fatalf("CHECK config\n got %s\nwant %s", gb, wb)
	}

	n.exec.fail["CHECK"] = &types.Error{Code: 999, Msg: "eth0 has no address 10.244.3.2/24"}
	if e := cniError(t, n.p.Check(ctx, args("c1", "eth0", n.conf("1.1.0", `"prevResult":`+prev)))); !strings.Contains(e.Msg, "no address") {
		t.Fatalf("%+v", e)
	}
	if err := n.p.Check(ctx, args("c2", "eth0", n.conf("1.1.0", `"prevResult":`+prev))); err == nil ||
		!regexp.MustCompile(`no saved delegate config for container c2 in .*: it was not added by flannel with this dataDir`).MatchString(err.Error()) {
		t.Fatalf("CHECK of an unknown container: %v", err)
	}
}

func TestStatus(t *testing.T) {
	ctx := context.Background()
	n := newNode(t, "")
	st := &skel.CmdArgs{Path: "/cni/bin", StdinData: n.conf("1.1.0", "")}
	e := cniError(t, n.p.Status(ctx, st))
	if e.Code != types.ErrPluginNotAvailable || !strings.Contains(e.Msg, "flanneld is not running or not ready on this node") {
		t.Fatalf("STATUS without a subnet file: %+v", e)
	}
	if len(n.exec.calls) != 0 {
		t.Fatalf("calls %+v", n.exec.calls)
	}
	n.writeEnv(t, "FLANNEL_NETWORK=10.244.0.0/16\n")
	if e := cniError(t, n.p.Status(ctx, st)); e.Code != types.ErrInternal || !strings.Contains(e.Msg, "is missing FLANNEL_SUBNET") {
		t.Fatalf("STATUS with an incomplete subnet file: %+v", e)
	}
	n.writeEnv(t, env4)
	if err := n.p.Status(ctx, st); err != nil {
		t.Fatal(err)
	}
	c := n.exec.calls[0]
	if c.plugin != "bridge" || c.command != "STATUS" || !strings.Contains(string(c.conf), `"ranges":[[{"subnet":"10.244.3.0/24"}]]`) {
		t.Fatalf("delegate run %+v", c)
	}
	n.exec.fail["STATUS"] = &types.Error{Code: 50, Msg: "ipam not ready"}
	if e := cniError(t, n.p.Status(ctx, st)); e.Msg != "ipam not ready" {
		t.Fatalf("%+v", e)
	}
}

func TestGC(t *testing.T) {
	ctx := context.Background()
	n := newNode(t, env4)
	for _, a := range [][2]string{{"c1", "eth0"}, {"c2", "eth0"}, {"c3", "net1"}, {"c7", "eth0"}} {
		if err := n.p.Add(ctx, args(a[0], a[1], n.conf("1.1.0", ""))); err != nil {
			t.Fatal(err)
		}
	}
	n.upstreamSaved(t, "c4")
	c5 := n.upstreamSaved(t, "c5")
	st := Store{Dir: n.dataDir}
	if err := os.WriteFile(filepath.Join(n.dataDir, ifNameDir, "c6"), []byte("eth0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n.exec.calls = nil
	n.exec.fail["DEL"] = nil

	valid := `[{"containerID":"c1","ifname":"eth0"},{"containerID":"c3","ifname":"eth0"},{"containerID":"c4","ifname":"eth1"},{"containerID":"c7","ifname":"eth0"}]`
	gc := &skel.CmdArgs{Path: "/cni/bin", StdinData: n.conf("1.1.0", `"cni.dev/valid-attachments":`+valid)}
	if err := n.p.GC(ctx, gc); err != nil {
		t.Fatal(err)
	}
	// Stale: c2 (absent), c3 (another interface), c5 (upstream-saved, container absent).
	dels := map[string]call{}
	var gcCall *call
	for i, c := range n.exec.calls {
		switch c.command {
		case "DEL":
			dels[c.containerID] = c
		case "GC":
			gcCall = &n.exec.calls[i]
		default:
			t.Errorf("unexpected %s", c.command)
		}
	}
	if len(dels) != 3 || dels["c2"].ifName != "eth0" || dels["c3"].ifName != "net1" || dels["c5"].ifName != GCIfName {
		t.Fatalf("delegate DELs %+v, want c2/eth0, c3/net1, c5/%s", dels, GCIfName)
	}
	for id, c := range dels {
		if c.netns != "" || c.plugin != "bridge" || c.path != "/cni/bin" {
			t.Errorf("%s: %+v, want bridge without a netns", id, c)
		}
	}
	if !bytes.Equal(dels["c5"].conf, c5) {
		t.Errorf("c5 deleted with %s, want its saved bytes", dels["c5"].conf)
	}
	saved, orphans, err := st.List()
	if err != nil || strings.Join(saved, ",") != "c1,c4,c7" || len(orphans) != 0 {
		t.Fatalf("left: %v orphans %v %v", saved, orphans, err)
	}
	if gcCall == nil || gcCall.plugin != "bridge" {
		t.Fatalf("the delegate's GC did not run: %+v", n.exec.calls)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(gcCall.conf, &m); err != nil {
		t.Fatal(err)
	}
	if string(m["cni.dev/valid-attachments"]) != valid || !strings.Contains(string(m["ipam"]), "10.244.3.0/24") || string(m["cniVersion"]) != `"1.1.0"` {
		t.Fatalf("delegate GC config %s", gcCall.conf)
	}

	// A failing delegate DEL keeps that attachment and is reported; the others still go.
	n.exec.calls = nil
	n.exec.fail["DEL"] = &types.Error{Code: 999, Msg: "cannot release"}
	gc.StdinData = n.conf("1.1.0", `"cni.dev/valid-attachments":[]`)
	e := cniError(t, n.p.GC(ctx, gc))
	if !strings.Contains(e.Msg, "cannot release") {
		t.Fatalf("%+v", e)
	}
	if saved, _, _ := st.List(); len(saved) != 3 {
		t.Fatalf("left after failed DELs: %v", saved)
	}
	if last := n.exec.calls[len(n.exec.calls)-1]; last.command != "GC" {
		t.Fatalf("the delegate's GC did not run after failed DELs: %+v", last)
	}
}

func TestGCWithoutListDropsNothing(t *testing.T) {
	n := newNode(t, env4)
	if err := n.p.Add(context.Background(), args("c1", "eth0", n.conf("1.1.0", ""))); err != nil {
		t.Fatal(err)
	}
	n.exec.calls = nil
	err := n.p.GC(context.Background(), &skel.CmdArgs{Path: "/cni/bin", StdinData: n.conf("1.1.0", "")})
	if e := cniError(t, err); !strings.Contains(e.Msg, "cni.dev/valid-attachments") {
		t.Fatalf("%+v", e)
	}
	if _, ok := n.saved("c1"); !ok || len(n.exec.calls) != 0 {
		t.Fatalf("GC without a list acted: calls %+v", n.exec.calls)
	}
}

func TestGCWithoutSubnetFileStillDropsStale(t *testing.T) {
	n := newNode(t, "")
	n.upstreamSaved(t, "c1")
	err := n.p.GC(context.Background(), &skel.CmdArgs{Path: "/cni/bin", StdinData: n.conf("1.1.0", `"cni.dev/valid-attachments":[]`)})
	if err == nil || !strings.Contains(err.Error(), "the delegate's GC did not run") {
		t.Fatalf("%v", err)
	}
	if _, ok := n.saved("c1"); ok || len(n.exec.calls) != 1 || n.exec.calls[0].command != "DEL" {
		t.Fatalf("stale attachment not dropped: %+v", n.exec.calls)
	}
}
