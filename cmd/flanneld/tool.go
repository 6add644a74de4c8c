package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/backend/udp"
	"github.com/flannel-go/flannel/backend/vxlan"
	"github.com/flannel-go/flannel/backend/wireguard"
	"github.com/flannel-go/flannel/diagnose"
	"github.com/flannel-go/flannel/pkg/claim"
	"github.com/flannel-go/flannel/pkg/control"
	"github.com/flannel-go/flannel/pkg/instancelock"
	"github.com/flannel-go/flannel/pkg/ip"
	"github.com/flannel-go/flannel/pkg/ipmatch"
	"github.com/flannel-go/flannel/pkg/trafficrules"
	"github.com/flannel-go/flannel/subnet"
	"github.com/flannel-go/flannel/subnet/etcd"
	"github.com/flannel-go/flannel/subnet/kube"
)

// runTool runs subcommand cmd (diagnose, leases) with args and returns the exit status.
func runTool(cmd string, args []string) int {
	opts, t, err := parseCommand(cmd, args, os.LookupEnv, os.Stderr)
	switch {
	case errors.Is(err, errHelp):
		usageOf(os.Stdout, cmd)
		return 0
	case errors.Is(err, errVersion):
		fmt.Fprintln(os.Stderr, version)
		return 0
	case err != nil:
		fmt.Fprintf(os.Stderr, "flanneld %s: %v\n", cmd, err)
		return diagnose.ExitUsage
	}
	defer klog.Flush()
	quietKlog()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	deps, closeDeps := toolDeps(ctx, opts)
	defer closeDeps()
	s := diagnose.NewState(diagnose.Options{
		Kube: opts.KubeSubnetMgr, EtcdPrefix: opts.EtcdPrefix, EtcdDefaultEndpoints: !t.EtcdEndpointsGiven,
		SubnetFile: opts.SubnetFile, PublicIP: opts.PublicIP, PublicIPv6: opts.PublicIPv6,
		IPMasq: opts.IPMasq, Forward: opts.IPTablesForwardRules, RenewMargin: opts.SubnetLeaseRenewMargin,
		CNIConfDir: t.CNIConfDir, Peers: t.Peers, ProbeTimeout: t.ProbeTimeout, DatastoreTimeout: t.DatastoreTimeout,
		Root: os.Geteuid() == 0,
	}, deps)

	if cmd == cmdLeases {
		r, err := diagnose.ListLeases(ctx, s)
		if err != nil {
			fmt.Fprintf(os.Stderr, "flanneld leases: %v\n", err)
			return 1
		}
		if t.JSON {
			err = r.WriteJSON(os.Stdout)
		} else {
			err = r.WriteText(os.Stdout, time.Now())
		}
		if err != nil {
			return 1
		}
		return 0
	}
	r := diagnose.Run(ctx, s, diagnose.Checks(opts.KubeSubnetMgr))
	if t.JSON {
		err = r.WriteJSON(os.Stdout)
	} else {
		err = r.WriteText(os.Stdout)
	}
	if err != nil {
		return diagnose.ExitFailed
	}
	return r.ExitStatus()
}

// quietKlog keeps the libraries' log lines out of the report unless -v asked for them.
func quietKlog() {
	if klog.V(1).Enabled() {
		return
	}
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	klog.InitFlags(fs)
	for k, v := range map[string]string{"logtostderr": "false", "alsologtostderr": "false", "stderrthreshold": "FATAL"} {
		_ = fs.Set(k, v)
	}
	klog.SetOutput(io.Discard)
}

