package diagnose

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/flannel-go/flannel/pkg/control"
	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func TestHealthyPasses(t *testing.T) {
	r := healthy().run()
	if r.Failed() || r.ExitStatus() != ExitOK {
		var b bytes.Buffer
		_ = r.WriteText(&b)
		t.Fatalf("a healthy node fails:\n%s", b.String())
	}
	for _, c := range r.Checks {
		if c.Outcome == Skipped {
			t.Errorf("%s skipped on a healthy node: %s", c.Name, c.Evidence)
		}
		if c.Evidence == "" || strings.Contains(c.Evidence, "\n") {
			t.Errorf("%s: evidence %q is not one line", c.Name, c.Evidence)
		}
	}
}

// Each fault fails exactly the checks it should, naming the cause and the object.
func TestFaults(t *testing.T) {
	tests := []struct {
		name   string
		fault  func(w *world)
		failed []string // the failed checks
		says   string   // in the first failed check's evidence
		object string   // among its objects
	}{
		{"daemon not running", func(w *world) { w.daemon = nil }, []string{CheckDaemon}, "not running", "flanneld"},
		{"daemon not ready", func(w *world) {
			w.daemon.Readiness = readiness(false, "lease-watch", "etcd connection is CONNECTING")
		}, []string{CheckDaemon}, "lease-watch: etcd connection is CONNECTING", "flanneld"},
		{"etcd down", func(w *world) {
			w.etcd.down = map[string]error{"http://192.0.2.254:2379": errors.New("connection refused")}
		}, []string{CheckEtcdEndpoints}, "connection refused", "http://192.0.2.254:2379"},
		{"no config", func(w *world) { w.etcd.noConfig = true }, []string{CheckNetworkConfig}, "no network config at /coreos.com/network/config", "/coreos.com/network/config"},
		{"v2 config", func(w *world) { w.etcd.noConfig, w.etcd.v2 = true, netConf },
			[]string{CheckEtcdV2Config, CheckNetworkConfig}, "exists only in the etcd v2 API", "/coreos.com/network/config"},
		{"bad config", func(w *world) { w.etcd.config = `{"Network":"10.5.0.0/33"}` }, []string{CheckNetworkConfig}, "invalid IPv4 CIDR", "/coreos.com/network/config"},
		{"config changed", func(w *world) { w.etcd.config = `{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}` },
			[]string{CheckNetworkConfig}, "flanneld runs with another config", "/coreos.com/network/config"},
		{"no lease", func(w *world) { w.etcd.leases = w.etcd.leases[1:]; w.daemon = nil },
			[]string{CheckDaemon, CheckLease}, "not running", "flanneld"},
		{"lease expiring", func(w *world) { w.etcd.expiry = now.Add(10 * time.Minute) }, []string{CheckLease}, "has not renewed", "10.5.1.0-24"},
		{"subnet file disagrees", func(w *world) {
			w.files["run/flannel/subnet.env"] = &fstest.MapFile{Data: []byte(strings.Replace(subnetEnv, "10.5.1.1/24", "10.5.9.1/24", 1))}
		}, []string{CheckSubnetFile}, "FLANNEL_SUBNET=10.5.9.0/24, want 10.5.1.0/24", "run/flannel/subnet.env"},
		{"subnet file missing", func(w *world) { delete(w.files, "run/flannel/subnet.env") }, []string{CheckSubnetFile}, "no subnet file", "run/flannel/subnet.env"},
		{"public ip", func(w *world) { w.opts.PublicIP = "192.0.2.99" }, []string{CheckPublicIP}, "the lease advertises 192.0.2.11, but --public-ip is 192.0.2.99", "10.5.1.0-24"},
		{"public ip, no daemon", func(w *world) { w.opts.PublicIP, w.daemon = "192.0.2.99", nil; w.files = fstest.MapFS{} },
			[]string{CheckDaemon, CheckLease, CheckSubnetFile}, "not running", "flanneld"},
		{"device mtu", func(w *world) {
			w.backend.missing = []Object{drift(observe.Device, "device flannel.1 (mtu 1400, want 1450)")}
		}, []string{CheckDevice}, "mtu 1400, want 1450", "device flannel.1 (mtu 1400, want 1450)"},
		{"stale route", func(w *world) {
			w.daemon = nil
			w.backend.stale = []Object{drift(observe.Route, "route 10.5.77.0/24 via 10.5.77.0 dev flannel.1")}
		}, []string{CheckDaemon, CheckPeerObjects}, "not running", "flanneld"},
		{"missing fdb", func(w *world) {
			w.backend.missing = []Object{drift(observe.FDB, "fdb 0e:00:00:00:00:02 dst 192.0.2.12 dev flannel.1")}
		}, []string{CheckPeerObjects}, "1 missing", "fdb 0e:00:00:00:00:02 dst 192.0.2.12 dev flannel.1"},
		{"ip_forward off", func(w *world) { w.kernel.sysctls["net.ipv4.ip_forward"] = "0" }, []string{CheckIPForward}, "net.ipv4.ip_forward = 0", "net.ipv4.ip_forward"},
		{"rules missing", func(w *world) {
			w.rulesMissing = []string{"-t nat -A POSTROUTING -m comment --comment flanneld masq -j FLANNEL-POSTRTG"}
		}, []string{CheckTrafficRules}, "1 iptables rules missing", "-t nat -A POSTROUTING -m comment --comment flanneld masq -j FLANNEL-POSTRTG"},
		{"checksum offload", func(w *world) {
			w.backend.offload = []Offload{{Device: "flannel.1", On: true, Want: false, Decided: true, Why: "kernel 5.4 is older than 5.7"}}
		}, []string{CheckChecksumOffload}, "flannel.1 has transmit checksum offload on, want off", "flannel.1"},
		{"foreign vxlan device", func(w *world) {
			w.kernel.links = append(w.kernel.links, Link{Name: "vxlan0", Type: "vxlan", VNI: 1, Port: 8472, Local: netip.MustParseAddr("192.0.2.11"), MTU: 1450})
		}, []string{CheckInstances}, "device vxlan0 uses VNI 1 and port 8472 like flannel.1", "vxlan0"},
		{"another instance on our VNI", func(w *world) {
			w.others = []control.Found{{Socket: "@flannel-go/etcd-prefix:/other", Status: &control.Status{Instance: control.Instance{
				PID: 77, Locks: []string{"etcd-prefix:/other"}, Devices: []string{"flannel.1"}}}}}
		}, []string{CheckInstances}, "device flannel.1 is also claimed by flanneld pid 77 (etcd-prefix:/other)", "flannel.1"},
		{"another instance in our network", func(w *world) {
			w.others = []control.Found{{Socket: "@flannel-go/etcd-prefix:/other", Status: &control.Status{Instance: control.Instance{
				PID: 77, Locks: []string{"etcd-prefix:/other"}, Network: netip.MustParsePrefix("10.5.128.0/17")}}}}
		}, []string{CheckInstances}, "network 10.5.0.0/16 (theirs: 10.5.128.0/17) is also claimed", "10.5.0.0/16"},
		{"docker0 outside", func(w *world) {
			w.kernel.links[3] = Link{Name: "docker0", Type: "bridge", MTU: 1500, Addrs: []netip.Prefix{netip.MustParsePrefix("172.17.0.1/16")}}
		}, []string{CheckBridgeAddress, CheckBridgeMTU}, "docker0 holds 172.17.0.1/16, outside this node's subnet 10.5.1.0/24 (Docker was not restarted", "docker0"},
		{"cni0 outside", func(w *world) {
			w.kernel.links[3].Addrs = []netip.Prefix{netip.MustParsePrefix("10.5.2.1/24")}
		}, []string{CheckBridgeAddress}, "cni0 holds 10.5.2.1/24, outside", "cni0"},
		{"no flannel cni config", func(w *world) {
			w.files["etc/cni/net.d/10-flannel.conflist"] = &fstest.MapFile{Data: []byte(`{"plugins":[{"type":"bridge"}]}`)}
		}, []string{CheckCNIConfig}, "no CNI config in etc/cni/net.d uses the flannel plugin", "etc/cni/net.d"},
		{"cni config shadowed", func(w *world) {
			w.files["etc/cni/net.d/05-other.conf"] = &fstest.MapFile{Data: []byte(`{"type":"bridge"}`)}
		}, []string{CheckCNIConfig}, "the runtime uses 05-other.conf", "etc/cni/net.d/05-other.conf"},
		{"underlay down", func(w *world) { w.prober.drop = map[netip.Addr]bool{netip.MustParseAddr("192.0.2.13"): true} },
			[]string{CheckPeerUnderlay}, "192.0.2.13 (10.5.3.0/24)", "192.0.2.13"},
		{"vxlan port dropped", func(w *world) { w.prober.drop = map[netip.Addr]bool{netip.MustParseAddr("10.5.2.0"): true} },
			[]string{CheckPeerOverlay}, "UDP port 8472 to or from 192.0.2.12 (10.5.2.0/24) is dropped", "192.0.2.12 udp/8472"},
		{"mtu on the path", func(w *world) { w.prober.bigDrop = map[netip.Addr]bool{netip.MustParseAddr("192.0.2.12"): true} },
			[]string{CheckPeerMTU}, "1500-byte packets with DF set (FLANNEL_MTU 1450 + 50 of encapsulation) get no answer from 192.0.2.12", "192.0.2.12"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := healthy()
			tt.fault(w)
			r := w.run()
			var text bytes.Buffer
			_ = r.WriteText(&text)
			if got := failedNames(r); !slices.Equal(got, sorted(tt.failed)) {
				t.Fatalf("failed checks %v, want %v:\n%s", got, tt.failed, text.String())
			}
			if r.ExitStatus() != ExitFailed {
				t.Errorf("exit status %d", r.ExitStatus())
			}
			c := result(r, tt.failed[0])
			if !strings.Contains(c.Evidence, tt.says) {
				t.Errorf("%s evidence %q does not say %q", c.Name, c.Evidence, tt.says)
			}
			if tt.object != "" && !slices.Contains(c.Objects, tt.object) {
				t.Errorf("%s objects %q lack %q", c.Name, c.Objects, tt.object)
			}
			for _, c := range r.Checks {
				if c.Outcome == Failed && (c.Fix == "" || strings.Contains(c.Fix, "\n")) {
					t.Errorf("%s: fix %q is not one line", c.Name, c.Fix)
				}
			}
		})
	}
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

