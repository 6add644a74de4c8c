// Command flanneld is the flannel daemon; main only wires options, managers, backends and daemon.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	sdaemon "github.com/coreos/go-systemd/v22/daemon"
	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/daemon"
	"github.com/flannel-go/flannel/pkg/control"
	"github.com/flannel-go/flannel/pkg/forwarding"
	"github.com/flannel-go/flannel/pkg/instancelock"
	"github.com/flannel-go/flannel/pkg/ipmatch"
	"github.com/flannel-go/flannel/pkg/kernelwatch"
	"github.com/flannel-go/flannel/pkg/metrics"
	"github.com/flannel-go/flannel/pkg/subnetenv"
	"github.com/flannel-go/flannel/pkg/timerslack"
	"github.com/flannel-go/flannel/pkg/trafficrules"
	"github.com/flannel-go/flannel/subnet"
	"github.com/flannel-go/flannel/subnet/etcd"
	"github.com/flannel-go/flannel/subnet/kube"
)

// The Kubernetes manager's node-public-ip annotations reach the interface lookup.
var _ subnet.PublicIPSource = (*kube.Manager)(nil)

// version is set at build time: -ldflags "-X main.version=v0.1.0".
var version = "dev"

func main() {
	os.Exit(run())
}

// defaultGCPercent is the GC headroom without GOGC: half Go's default, which lowers the peak
// heap at 20,000 peers by about 3 MB for a few more collections (configuration.md#memory).
const defaultGCPercent = 50

// setGCPercent applies defaultGCPercent unless GOGC is non-empty; returns the percentage (-1: off).
func setGCPercent(lookup func(string) (string, bool)) int {
	if v, _ := lookup("GOGC"); v != "" {
		p := debug.SetGCPercent(100) // reads the setting; put back at once
		debug.SetGCPercent(p)
		return p
	}
	debug.SetGCPercent(defaultGCPercent)
	return defaultGCPercent
}

