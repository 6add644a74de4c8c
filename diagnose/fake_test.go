package diagnose

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/netip"
	"sort"
	"strings"
	"testing/fstest"
	"time"

	"github.com/flannel-go/flannel/pkg/claim"
	"github.com/flannel-go/flannel/pkg/control"
	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

// The fakes of a healthy three-node vxlan cluster in etcd mode, seen from node 1, which
// each test breaks in one place.

var now = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

const netConf = `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`

func vxLease(i int) subnet.Lease {
	return subnet.Lease{EnableIPv4: true, Subnet: netip.MustParsePrefix(fmt.Sprintf("10.5.%d.0/24", i)),
		Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr(fmt.Sprintf("192.0.2.%d", 10+i)), BackendType: "vxlan",
			BackendData: json.RawMessage(fmt.Sprintf(`{"VNI":1,"VtepMAC":"0e:00:00:00:00:%02x"}`, i))}}
}

type fakeEtcd struct {
	down      map[string]error
	config    string
	noConfig  bool
	v2        string
	v2Err     error
	leases    []Lease
	expiry    time.Time
	listErr   error
	endpoints []string
}

func (f *fakeEtcd) Endpoints() []string { return f.endpoints }
func (f *fakeEtcd) Health(_ context.Context, ep string) (EndpointHealth, error) {
	if err := f.down[ep]; err != nil {
		return EndpointHealth{}, err
	}
	return EndpointHealth{Version: "3.4.23", Leader: 0x8e9e05c52164694d}, nil
}
func (f *fakeEtcd) Config(context.Context) (string, bool, error) {
	if f.noConfig {
		return "", false, nil
	}
	return f.config, true, nil
}
func (f *fakeEtcd) V2Config(context.Context) (string, bool, error) {
	return f.v2, f.v2 != "", f.v2Err
}
func (f *fakeEtcd) Leases(context.Context) ([]Lease, error) {
	out := make([]Lease, len(f.leases))
	copy(out, f.leases)
	return out, f.listErr
}
func (f *fakeEtcd) Expiration(context.Context, string) (time.Time, error) { return f.expiry, nil }

type fakeBackend struct {
	missing, stale []Object
	offload        []Offload
}

func (b *fakeBackend) Type() string      { return "vxlan" }
func (b *fakeBackend) Devices() []string { return []string{"flannel.1"} }
func (b *fakeBackend) MTU() int          { return 1450 }
func (b *fakeBackend) Drift(context.Context, *subnet.Lease, []subnet.Lease) ([]Object, []Object, error) {
	return b.missing, b.stale, nil
}
func (b *fakeBackend) WireGuard(context.Context, *subnet.Lease, []subnet.Lease) (*WireGuard, error) {
	return nil, ErrUnsupported
}
func (b *fakeBackend) TxChecksum() ([]Offload, error) { return b.offload, nil }
func (b *fakeBackend) Claims() claim.Set {
	return claim.Set{Devices: []claim.Device{{Name: "flannel.1", SetBy: "Backend.VNI"}},
		Ports: []claim.Port{{Family: claim.IPv4, Port: 8472, VNI: 1, SetBy: "Backend.Port"}}}
}
func (b *fakeBackend) Encap() Encap {
	return Encap{Overhead: 50, Overhead6: 70, UDPPort: 8472, OverlayTarget: func(l subnet.Lease, v6 bool) netip.Addr {
		if v6 {
			return l.IPv6Subnet.Addr()
		}
		return l.Subnet.Addr()
	}}
}

type fakeKernel struct {
	links   []Link
	sysctls map[string]string
}

func (k *fakeKernel) Links() ([]Link, error) { return k.links, nil }
func (k *fakeKernel) Sysctl(name string) (string, error) {
	v, ok := k.sysctls[name]
	if !ok {
		return "", fs.ErrNotExist
	}
	return v, nil
}

// fakeProber answers every address except those in drop; bigDrop drops only packets
// larger than the small probes.
type fakeProber struct {
	drop    map[netip.Addr]bool
	bigDrop map[netip.Addr]bool
	err     error
}

func (p *fakeProber) Ping(_ context.Context, dst netip.Addr, size int, _ bool, _ time.Duration) (bool, error) {
	if p.err != nil {
		return false, p.err
	}
	if p.drop[dst] || size > smallProbe && p.bigDrop[dst] {
		return false, nil
	}
	return true, nil
}

// daemonConfigDoc is the network config as the daemon's status shows it: the parsed
// config's document.
func daemonConfigDoc() json.RawMessage {
	cfg, err := subnet.ParseConfig(netConf)
	if err != nil {
		panic(err)
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		panic(err)
	}
	return b
}

// world is one fake node and its datastore.
type world struct {
	opts    Options
	etcd    *fakeEtcd
	backend *fakeBackend
	kernel  *fakeKernel
	prober  *fakeProber
	files   fstest.MapFS
	daemon  *control.Status
	dErr    error
	// rulesMissing are the traffic rules the fake says are missing.
	rulesMissing []string
	// others are the other instances on the node.
	others []control.Found
}

func readiness(ready bool, name, reason string) control.Readiness {
	return control.Readiness{Ready: ready, Checks: []control.Check{{Name: name, OK: ready, Reason: reason}}}
}