// Without root, what needs root is skipped with the reason, and nothing fails for it.
func TestNotRoot(t *testing.T) {
	w := healthy()
	w.opts.Root = false
	w.prober.err = ErrPermission
	r := w.run()
	for name, want := range map[string]string{
		CheckDaemon:       "answers root only",
		CheckTrafficRules: "needs root",
		CheckPeerUnderlay: "no permission to send ICMP",
		CheckPeerMTU:      "no permission to send ICMP",
	} {
		if c := result(r, name); c.Outcome != Skipped || !strings.Contains(c.Evidence, want) {
			t.Errorf("%s: %s %q, want skipped saying %q", name, c.Outcome, c.Evidence, want)
		}
	}
	if r.Failed() {
		t.Errorf("failed as non-root: %v", failedNames(r))
	}
}

// A v2 API the server does not serve skips the v2 check, with the reason.
func TestNoV2Skips(t *testing.T) {
	w := healthy()
	w.etcd.noConfig = true
	w.etcd.v2Err = ErrNoV2
	r := w.run()
	if c := result(r, CheckEtcdV2Config); c.Outcome != Skipped || !strings.Contains(c.Evidence, "does not serve the v2 API") {
		t.Errorf("v2 check: %+v", c)
	}
	if c := result(r, CheckEtcdV2Config); c.Outcome != Skipped {
		t.Errorf("%+v", c)
	}
}