// toolDeps wires the selected node and datastore into the checks' read-only parts, and a release.
func toolDeps(ctx context.Context, opts Options) (diagnose.Deps, func()) {
	backends := backends(opts).Constructors
	admission := admissionOptions(opts)
	d := diagnose.Deps{
		Daemon: func(ctx context.Context) (*control.Status, error) {
			return control.Query(ctx, instanceLockKeys(opts)[0])
		},
		Instances: func(ctx context.Context) ([]control.Found, error) {
			var own []string
			for _, k := range instanceLockKeys(opts) {
				own = append(own, instancelock.Name(k))
			}
			return control.Instances(ctx, own)
		},
		Iface: func(cfg *subnet.Config, pub, pub6 string) (*diagnose.Iface, error) {
			ext, err := ipmatch.LookupExtIface(ipmatch.Options{Ifaces: opts.Iface, IfaceRegexes: opts.IfaceRegex,
				IfaceCanReach: opts.IfaceCanReach, PublicIP: pub, PublicIPv6: pub6, EnableIPv4: cfg.EnableIPv4, EnableIPv6: cfg.EnableIPv6})
			if err != nil {
				return nil, err
			}
			return &diagnose.Iface{Name: ext.Iface.Name, Index: ext.Iface.Index, MTU: ext.Iface.MTU,
				Addr: ext.IfaceAddr, Addr6: ext.IfaceV6Addr, Public: ext.ExtAddr, Public6: ext.ExtV6Addr}, nil
		},
		Backend: func(cfg *subnet.Config, i *diagnose.Iface) (diagnose.Backend, error) {
			newBackend, ok := backends[cfg.BackendType]
			if !ok {
				return nil, fmt.Errorf("unknown backend type %q", cfg.BackendType)
			}
			iface, err := net.InterfaceByIndex(i.Index)
			if err != nil {
				return nil, err
			}
			b, err := newBackend(&backend.ExternalInterface{Iface: iface, IfaceAddr: i.Addr, IfaceV6Addr: i.Addr6,
				ExtAddr: i.Public, ExtV6Addr: i.Public6}, cfg)
			if err != nil {
				return nil, err
			}
			return backendView{typ: cfg.BackendType, b: b}, nil
		},
		Rules: func(ctx context.Context, r diagnose.RuleSpec) ([]string, string, error) {
			m := trafficrules.New(trafficrules.Options{Masquerade: opts.IPMasq, RandomFullyDisable: opts.IPMasqFullyRandomDisable,
				Forward: opts.IPTablesForwardRules})
			return m.Missing(ctx, trafficrules.Networks{NFTables: r.NFTables, Network: r.Network, Subnet: r.Subnet,
				IPv6Network: r.IPv6Network, IPv6Subnet: r.IPv6Subnet})
		},
		Admission: &admission,
		Kernel:    diagnose.NetlinkKernel{},
		Prober:    diagnose.NewICMPProber(ctx),
		ReadFile:  os.ReadFile,
		ReadDir:   os.ReadDir,
		Now:       time.Now,
		Shuffle:   rand.Shuffle,
	}
	if opts.KubeSubnetMgr {
		m, err := kube.New(kube.Config{APIURL: opts.KubeAPIURL, KubeconfigFile: opts.KubeConfigFile,
			ExecPluginAllowlist: opts.KubeExecPluginAllowlist, UserAgent: "flannel-go/" + version + " (diagnose)",
			AnnotationPrefix: opts.KubeAnnotationPrefix, NetConfigPath: opts.NetConfigPath,
			NodeName: os.Getenv("NODE_NAME"), PodName: os.Getenv("POD_NAME"), PodNamespace: os.Getenv("POD_NAMESPACE")})
		if err != nil {
			d.StoreErr = err
		} else {
			d.Kube = kubeStore{m}
		}
		return d, func() {}
	}
	m, err := etcd.New(etcd.Config{Endpoints: opts.EtcdEndpoints, Prefix: opts.EtcdPrefix, KeyFile: opts.EtcdKeyfile,
		CertFile: opts.EtcdCertfile, CAFile: opts.EtcdCAFile, Username: opts.EtcdUsername, Password: opts.EtcdPassword})
	if err != nil {
		d.StoreErr = err
		return d, func() {}
	}
	d.Etcd = etcdStore{m}
	return d, func() { m.Close() }
}

// etcdStore is the etcd manager's inspection as the checks read it.
type etcdStore struct{ m *etcd.Manager }

