package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/pkg/redact"
	"github.com/flannel-go/flannel/subnet/kube"
)

// errHelp is returned by parseOptions for -h/--help: print usage and exit 0.
var errHelp = errors.New("help requested")

// errVersion is returned by parseOptions for --version: print the version to stderr and exit 0.
var errVersion = errors.New("version requested")

// envPrefix names the variables that fill flags not given (FLANNELD_ETCD_ENDPOINTS).
const envPrefix = "FLANNELD"

// Defaults that validation compares against.
const (
	defaultEtcdEndpoints   = "http://127.0.0.1:4001,http://127.0.0.1:2379"
	defaultRenewMarginMin  = 60
	defaultIPTablesResyncS = 5
	maxRenewMarginMin      = 1439 // a lease lives 24 h; the margin must leave time to renew
	// defaultTimerSlack lets the Go runtime's monitor thread sleep 1 ms instead of 20 µs while
	// the userspace data paths sit in system calls (pkg/timerslack).
	defaultTimerSlack = time.Millisecond
)

// klogFlagDefault is a klog flag's value when not given, so every parse fully determines klog.
func klogFlagDefault(name string) string {
	if name == "v" {
		return "0"
	}
	return ""
}

// deferredValue holds a klog flag's text until the parse succeeded: a failed one leaves klog be.
type deferredValue struct {
	text     string
	typeName string
}

func (d *deferredValue) String() string     { return d.text }
func (d *deferredValue) Set(s string) error { d.text = s; return nil }
func (d *deferredValue) Type() string       { return d.typeName }

// Options are flanneld's settings from flags and FLANNELD_* variables, named after the flags.
type Options struct {
	EtcdEndpoints             []string // --etcd-endpoints, split on ","
	EtcdPrefix                string   // --etcd-prefix
	EtcdKeyfile               string
	EtcdCertfile              string
	EtcdCAFile                string
	EtcdUsername              string
	EtcdPassword              string   // never logged
	Iface                     []string // --iface (repeatable): names or IPs
	IfaceRegex                []string // --iface-regex (repeatable)
	IfaceCanReach             string
	SubnetFile                string
	PublicIP                  string
	PublicIPv6                string
	SubnetLeaseRenewMargin    time.Duration // --subnet-lease-renew-margin (minutes on the command line)
	IPMasq                    bool
	IPMasqFullyRandomDisable  bool
	KubeSubnetMgr             bool
	KubeAPIURL                string
	KubeAnnotationPrefix      string
	KubeConfigFile            string
	KubeExecPluginAllowlist   []string // --kube-exec-plugin-allowlist (flannel-go only), split on ","
	HealthzIP                 string
	HealthzPort               int
	IPTablesResync            time.Duration // --iptables-resync (seconds on the command line)
	IPTablesForwardRules      bool
	IPBlackholeRoute          bool
	NetConfigPath             string
	SetNodeNetworkUnavailable bool
	TimerSlack                time.Duration // --timer-slack (flannel-go only); 0: the inherited slack
}

// LogSafe returns a copy for logs: the etcd password and any URL's user information masked.
func (o Options) LogSafe() Options {
	if o.EtcdPassword != "" {
		o.EtcdPassword = "<redacted>"
	}
	o.EtcdEndpoints = redact.URLs(o.EtcdEndpoints)
	o.KubeAPIURL = redact.URL(o.KubeAPIURL)
	return o
}

// rawOptions are the values pflag writes into before they are checked and converted.
type rawOptions struct {
	opts           Options
	etcdEndpoints  string
	renewMarginMin int
	iptablesResync int
	version        bool
	klog           map[string]*deferredValue
}