// A failing datastore skips what depends on it, naming the check that failed.
func TestSkipsAfterFailure(t *testing.T) {
	w := healthy()
	w.etcd.down = map[string]error{"http://192.0.2.254:2379": errors.New("connection refused")}
	r := w.run()
	for _, name := range []string{CheckNetworkConfig, CheckEtcdV2Config} {
		if c := result(r, name); c.Outcome != Skipped || !strings.Contains(c.Evidence, CheckEtcdEndpoints) {
			t.Errorf("%s: %+v", name, c)
		}
	}
	if c := result(r, CheckLease); c.Outcome != Skipped || !strings.Contains(c.Evidence, CheckNetworkConfig) {
		t.Errorf("lease: %+v", c)
	}
}

// An error that names its endpoint (as the etcd inspection's do) is not led by it again;
// one that does not is.
func TestEndpointNamedOnce(t *testing.T) {
	const ep = "http://192.0.2.254:2379"
	for _, c := range []struct{ err, want string }{
		{"no answer (context deadline exceeded): " + ep + ": connection refused (nothing listens on that address and port)",
			"no answer (context deadline exceeded): " + ep + ": connection refused (nothing listens on that address and port)"},
		{"connection refused", ep + ": connection refused"},
	} {
		w := healthy()
		w.etcd.down = map[string]error{ep: errors.New(c.err)}
		if got := result(w.run(), CheckEtcdEndpoints); got.Outcome != Failed || got.Evidence != c.want {
			t.Errorf("evidence %q (%s), want %q", got.Evidence, got.Outcome, c.want)
		}
	}
}