func run() int {
	if len(os.Args) > 1 && (os.Args[1] == cmdDiagnose || os.Args[1] == cmdLeases) {
		return runTool(os.Args[1], os.Args[2:])
	}
	opts, err := parseOptions(os.Args[1:], os.LookupEnv, os.Stderr)
	switch {
	case errors.Is(err, errHelp):
		usage(os.Stdout)
		return 0
	case errors.Is(err, errVersion):
		fmt.Fprintln(os.Stderr, version) // stderr, as upstream
		return 0
	case err != nil:
		fmt.Fprintf(os.Stderr, "flanneld: %v\n", err)
		return 2
	}
	// Before any goroutine, file or log of ours: on success this executes the binary again.
	slackErr := timerslack.Ensure(opts.TimerSlack)
	defer klog.Flush()
	gcPercent := setGCPercent(os.LookupEnv)
	logStart(version, opts, gcPercent)
	warnUnknownVariables(os.Environ())
	if slackErr != nil {
		klog.InfoS("Keeping the inherited timer slack; the Go runtime's monitor thread wakes more often under load", "err", slackErr)
	}

	// One instance per network and node: two would fight over the same kernel state.
	keys := instanceLockKeys(opts)
	var control0 *instancelock.Lock
	var ownSockets []string // not another instance's
	for _, key := range keys {
		lock, err := instancelock.Acquire(key)
		if errors.Is(err, instancelock.ErrSquatted) {
			klog.ErrorS(err, "Refusing to start: a process that is not a flanneld holds the instance lock's socket name")
			return 1
		}
		if err != nil {
			klog.ErrorS(err, "Refusing to start: another flanneld already runs for this network in this network namespace")
			return 1
		}
		defer lock.Release()
		ownSockets = append(ownSockets, lock.SocketName())
		if control0 == nil {
			control0 = lock
		}
	}
	status, err := newStatus(opts, keys, control0.SocketName())
	if err != nil {
		klog.ErrorS(err, "Failed to set up the control socket")
		return 1
	}
	control0.Serve((&control.Server{Status: status.Get}).Handle)

	prev, _ := subnetenv.Read(opts.SubnetFile)
	prevSubnet, ok := subnetenv.PrefixValue(prev, "FLANNEL_SUBNET")
	if !ok {
		klog.InfoS("No previous subnet found", "key", "FLANNEL_SUBNET", "file", opts.SubnetFile)
	}
	prevV6Subnet, _ := subnetenv.PrefixValue(prev, "FLANNEL_IPV6_SUBNET")
	admission := admissionOptions(opts)
	sm, closeSM, err := newSubnetManager(opts, admission, prevSubnet, prevV6Subnet)
	if err != nil {
		klog.ErrorS(err, "Failed to create SubnetManager")
		return 1
	}
	defer closeSM()
	klog.InfoS("Created subnet manager", "name", sm.Name())

	// A second SIGINT/SIGTERM, once stop() restored the default action, ends the process at once.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	go func() { <-ctx.Done(); stop() }()

	// Traffic rules from the previous subnet file are stale if the network or subnet changed.
	prevNetwork, _ := subnetenv.PrefixValue(prev, "FLANNEL_NETWORK")
	prevV6Network, _ := subnetenv.PrefixValue(prev, "FLANNEL_IPV6_NETWORK")
	rules := trafficrules.New(trafficrules.Options{
		Masquerade:         opts.IPMasq,
		RandomFullyDisable: opts.IPMasqFullyRandomDisable,
		Forward:            opts.IPTablesForwardRules,
		Blackhole:          opts.IPBlackholeRoute,
		Resync:             opts.IPTablesResync,
		PrevNetwork:        prevNetwork,
		PrevSubnet:         prevSubnet,
		PrevIPv6Network:    prevV6Network,
		PrevIPv6Subnet:     prevV6Subnet,
	})

	reg := backends(opts)
	err = daemon.Run(ctx, daemonConfig(opts), daemon.Deps{
		Manager:            sm,
		Backends:           reg.Constructors,
		CheckBackendConfig: reg.CheckConfig,
		Leftovers:          reg.Leftovers,
		LookupExtIface: func(cfg *subnet.Config) (*backend.ExternalInterface, error) {
			publicIP, publicIPv6 := opts.PublicIP, opts.PublicIPv6
			if ps, ok := sm.(subnet.PublicIPSource); ok {
				// The node-public-ip(v6) annotations replace --public-ip(v6), as upstream.
				publicIP, publicIPv6 = ps.PublicIPs(publicIP, publicIPv6)
			}
			ext, err := ipmatch.LookupExtIface(ipmatch.Options{
				Ifaces:        opts.Iface,
				IfaceRegexes:  opts.IfaceRegex,
				IfaceCanReach: opts.IfaceCanReach,
				PublicIP:      publicIP,
				PublicIPv6:    publicIPv6,
				EnableIPv4:    cfg.EnableIPv4,
				EnableIPv6:    cfg.EnableIPv6,
			})
			if err != nil {
				return nil, err
			}
			return &backend.ExternalInterface{Iface: ext.Iface, IfaceAddr: ext.IfaceAddr, IfaceV6Addr: ext.IfaceV6Addr,
				ExtAddr: ext.ExtAddr, ExtV6Addr: ext.ExtV6Addr}, nil
		},
		Notify: func(state string) error {
			_, err := sdaemon.SdNotify(false, state) // nothing when $NOTIFY_SOCKET is unset
			return err
		},
		TrafficRules: rules,
		Metrics:      metrics.New(),
		ReadSysctl:   forwarding.Sysctl,
		KernelWatch: func(ctx context.Context, f kernelwatch.Filter, kick func()) error {
			return kernelwatch.Run(ctx, kernelwatch.Config{Filter: f}, kick)
		},
		Status: status,
		Instances: func(ctx context.Context) ([]control.Found, error) {
			return control.Instances(ctx, ownSockets)
		},
		Admission: admission,
	})
	var conflict *daemon.ConflictError
	if errors.As(err, &conflict) {
		klog.ErrorS(err, "Refusing to start: another flanneld in this network namespace claims what this network's config asks for")
		return 1
	}
	if err != nil {
		klog.ErrorS(err, "flanneld stopped")
		return 1
	}
	klog.InfoS("Exiting cleanly")
	return 0
}