// newFlagSet defines every flanneld flag (names and defaults as upstream) on a fresh set.
func newFlagSet(r *rawOptions) *pflag.FlagSet {
	fs := pflag.NewFlagSet("flanneld", pflag.ContinueOnError)
	fs.SortFlags = true
	fs.Usage = func() {} // the caller decides what to print

	o := &r.opts
	fs.StringVar(&r.etcdEndpoints, "etcd-endpoints", defaultEtcdEndpoints, "comma-separated list of etcd v3 endpoints")
	fs.StringVar(&o.EtcdPrefix, "etcd-prefix", "/coreos.com/network", "etcd key prefix holding config and subnets/")
	fs.StringVar(&o.EtcdKeyfile, "etcd-keyfile", "", "TLS client key for etcd")
	fs.StringVar(&o.EtcdCertfile, "etcd-certfile", "", "TLS client certificate for etcd")
	fs.StringVar(&o.EtcdCAFile, "etcd-cafile", "", "CA bundle that verifies etcd's certificate (https:// endpoints; alone or with --etcd-certfile and --etcd-keyfile)")
	fs.StringVar(&o.EtcdUsername, "etcd-username", "", "etcd user name")
	fs.StringVar(&o.EtcdPassword, "etcd-password", "", "etcd password")
	fs.StringArrayVar(&o.Iface, "iface", nil, "interface name or IP address for inter-host traffic; repeat to give candidates in order")
	fs.StringArrayVar(&o.IfaceRegex, "iface-regex", nil, "regular expression matched against interface addresses, then names; repeatable, tried after --iface")
	fs.StringVar(&o.IfaceCanReach, "iface-can-reach", "", "use the interface (and source address) the kernel routes this IP address through; tried last")
	fs.StringVar(&o.SubnetFile, "subnet-file", "/run/flannel/subnet.env", "file the subnet settings are written to")
	fs.StringVar(&o.PublicIP, "public-ip", "", "IPv4 address other nodes use to reach this node")
	fs.StringVar(&o.PublicIPv6, "public-ipv6", "", "IPv6 address other nodes use to reach this node")
	fs.IntVar(&r.renewMarginMin, "subnet-lease-renew-margin", defaultRenewMarginMin, "minutes before the lease expires at which it is renewed (1..1439)")
	fs.BoolVar(&o.IPMasq, "ip-masq", false, "masquerade traffic leaving the flannel network")
	fs.BoolVar(&o.IPMasqFullyRandomDisable, "ip-masq-fully-random-disable", false, "do not use fully random source ports when masquerading")
	fs.BoolVar(&o.KubeSubnetMgr, "kube-subnet-mgr", false, "take subnets from the Kubernetes API instead of etcd")
	fs.StringVar(&o.KubeAPIURL, "kube-api-url", "", "Kubernetes API server URL (Kubernetes mode only)")
	fs.StringVar(&o.KubeAnnotationPrefix, "kube-annotation-prefix", "flannel.alpha.coreos.com", "prefix of the node annotations (Kubernetes mode only)")
	fs.StringVar(&o.KubeConfigFile, "kubeconfig-file", "", "kubeconfig path (Kubernetes mode only)")
	fs.StringSliceVar(&o.KubeExecPluginAllowlist, "kube-exec-plugin-allowlist", nil, "comma-separated exec credential plugins a kubeconfig may run (command names or paths); empty: any (Kubernetes mode only)")
	fs.BoolVar(&r.version, "version", false, "print the version and exit")
	fs.StringVar(&o.HealthzIP, "healthz-ip", "0.0.0.0", "address the health endpoints listen on")
	fs.IntVar(&o.HealthzPort, "healthz-port", 0, "port of the health endpoints; 0 disables them")
	fs.IntVar(&r.iptablesResync, "iptables-resync", defaultIPTablesResyncS, "seconds between checks of the traffic rules")
	fs.BoolVar(&o.IPTablesForwardRules, "iptables-forward-rules", true, "accept forwarded traffic of the flannel network")
	fs.BoolVar(&o.IPBlackholeRoute, "ip-blackhole-route", false, "keep a blackhole route for this node's subnet")
	fs.StringVar(&o.NetConfigPath, "net-config-path", "/etc/kube-flannel/net-conf.json", "network config file (Kubernetes mode only)")
	fs.BoolVar(&o.SetNodeNetworkUnavailable, "set-node-network-unavailable", true, "set the node's NetworkUnavailable condition (Kubernetes mode only)")
	fs.DurationVar(&o.TimerSlack, "timer-slack", defaultTimerSlack, "timer slack of every daemon thread (applied by executing the binary once at start); 0 keeps the inherited slack")

	r.klog = map[string]*deferredValue{
		"v":                {text: klogFlagDefault("v"), typeName: "level"},
		"vmodule":          {text: klogFlagDefault("vmodule"), typeName: "pattern=N,..."},
		"log_backtrace_at": {text: klogFlagDefault("log_backtrace_at"), typeName: "file:N"},
	}
	fs.Var(r.klog["v"], "v", "log verbosity level")
	fs.Var(r.klog["vmodule"], "vmodule", "per-file log verbosity, comma-separated pattern=N")
	fs.Var(r.klog["log_backtrace_at"], "log_backtrace_at", "emit a stack trace when logging at file:N")
	return fs
}