const subnetEnv = "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"

func healthy() *world {
	var leases []Lease
	for i := 1; i <= 3; i++ {
		l := vxLease(i)
		leases = append(leases, Lease{Name: l.Key(), Lease: l, Origin: subnet.Origin{Seniority: int64(i), Version: int64(i)}})
	}
	own := vxLease(1)
	return &world{
		opts: Options{EtcdPrefix: "/coreos.com/network", SubnetFile: "run/flannel/subnet.env", IPMasq: true, Forward: true,
			RenewMargin: time.Hour, CNIConfDir: "etc/cni/net.d", Peers: 16, ProbeTimeout: time.Second,
			DatastoreTimeout: 5 * time.Second, Root: true},
		etcd:    &fakeEtcd{endpoints: []string{"http://192.0.2.254:2379"}, config: netConf, leases: leases, expiry: now.Add(23 * time.Hour)},
		backend: &fakeBackend{offload: []Offload{{Device: "flannel.1", On: true, Want: true, Why: "kernel 6.18 is 5.7 or newer: the kernel's default"}}},
		kernel: &fakeKernel{
			links: []Link{
				{Name: "lo", Index: 1, Type: "device", MTU: 65536, Up: true},
				{Name: "eth0", Index: 2, Type: "veth", MTU: 1500, Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.11/24")}},
				{Name: "flannel.1", Index: 3, Type: "vxlan", MTU: 1450, Up: true, VNI: 1, Port: 8472, Local: netip.MustParseAddr("192.0.2.11"),
					Addrs: []netip.Prefix{netip.MustParsePrefix("10.5.1.0/32")}},
				{Name: "cni0", Index: 4, Type: "bridge", MTU: 1450, Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("10.5.1.1/24")}},
			},
			sysctls: map[string]string{"net.ipv4.ip_forward": "1"},
		},
		prober: &fakeProber{},
		files: fstest.MapFS{
			"run/flannel/subnet.env":            {Data: []byte(subnetEnv)},
			"etc/cni/net.d/10-flannel.conflist": {Data: []byte(`{"name":"cbr0","plugins":[{"type":"flannel"},{"type":"portmap"}]}`)},
		},
		daemon: &control.Status{
			Instance: control.Instance{PID: 1234, Version: "v0.1.0", Started: now.Add(-time.Hour), Phase: control.PhaseRunning,
				Socket: "@flannel-go/etcd-prefix:/coreos.com/network", Devices: []string{"flannel.1"}},
			Config:    control.Config{Network: daemonConfigDoc()},
			Lease:     &control.Lease{Key: own.Key(), Subnet: own.Subnet, PublicIP: own.Attrs.PublicIP},
			Readiness: control.Readiness{Ready: true, Checks: []control.Check{{Name: "kernel-converged", OK: true}}},
		},
	}
}

func (w *world) deps() Deps {
	d := Deps{
		Etcd:   w.etcd,
		Kernel: w.kernel,
		Prober: w.prober,
		Now:    func() time.Time { return now },
		Daemon: func(context.Context) (*control.Status, error) {
			if w.daemon == nil {
				return nil, fmt.Errorf("control socket @flannel-go/etcd-prefix:/coreos.com/network: %w", control.ErrNotRunning)
			}
			return w.daemon, w.dErr
		},
		Instances: func(context.Context) ([]control.Found, error) { return w.others, nil },
		Iface: func(cfg *subnet.Config, pub, pub6 string) (*Iface, error) {
			i := &Iface{Name: "eth0", Index: 2, MTU: 1500, Addr: netip.MustParseAddr("192.0.2.11")}
			i.Public = i.Addr
			if pub != "" {
				i.Public = netip.MustParseAddr(pub)
			}
			return i, nil
		},
		Backend: func(*subnet.Config, *Iface) (Backend, error) { return w.backend, nil },
		Rules: func(context.Context, RuleSpec) ([]string, string, error) {
			return w.rulesMissing, "iptables", nil
		},
		ReadFile: func(name string) ([]byte, error) { return w.files.ReadFile(name) },
		ReadDir:  func(name string) ([]fs.DirEntry, error) { return w.files.ReadDir(name) },
		// The daemon's rule with the node's addresses: the fake's eth0.
		Admission: &subnet.RuleOptions{LocalAddrs: func() ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr("192.0.2.11")}, nil
		}},
	}
	return d
}

func (w *world) run() *Report {
	return Run(context.Background(), NewState(w.opts, w.deps()), Checks(w.opts.Kube))
}

// outcomes renders each check as "name=outcome" for compact comparisons.
func outcomes(r *Report) string {
	var out []string
	for _, c := range r.Checks {
		out = append(out, c.Name+"="+string(c.Outcome))
	}
	return strings.Join(out, " ")
}

func result(r *Report, name string) Result {
	for _, c := range r.Checks {
		if c.Name == name {
			return c
		}
	}
	return Result{}
}

func failedNames(r *Report) []string {
	var out []string
	for _, c := range r.Checks {
		if c.Outcome == Failed {
			out = append(out, c.Name)
		}
	}
	sort.Strings(out)
	return out
}

func drift(kind observe.Kind, text string) Object { return Object{Kind: kind, Text: text} }