// newStatus is the control socket's status of this instance, before the daemon runs.
func newStatus(opts Options, keys []string, socket string) (*daemon.Status, error) {
	options, err := json.Marshal(opts.LogSafe())
	if err != nil {
		return nil, fmt.Errorf("encoding the options: %w", err)
	}
	datastore := "etcd"
	if opts.KubeSubnetMgr {
		datastore = "kube"
	}
	subnetFile := opts.SubnetFile
	if abs, err := filepath.Abs(subnetFile); err == nil {
		subnetFile = abs
	}
	return daemon.NewStatus(control.Status{
		Instance: control.Instance{PID: os.Getpid(), Version: version, Started: time.Now(), Socket: socket, Locks: keys,
			Datastore: datastore, SubnetFile: subnetFile},
		Config: control.Config{Options: options},
	}), nil
}

func daemonConfig(opts Options) daemon.Config {
	dc := daemon.Config{SubnetFile: opts.SubnetFile, IPMasq: opts.IPMasq, RenewMargin: opts.SubnetLeaseRenewMargin}
	if opts.HealthzPort > 0 {
		dc.HealthzAddr = net.JoinHostPort(opts.HealthzIP, strconv.Itoa(opts.HealthzPort))
	}
	return dc
}

// admissionOptions wires the admission rule: backends' data checks and keys, addresses, mode.
func admissionOptions(opts Options) subnet.RuleOptions {
	reg := backends(opts)
	return subnet.RuleOptions{
		Kube:        opts.KubeSubnetMgr,
		BackendData: reg.BackendData,
		BackendKey:  reg.BackendKey,
		LocalAddrs:  subnet.InterfaceAddrs,
	}
}

// newSubnetManager builds the etcd or (--kube-subnet-mgr) Kubernetes manager and its release.
func newSubnetManager(opts Options, admission subnet.RuleOptions, prevSubnet, prevV6Subnet netip.Prefix) (subnet.Manager, func(), error) {
	if opts.KubeSubnetMgr {
		sm, err := kube.New(kube.Config{
			APIURL:                    opts.KubeAPIURL,
			KubeconfigFile:            opts.KubeConfigFile,
			ExecPluginAllowlist:       opts.KubeExecPluginAllowlist,
			UserAgent:                 "flannel-go/" + version,
			AnnotationPrefix:          opts.KubeAnnotationPrefix,
			NetConfigPath:             opts.NetConfigPath,
			SetNodeNetworkUnavailable: opts.SetNodeNetworkUnavailable,
			NodeName:                  os.Getenv("NODE_NAME"),
			PodName:                   os.Getenv("POD_NAME"),
			PodNamespace:              os.Getenv("POD_NAMESPACE"),
		})
		if err != nil {
			return nil, nil, err
		}
		return sm, func() {}, nil
	}
	sm, err := etcd.New(etcd.Config{
		Endpoints:      opts.EtcdEndpoints,
		Prefix:         opts.EtcdPrefix,
		KeyFile:        opts.EtcdKeyfile,
		CertFile:       opts.EtcdCertfile,
		CAFile:         opts.EtcdCAFile,
		Username:       opts.EtcdUsername,
		Password:       opts.EtcdPassword,
		PrevSubnet:     prevSubnet,
		PrevIPv6Subnet: prevV6Subnet,
		RenewMargin:    opts.SubnetLeaseRenewMargin,
		Admission:      admission,
	})
	if err != nil {
		return nil, nil, err
	}
	return sm, func() { sm.Close() }, nil
}

// instanceLockKeys names what an instance locks for its lifetime: its datastore network and its
// subnet file. The first lock's socket is the control socket, which `flanneld diagnose` finds.
func instanceLockKeys(opts Options) []string {
	network := "etcd-prefix:" + path.Clean("/"+opts.EtcdPrefix)
	if opts.KubeSubnetMgr {
		network = "kube-subnet-mgr"
	}
	file := opts.SubnetFile
	if abs, err := filepath.Abs(file); err == nil {
		file = abs
	}
	return []string{network, "subnet-file:" + file}
}