func usage(w io.Writer) { usageOf(w, "") }

// usageOf writes the usage of the daemon (cmd "") or a subcommand.
func usageOf(w io.Writer, cmd string) {
	var r rawOptions
	fs := newFlagSet(&r)
	if cmd != "" {
		var tr rawToolOptions
		defineToolFlags(fs, cmd, &tr)
		fmt.Fprintf(w, "Usage: flanneld %s [OPTION]...\n", cmd)
		fmt.Fprintln(w, toolSummary[cmd])
	} else {
		fmt.Fprintln(w, "Usage: flanneld [OPTION]...")
		fmt.Fprintln(w, "       flanneld diagnose [OPTION]...  (flanneld diagnose --help)")
		fmt.Fprintln(w, "       flanneld leases [OPTION]...    (flanneld leases --help)")
	}
	fmt.Fprint(w, fs.FlagUsages())
	fmt.Fprintln(w, "Flags may be written with one or two dashes. A flag not given is read from the")
	fmt.Fprintln(w, "environment variable FLANNELD_<NAME> (upper case, '-' as '_'), e.g. FLANNELD_ETCD_ENDPOINTS.")
}

func envName(flagName string) string {
	return envPrefix + "_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// positional is a command-line word that is neither a flag nor a flag's value.
type positional struct {
	arg      string
	boolFlag string // the boolean flag written just before it without "=", if any
}

// normalizeArgs rewrites single-dash long flags ("-v=10") to pflag's "--" form and -h/--h to
// --help, up to "--", leaving values alone; it also returns the positional words.
func normalizeArgs(fs *pflag.FlagSet, args []string) ([]string, []positional) {
	out := make([]string, 0, len(args))
	var pos []positional
	prevBool := ""
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			out = append(out, args[i:]...)
			for _, rest := range args[i+1:] {
				pos = append(pos, positional{arg: rest})
			}
			break
		}
		if len(a) < 2 || a[0] != '-' {
			out = append(out, a)
			pos = append(pos, positional{arg: a, boolFlag: prevBool})
			prevBool = ""
			continue
		}
		prevBool = ""
		body := strings.TrimPrefix(a, "-")
		if strings.HasPrefix(body, "-") {
			body = body[1:]
			if body == "" || body[0] == '-' {
				out = append(out, a)
				continue
			}
		}
		name, value, hasValue := strings.Cut(body, "=")
		if name == "h" {
			name = "help"
		}
		norm := "--" + name
		if hasValue {
			norm += "=" + value
		}
		out = append(out, norm)
		f := fs.Lookup(name)
		if f == nil || hasValue {
			continue
		}
		if f.NoOptDefVal != "" {
			prevBool = name
			continue
		}
		if i+1 < len(args) {
			// The next word is this flag's value, whatever it looks like.
			i++
			out = append(out, args[i])
		}
	}
	return out, pos
}

// parseOptions parses args and the FLANNELD_* environment into Options, or returns errHelp,
// errVersion (before the environment applies) or a one-line usage error; klog is set on success.
func parseOptions(args []string, lookupEnv func(string) (string, bool), stderr io.Writer) (Options, error) {
	o, _, err := parseCommand("", args, lookupEnv, stderr)
	return o, err
}