func (e etcdStore) Endpoints() []string { return e.m.Endpoints() }

func (e etcdStore) Health(ctx context.Context, ep string) (diagnose.EndpointHealth, error) {
	st, err := e.m.Status(ctx, ep)
	return diagnose.EndpointHealth{Version: st.Version, Leader: st.Leader, Errors: st.Errors}, err
}

func (e etcdStore) Config(ctx context.Context) (string, bool, error) { return e.m.ConfigText(ctx) }

func (e etcdStore) V2Config(ctx context.Context) (string, bool, error) {
	text, found, err := e.m.V2ConfigText(ctx)
	if errors.Is(err, etcd.ErrNoV2) {
		err = fmt.Errorf("%w: %v", diagnose.ErrNoV2, err)
	}
	return text, found, err
}

func (e etcdStore) Leases(ctx context.Context) ([]diagnose.Lease, error) {
	ls, err := e.m.List(ctx)
	out := make([]diagnose.Lease, 0, len(ls))
	for _, l := range ls {
		out = append(out, diagnose.Lease{Name: l.Name, Lease: l.Lease, Reservation: l.Reservation, Origin: l.Origin})
	}
	return out, err
}

func (e etcdStore) Expiration(ctx context.Context, name string) (time.Time, error) {
	return e.m.Expiration(ctx, name)
}

// kubeStore is the Kubernetes manager's inspection as the checks read it.
type kubeStore struct{ m *kube.Manager }

func (k kubeStore) Server() string                               { return k.m.Server() }
func (k kubeStore) Version(ctx context.Context) (string, error)  { return k.m.ServerVersion(ctx) }
func (k kubeStore) NodeName(ctx context.Context) (string, error) { return k.m.NodeName(ctx) }
func (k kubeStore) NetConfig() (path, text string, err error)    { return k.m.NetConfigText() }
func (k kubeStore) Allowed(ctx context.Context, a diagnose.Access) (bool, string, error) {
	return k.m.Allowed(ctx, kube.Access{Verb: a.Verb, Resource: a.Resource, Subresource: a.Subresource, Namespace: a.Namespace, Name: a.Name})
}

func (k kubeStore) Node(ctx context.Context, name string, cfg *subnet.Config) (*diagnose.Node, bool, error) {
	n, found, err := k.m.InspectNode(ctx, name, cfgOrIPv4(cfg))
	if err != nil || !found {
		return nil, found, err
	}
	return &diagnose.Node{Name: n.Name, PodCIDRs: n.PodCIDRs, Lease: n.Lease, HasLease: n.Managed && n.Origin.Defect == nil,
		PublicIPOverwrite: n.PublicIPOverwrite, PublicIPv6Overwrite: n.PublicIPv6Overwrite,
		NodePublicIP: n.NodePublicIP, NodePublicIPv6: n.NodePublicIPv6}, true, nil
}

func (k kubeStore) Leases(ctx context.Context, cfg *subnet.Config) ([]diagnose.Lease, error) {
	ns, err := k.m.InspectNodes(ctx, cfgOrIPv4(cfg))
	var out []diagnose.Lease
	for _, n := range ns {
		if !n.Managed {
			continue // not a flannel node (yet)
		}
		out = append(out, diagnose.Lease{Name: n.Name, Lease: n.Lease, Origin: n.Origin})
	}
	return out, err
}

func cfgOrIPv4(cfg *subnet.Config) *subnet.Config {
	if cfg == nil {
		return &subnet.Config{EnableIPv4: true}
	}
	return cfg
}

// backendView is a backend made by its constructor, never prepared or started.
type backendView struct {
	typ string
	b   backend.Backend
}

func (v backendView) Type() string { return v.typ }

func (v backendView) Devices() []string {
	if n, ok := v.b.(backend.Network); ok {
		if d := n.Devices(); len(d) > 0 {
			return d
		}
	}
	if v.typ == udp.BackendType {
		return []string{"flannel0"} // the kernel's first free name; the TUN lives while flanneld runs
	}
	return nil
}