// Upstream's default endpoints list 4001 beside 2379: one of them down is no failure.
func TestDefaultEndpoints(t *testing.T) {
	w := healthy()
	w.opts.EtcdDefaultEndpoints = true
	w.etcd.endpoints = []string{"http://127.0.0.1:4001", "http://127.0.0.1:2379"}
	w.etcd.down = map[string]error{"http://127.0.0.1:4001": errors.New("connection refused")}
	r := w.run()
	if c := result(r, CheckEtcdEndpoints); c.Outcome != Passed {
		t.Errorf("%+v", c)
	}
	w.etcd.down["http://127.0.0.1:2379"] = errors.New("connection refused")
	r = w.run()
	if c := result(r, CheckEtcdEndpoints); c.Outcome != Failed || len(c.Objects) != 2 {
		t.Errorf("both down: %+v", c)
	}
}

// The sample is --peers peers at random; 0 is all.
func TestPeerSample(t *testing.T) {
	w := healthy()
	for i := 4; i <= 40; i++ {
		l := vxLease(i)
		w.etcd.leases = append(w.etcd.leases, Lease{Name: l.Key(), Lease: l})
	}
	r := w.run()
	if c := result(r, CheckPeerUnderlay); !strings.Contains(c.Evidence, "16 of 39 peers, chosen at random") {
		t.Errorf("%+v", c)
	}
	w.opts.Peers = 0
	r = w.run()
	if c := result(r, CheckPeerUnderlay); !strings.Contains(c.Evidence, "all 39 peers") {
		t.Errorf("%+v", c)
	}
}

func TestReportGolden(t *testing.T) {
	w := healthy()
	w.etcd.noConfig, w.etcd.v2 = true, netConf
	for _, tc := range []struct {
		name string
		w    *world
	}{{"healthy", healthy()}, {"v2config", w}} {
		r := tc.w.run()
		var js, text bytes.Buffer
		if err := r.WriteJSON(&js); err != nil {
			t.Fatal(err)
		}
		if err := r.WriteText(&text); err != nil {
			t.Fatal(err)
		}
		golden(t, "testdata/"+tc.name+".golden.json", js.Bytes())
		golden(t, "testdata/"+tc.name+".golden.txt", text.Bytes())
		var back Report
		if err := json.Unmarshal(js.Bytes(), &back); err != nil || back.SchemaVersion != SchemaVersion || len(back.Checks) != len(r.Checks) {
			t.Errorf("JSON does not read back: %v %+v", err, back)
		}
	}
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s changed (go test -update to accept):\n%s", path, got)
	}
}