// parseCommand is parseOptions for the daemon (cmd "") or a subcommand with flags of its own.
func parseCommand(cmd string, args []string, lookupEnv func(string) (string, bool), stderr io.Writer) (Options, toolOptions, error) {
	var r rawOptions
	fs := newFlagSet(&r)
	fs.SetOutput(stderr)
	var tr rawToolOptions
	if cmd != "" {
		defineToolFlags(fs, cmd, &tr)
	}

	norm, pos := normalizeArgs(fs, args)
	if err := fs.Parse(norm); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return Options{}, toolOptions{}, errHelp
		}
		return Options{}, toolOptions{}, err
	}
	if len(pos) > 0 || len(fs.Args()) > 0 {
		p := positional{}
		if len(pos) > 0 {
			p = pos[0]
		} else {
			p.arg = fs.Args()[0]
		}
		if p.boolFlag != "" {
			return Options{}, toolOptions{}, fmt.Errorf("unexpected argument %q: boolean flags take --%s=%s", p.arg, p.boolFlag, p.arg)
		}
		return Options{}, toolOptions{}, fmt.Errorf("unexpected argument %q: flanneld%s takes no positional arguments", p.arg, prefixed(" ", cmd))
	}
	if r.version {
		return Options{}, toolOptions{}, errVersion
	}

	fromEnv, err := applyEnv(fs, lookupEnv)
	if err != nil {
		return Options{}, toolOptions{}, err
	}
	src := func(name string) string {
		if fromEnv[name] {
			return " (from " + envName(name) + ")"
		}
		return ""
	}

	o := r.opts
	if err := finish(&o, &r, src); err != nil {
		return Options{}, toolOptions{}, err
	}
	var t toolOptions
	if cmd != "" {
		if t, err = finishTool(cmd, &tr); err != nil {
			return Options{}, toolOptions{}, err
		}
		t.EtcdEndpointsGiven = fs.Changed("etcd-endpoints") || fromEnv["etcd-endpoints"]
	}
	if err := applyKlog(&r, fromEnv); err != nil {
		return Options{}, toolOptions{}, err
	}
	return o, t, nil
}

func prefixed(sep, s string) string {
	if s == "" {
		return ""
	}
	return sep + s
}

// applyEnv sets each flag not given from its non-empty FLANNELD_* variable and reports which.
func applyEnv(fs *pflag.FlagSet, lookupEnv func(string) (string, bool)) (map[string]bool, error) {
	fromEnv := map[string]bool{}
	if lookupEnv == nil {
		return fromEnv, nil
	}
	var firstErr error
	fs.VisitAll(func(f *pflag.Flag) {
		if firstErr != nil || f.Changed || f.Name == "version" || f.Annotations[toolFlag] != nil {
			return
		}
		name := envName(f.Name)
		val, ok := lookupEnv(name)
		if !ok || val == "" {
			return
		}
		if err := fs.Set(f.Name, val); err != nil {
			cause := err
			var ive *pflag.InvalidValueError
			if errors.As(err, &ive) && ive.Unwrap() != nil {
				cause = ive.Unwrap()
			}
			firstErr = fmt.Errorf("invalid value %q for %s: %w", val, name, cause)
			return
		}
		fromEnv[f.Name] = true
	})
	return fromEnv, firstErr
}