func (v backendView) MTU() int {
	if n, ok := v.b.(backend.Network); ok {
		return n.MTU()
	}
	return 0
}

func (v backendView) Drift(ctx context.Context, own *subnet.Lease, peers []subnet.Lease) (missing, stale []diagnose.Object, err error) {
	dr, ok := v.b.(backend.DriftReader)
	if !ok {
		return nil, nil, diagnose.ErrUnsupported
	}
	d, err := dr.Drift(ctx, own, subnet.PeersOf(peers...))
	objs := func(in []backend.Object) []diagnose.Object {
		out := make([]diagnose.Object, 0, len(in))
		for _, o := range in {
			out = append(out, diagnose.Object{Kind: o.Kind, Text: o.String()})
		}
		return out
	}
	return objs(d.Missing), objs(d.Stale), err
}

func (v backendView) WireGuard(ctx context.Context, own *subnet.Lease, peers []subnet.Lease) (*diagnose.WireGuard, error) {
	b, ok := v.b.(*wireguard.Backend)
	if !ok {
		return nil, diagnose.ErrUnsupported
	}
	devs, want, err := b.Inspect(ctx, own, subnet.PeersOf(peers...))
	if err != nil {
		return nil, err
	}
	out := &diagnose.WireGuard{}
	for _, d := range devs {
		od := diagnose.WGDevice{Name: d.Name, Implementation: d.Implementation, Err: d.Err, ListenPort: d.ListenPort, PublicKey: d.PublicKey}
		for _, p := range d.Peers {
			od.Peers = append(od.Peers, diagnose.WGPeer{PublicKey: p.PublicKey, Endpoint: p.Endpoint, LastHandshake: p.LastHandshake})
		}
		out.Devices = append(out.Devices, od)
	}
	for _, w := range want {
		out.Want = append(out.Want, diagnose.WGPeerWant{Lease: w.Lease, Device: w.Device, PublicKey: w.PublicKey, AllowedIPs: w.AllowedIPs})
	}
	return out, nil
}

func (v backendView) Claims() claim.Set {
	if c, ok := v.b.(backend.Claimer); ok {
		return c.Claims()
	}
	return claim.Set{}
}

func (v backendView) TxChecksum() ([]diagnose.Offload, error) {
	vx, ok := v.b.(*vxlan.Backend)
	if !ok {
		return nil, diagnose.ErrUnsupported
	}
	st, err := vx.TxChecksum()
	out := make([]diagnose.Offload, 0, len(st))
	for _, s := range st {
		out = append(out, diagnose.Offload{Device: s.Device, On: s.On, Want: s.Want, Decided: s.Decided, Why: s.Why})
	}
	return out, err
}

func (v backendView) Encap() diagnose.Encap {
	network := func(l subnet.Lease, v6 bool) netip.Addr {
		if sn, ok := l.FamilySubnet(v6); ok {
			return sn.Addr()
		}
		return netip.Addr{}
	}
	switch b := v.b.(type) {
	case *vxlan.Backend:
		return diagnose.Encap{Overhead: vxlan.Overhead, Overhead6: vxlan.Overhead6, UDPPort: b.UDPPort(), OverlayTarget: network}
	case *udp.Backend:
		return diagnose.Encap{Overhead: udp.Overhead, UDPPort: b.UDPPort(), OverlayTarget: network}
	case *wireguard.Backend:
		// the peer's device holds its subnet's network address
		return diagnose.Encap{Overhead: wireguard.Overhead, Overhead6: wireguard.Overhead, UDPPort: b.Config().ListenPort,
			WireGuard: true, OverlayTarget: network}
	}
	// host-gw: the peer's bridge holds the first address of its subnet.
	return diagnose.Encap{OverlayTarget: func(l subnet.Lease, v6 bool) netip.Addr {
		if sn, ok := l.FamilySubnet(v6); ok {
			return ip.FirstHost(sn).Addr()
		}
		return netip.Addr{}
	}}
}