// TestLeasesGolden lists a network with this node's lease, three good peers (one a
// reservation) and leases the daemon's rule rejects: one naming this node's address, one
// under a key that is not its subnet's, one of the wrong length, one outside the
// network, and one that does not decode.
func TestLeasesGolden(t *testing.T) {
	w := healthy()
	lease := func(name string, l subnet.Lease, rev int64) Lease {
		return Lease{Name: name, Lease: l, Origin: subnet.Origin{Name: name, Seniority: rev, Version: rev}}
	}
	with := func(sn, pub string) subnet.Lease {
		l := vxLease(9)
		l.Subnet, l.Attrs.PublicIP = netip.MustParsePrefix(sn), netip.MustParseAddr(pub)
		return l
	}
	undecodable := lease("10.5.6.0-24", subnet.Lease{EnableIPv4: true, Subnet: netip.MustParsePrefix("10.5.6.0/24")}, 6)
	undecodable.Origin.Defect = subnet.Reject(subnet.BadJSON, "invalid character 'x' looking for beginning of value")
	reservation := lease("10.5.7.0-24", vxLease(7), 7)
	reservation.Reservation = true
	w.etcd.leases = append(w.etcd.leases,
		lease("10.5.4.0-24", with("10.5.4.0/24", "192.0.2.11"), 4),
		lease("10.5.5.7-24", with("10.5.5.0/24", "192.0.2.15"), 5), // the subnet as parsed from the key
		undecodable, reservation,
		lease("10.5.8.0-25", with("10.5.8.0/25", "192.0.2.18"), 8),
		lease("10.6.0.0-24", with("10.6.0.0/24", "192.0.2.19"), 9),
	)
	r, err := ListLeases(context.Background(), NewState(w.opts, w.deps()))
	if err != nil {
		t.Fatal(err)
	}
	status := map[string]string{}
	for _, l := range r.Leases {
		status[l.Name] = l.Status + " " + l.Reason + " " + l.Detail
	}
	for name, want := range map[string]string{
		"10.5.1.0-24": "own", "10.5.2.0-24": "admitted", "10.5.3.0-24": "admitted", "10.5.7.0-24": "admitted",
		"10.5.4.0-24": "rejected " + string(subnet.LocalPublicIP), "10.5.5.7-24": "rejected " + string(subnet.NonCanonicalKey),
		"10.5.6.0-24": "rejected " + string(subnet.BadJSON), "10.5.8.0-25": "rejected " + string(subnet.WrongLength),
		"10.6.0.0-24": "rejected " + string(subnet.OutsideNetwork),
	} {
		if !strings.HasPrefix(status[name], want) {
			t.Errorf("%s: %q, want %q...", name, status[name], want)
		}
	}
	var js, text bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteText(&text, now); err != nil {
		t.Fatal(err)
	}
	golden(t, "testdata/leases.golden.json", js.Bytes())
	golden(t, "testdata/leases.golden.txt", text.Bytes())
	var back LeaseReport
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || back.SchemaVersion != SchemaVersion || len(back.Leases) != len(r.Leases) {
		t.Errorf("JSON does not read back: %v %+v", err, back)
	}
}

// TestPeersJudged: without a daemon the rule is applied here, and a rejected lease is no
// peer the kernel must hold; with a daemon that has its peers, its judgement counts.
func TestPeersJudged(t *testing.T) {
	bad := vxLease(9)
	bad.Attrs.PublicIP = netip.MustParseAddr("192.0.2.11") // this node's address
	for _, tc := range []struct {
		name   string
		daemon bool
		rej    []control.Rejected
		want   string
	}{
		{"no daemon: the rule", false, nil, "match the 2 admitted peers"},
		{"the daemon's view", true, []control.Rejected{{Key: bad.Key(), Reason: string(subnet.LocalPublicIP)}, {Key: "10.5.3.0-24", Reason: string(subnet.OverlapsPeer)}},
			"match the 1 admitted peer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := healthy()
			w.etcd.leases = append(w.etcd.leases, Lease{Name: bad.Key(), Lease: bad, Origin: subnet.Origin{Seniority: 9, Version: 9}})
			if tc.daemon {
				w.daemon.Peers = control.Peers{Synced: true, Rejected: tc.rej}
			} else {
				w.daemon = nil
			}
			s := NewState(w.opts, w.deps())
			r := Run(context.Background(), s, Checks(false))
			if c := result(r, CheckPeerObjects); !strings.Contains(c.Evidence, tc.want) {
				t.Errorf("peer-objects: %s %q, want %q", c.Outcome, c.Evidence, tc.want)
			}
			for _, l := range s.Leases() {
				if l.Name == bad.Key() && (l.Rejected == nil || l.Rejected.Reason != subnet.LocalPublicIP) {
					t.Errorf("%s: rejected %q, want %s", l.Name, l.Rejected, subnet.LocalPublicIP)
				}
			}
		})
	}
}