// finish converts and validates r into o; src(flag) names a value's variable for errors.
func finish(o *Options, r *rawOptions, src func(string) string) error {
	var eps []string
	for _, ep := range strings.Split(r.etcdEndpoints, ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			eps = append(eps, ep)
		}
	}
	if len(eps) == 0 {
		return fmt.Errorf("--etcd-endpoints%s must list at least one endpoint", src("etcd-endpoints"))
	}
	o.EtcdEndpoints = eps

	if r.renewMarginMin < 1 || r.renewMarginMin > maxRenewMarginMin {
		return fmt.Errorf("Invalid subnet-lease-renew-margin option, out of acceptable range: %d%s (must be 1..%d minutes)",
			r.renewMarginMin, src("subnet-lease-renew-margin"), maxRenewMarginMin)
	}
	o.SubnetLeaseRenewMargin = time.Duration(r.renewMarginMin) * time.Minute
	if r.iptablesResync < 1 {
		return fmt.Errorf("invalid --iptables-resync %d%s: must be at least 1 second", r.iptablesResync, src("iptables-resync"))
	}
	o.IPTablesResync = time.Duration(r.iptablesResync) * time.Second
	if o.TimerSlack < 0 {
		return fmt.Errorf("invalid --timer-slack %v%s: must not be negative", o.TimerSlack, src("timer-slack"))
	}

	if o.PublicIP != "" {
		a, err := netip.ParseAddr(o.PublicIP)
		if err != nil || !a.Is4() {
			return fmt.Errorf("invalid public IP address: %s%s", o.PublicIP, src("public-ip"))
		}
	}
	if o.PublicIPv6 != "" {
		a, err := netip.ParseAddr(o.PublicIPv6)
		if err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" {
			return fmt.Errorf("invalid public IPv6 address: %s%s", o.PublicIPv6, src("public-ipv6"))
		}
	}
	if o.HealthzIP != "" {
		if _, err := netip.ParseAddr(o.HealthzIP); err != nil {
			return fmt.Errorf("invalid healthz IP address: %s%s", o.HealthzIP, src("healthz-ip"))
		}
	}
	if o.HealthzPort < 0 || o.HealthzPort > 65535 {
		return fmt.Errorf("invalid --healthz-port %d%s: must be 0..65535", o.HealthzPort, src("healthz-port"))
	}
	for _, name := range o.Iface {
		if strings.TrimSpace(name) == "" {
			return fmt.Errorf("--iface%s must not be empty", src("iface"))
		}
	}
	for _, re := range o.IfaceRegex {
		if re == "" {
			return fmt.Errorf("--iface-regex%s must not be empty", src("iface-regex"))
		}
		if _, err := regexp.Compile(re); err != nil {
			return fmt.Errorf("invalid --iface-regex %q%s: %w", re, src("iface-regex"), err)
		}
	}
	if o.IfaceCanReach != "" {
		if _, err := netip.ParseAddr(o.IfaceCanReach); err != nil {
			return fmt.Errorf("invalid --iface-can-reach address: %s%s", o.IfaceCanReach, src("iface-can-reach"))
		}
	}

	if !o.KubeSubnetMgr {
		// A client certificate without its key (or the reverse) would silently connect
		// without one; upstream does, and also ignores a lone --etcd-cafile.
		switch {
		case o.EtcdCertfile != "" && o.EtcdKeyfile == "":
			return fmt.Errorf("--etcd-certfile%s is set without --etcd-keyfile: a client certificate needs its key", src("etcd-certfile"))
		case o.EtcdKeyfile != "" && o.EtcdCertfile == "":
			return fmt.Errorf("--etcd-keyfile%s is set without --etcd-certfile: a client key needs its certificate", src("etcd-keyfile"))
		}
	}
	if o.KubeSubnetMgr {
		// Checked here so that a bad prefix is a usage error, not a runtime failure.
		if _, err := kube.NewAnnotations(o.KubeAnnotationPrefix); err != nil {
			return fmt.Errorf("invalid --kube-annotation-prefix %q%s: %w", o.KubeAnnotationPrefix, src("kube-annotation-prefix"), err)
		}
		if o.NetConfigPath == "" {
			return fmt.Errorf("--net-config-path%s must not be empty with --kube-subnet-mgr", src("net-config-path"))
		}
	}
	return nil
}

// applyKlog hands the klog flags (or defaults) to klog, logging to stderr; failure changes nothing.
func applyKlog(r *rawOptions, fromEnv map[string]bool) error {
	gfs := flag.NewFlagSet("klog", flag.ContinueOnError)
	gfs.SetOutput(io.Discard)
	klog.InitFlags(gfs)

	type saved struct{ name, old string }
	var done []saved
	rollback := func() {
		for i := len(done) - 1; i >= 0; i-- {
			_ = gfs.Set(done[i].name, done[i].old)
		}
	}
	set := func(name, val string) error {
		f := gfs.Lookup(name)
		if f == nil {
			return fmt.Errorf("klog has no flag %q", name)
		}
		old := f.Value.String()
		if name == "log_backtrace_at" && old == ":0" {
			old = "" // klog prints an unset location as ":0" but does not parse it back
		}
		if err := f.Value.Set(val); err != nil {
			return err
		}
		done = append(done, saved{name, old})
		return nil
	}

	for _, name := range []string{"v", "vmodule", "log_backtrace_at"} {
		val := r.klog[name].text
		if err := set(name, val); err != nil {
			rollback()
			if fromEnv[name] {
				return fmt.Errorf("invalid value %q for %s: %w", val, envName(name), err)
			}
			return fmt.Errorf("invalid argument %q for \"--%s\" flag: %w", val, name, err)
		}
	}
	if err := set("logtostderr", "true"); err != nil {
		rollback()
		return fmt.Errorf("setting klog logtostderr: %w", err)
	}
	return nil
}
