package diagnose

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/flannel-go/flannel/pkg/control"
	"github.com/flannel-go/flannel/subnet"
)

const daemonHelp = "systemd: journalctl -u flanneld; DaemonSet: kubectl -n kube-flannel logs <flannel pod on this node>"

func checkDaemon(ctx context.Context, s *State) Result {
	if s.Deps.Daemon == nil {
		return skip("no control socket to ask")
	}
	if !s.Opts.Root {
		return skip("the daemon's control socket answers root only: run diagnose as root to ask it")
	}
	ctx, cancel := withTimeout(ctx, s.Opts.DatastoreTimeout)
	defer cancel()
	st, err := s.Deps.Daemon(ctx)
	s.daemonErr = err
	switch {
	case errors.Is(err, control.ErrNotRunning):
		return fail(fmt.Sprintf("flanneld is not running for %s in this network namespace (nothing listens on its control socket)", s.network()),
			"start flanneld and see why it stopped ("+daemonHelp+")", "flanneld")
	case err != nil:
		return fail("asking the daemon over its control socket: "+err.Error(),
			"check that the process holding the socket is flanneld ("+daemonHelp+")", "flanneld")
	}
	s.daemon = st
	in := st.Instance
	who := fmt.Sprintf("flanneld pid %d (%s), %s since %s", in.PID, in.Version, in.Phase, in.Started.UTC().Format(time.RFC3339))
	if !st.Readiness.Ready {
		var bad []string
		for _, c := range st.Readiness.Checks {
			if !c.OK {
				bad = append(bad, c.Name+": "+c.Reason)
			}
		}
		return fail(who+", not ready: "+strings.Join(bad, "; "),
			"the checks below say why; the daemon's log says more ("+daemonHelp+")", "flanneld")
	}
	ev := who + ", ready"
	if st.Lease != nil {
		ev += ", lease " + st.Lease.Key
	}
	return pass("%s", ev)
}

func checkEtcdEndpoints(ctx context.Context, s *State) Result {
	e := s.Deps.Etcd
	if e == nil {
		return storeMissing(s.Deps.StoreErr, "the etcd client", "fix the --etcd-* flags (the TLS files must be readable: run as root)")
	}
	eps := e.Endpoints()
	type answer struct {
		h   EndpointHealth
		err error
	}
	answers := make([]answer, len(eps))
	done := make(chan struct{})
	for i, ep := range eps {
		go func() {
			defer func() { done <- struct{}{} }()
			cctx, cancel := withTimeout(ctx, s.Opts.DatastoreTimeout)
			defer cancel()
			h, err := e.Health(cctx, ep)
			switch {
			case err != nil:
			case h.Leader == 0:
				err = fmt.Errorf("etcd %s answers but knows no leader (quorum lost?)", h.Version)
			case len(h.Errors) > 0:
				err = fmt.Errorf("etcd %s reports: %s", h.Version, strings.Join(h.Errors, "; "))
			}
			answers[i].h, answers[i].err = h, err
		}()
	}
	for range eps {
		<-done
	}
	var healthy, bad, ignored []string
	var objs []string
	for i, a := range answers {
		switch {
		case a.err == nil:
			healthy = append(healthy, fmt.Sprintf("%s: etcd %s, leader %x", eps[i], a.h.Version, a.h.Leader))
		case s.Opts.EtcdDefaultEndpoints && len(eps) > 1:
			// Upstream's default lists legacy port 4001 beside 2379; one is expected dead.
			ignored = append(ignored, eps[i])
		default:
			bad = append(bad, naming(eps[i], a.err))
			objs = append(objs, eps[i])
		}
	}
	if len(healthy) == 0 && len(ignored) > 0 {
		for i, a := range answers {
			bad = append(bad, naming(eps[i], a.err))
			objs = append(objs, eps[i])
		}
	}
	s.storeOK = len(healthy) > 0
	if len(bad) > 0 {
		return fail(strings.Join(bad, "; "),
			"make etcd answer there, or fix --etcd-endpoints, --etcd-cafile/--etcd-certfile/--etcd-keyfile and --etcd-username/--etcd-password to match it (etcdctl endpoint health, with the same endpoints and files, tells the same)",
			objs...)
	}
	return pass("%s", strings.Join(healthy, "; "))
}

func storeMissing(err error, what, fix string) Result {
	if err == nil {
		return skip("no datastore client")
	}
	if errors.Is(err, fs.ErrPermission) {
		return skip("making %s: %s (run diagnose as root)", what, oneLine(err))
	}
	return fail("making "+what+": "+oneLine(err), fix)
}

func checkKubeAPI(ctx context.Context, s *State) Result {
	k := s.Deps.Kube
	if k == nil {
		return storeMissing(s.Deps.StoreErr, "the Kubernetes client", "fix --kube-api-url, --kubeconfig-file and NODE_NAME (or POD_NAME and POD_NAMESPACE)")
	}
	cctx, cancel := withTimeout(ctx, s.Opts.DatastoreTimeout)
	defer cancel()
	v, err := k.Version(cctx)
	if err != nil {
		return fail(naming(k.Server(), err),
			"check --kube-api-url or --kubeconfig-file (in a pod: the service account token and KUBERNETES_SERVICE_HOST) and that the API server is reachable from this node",
			k.Server())
	}
	s.storeOK = true
	return pass("%s answers: Kubernetes %s", k.Server(), v)
}

func checkNetworkConfig(ctx context.Context, s *State) Result {
	var text, where string
	if s.Opts.Kube {
		if s.Deps.Kube == nil {
			return skipAfter(CheckKubeAPI)
		}
		path, t, err := s.Deps.Kube.NetConfig()
		if err != nil {
			return fail("reading the network config: "+err.Error(),
				"mount the kube-flannel-cfg ConfigMap's net-conf.json at --net-config-path ("+path+")", path)
		}
		text, where = t, path
	} else {
		if !s.storeOK {
			return skipAfter(CheckEtcdEndpoints)
		}
		key := s.Opts.EtcdPrefix + "/config"
		cctx, cancel := withTimeout(ctx, s.Opts.DatastoreTimeout)
		defer cancel()
		t, found, err := s.Deps.Etcd.Config(cctx)
		switch {
		case err != nil:
			return fail("reading "+key+": "+err.Error(), "check the etcd user's read permission on "+s.Opts.EtcdPrefix+"/", key)
		case !found:
			return fail("no network config at "+key+s.useDaemonConfig(),
				"write one: etcdctl put "+key+` '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}' (ETCDCTL_API=3)`, key)
		}
		text, where = t, key
		s.cfgFound = true
	}
	cfg, err := parseNetConfig(s.Opts.Kube, text)
	if err != nil {
		return fail(fmt.Sprintf("%s: %s%s", where, oneLine(err), s.useDaemonConfig()), "correct the config at "+where+"; the daemon retries it every second", where)
	}
	s.cfgText, s.cfg = text, cfg
	ev := describeConfig(cfg)
	if dc, err := s.daemonConfig(); err == nil && !sameConfig(dc, cfg) {
		return fail(ev+"; flanneld runs with another config: "+describeConfig(dc)+", backend "+compactJSON(dc.Backend),
			"restart flanneld to apply the new config (pods and the bridge keep the old MTU until they are recreated)", where)
	}
	return pass("%s: %s", where, ev)
}

// useDaemonConfig falls back to the running daemon's config when the datastore has no
// working one; it returns what to add to the evidence.
func (s *State) useDaemonConfig() string {
	cfg, err := s.daemonConfig()
	if err != nil {
		return ""
	}
	s.cfg = cfg
	return " (the checks below use the config flanneld runs with)"
}

func (s *State) daemonConfig() (*subnet.Config, error) {
	if s.daemon == nil || len(s.daemon.Config.Network) == 0 {
		return nil, errors.New("no daemon config")
	}
	raw := s.daemon.Config.Network
	var cfg subnet.Config
	if err := json.Unmarshal(raw, &cfg); err == nil && cfg.BackendType != "" {
		return &cfg, nil
	}
	return parseNetConfig(s.Opts.Kube, string(raw))
}

// sameConfig reports whether two configs set up the same network.
func sameConfig(a, b *subnet.Config) bool {
	return a.EnableIPv4 == b.EnableIPv4 && a.EnableIPv6 == b.EnableIPv6 && a.EnableNFTables == b.EnableNFTables &&
		a.Network == b.Network && a.SubnetLen == b.SubnetLen && a.SubnetMin == b.SubnetMin && a.SubnetMax == b.SubnetMax &&
		a.IPv6Network == b.IPv6Network && a.IPv6SubnetLen == b.IPv6SubnetLen &&
		a.IPv6SubnetMin == b.IPv6SubnetMin && a.IPv6SubnetMax == b.IPv6SubnetMax &&
		a.BackendType == b.BackendType && sameJSON(a.Backend, b.Backend)
}

// parseNetConfig parses, validates and defaults the config as both subnet managers do.
func parseNetConfig(_ bool, text string) (*subnet.Config, error) {
	return subnet.ParseConfig(text)
}

func describeConfig(cfg *subnet.Config) string {
	var parts []string
	if cfg.EnableIPv4 {
		p := "Network " + cfg.Network.String()
		if cfg.SubnetLen > 0 {
			p += fmt.Sprintf(", SubnetLen %d", cfg.SubnetLen)
		}
		parts = append(parts, p)
	}
	if cfg.EnableIPv6 {
		p := "IPv6Network " + cfg.IPv6Network.String()
		if cfg.IPv6SubnetLen > 0 {
			p += fmt.Sprintf(", IPv6SubnetLen %d", cfg.IPv6SubnetLen)
		}
		parts = append(parts, p)
	}
	parts = append(parts, "backend "+cfg.BackendType)
	return strings.Join(parts, ", ")
}

func checkEtcdV2Config(ctx context.Context, s *State) Result {
	if !s.storeOK {
		return skipAfter(CheckEtcdEndpoints)
	}
	key := s.Opts.EtcdPrefix + "/config"
	if s.cfgFound {
		return pass("%s is in the v3 API, where flanneld reads it", key)
	}
	cctx, cancel := withTimeout(ctx, s.Opts.DatastoreTimeout)
	defer cancel()
	text, found, err := s.Deps.Etcd.V2Config(cctx)
	switch {
	case errors.Is(err, ErrNoV2):
		return skip("etcd does not serve the v2 API (%s), so no config written with it can hide there", oneLine(err))
	case err != nil:
		return skip("could not ask the v2 API: %s", oneLine(err))
	case !found:
		return pass("the v2 API holds no %s either", key)
	}
	return fail(key+" exists only in the etcd v2 API (written with ETCDCTL_API=2 etcdctl set); flanneld reads the v3 API",
		"write it with the v3 API: ETCDCTL_API=3 etcdctl put "+key+" '"+compactJSON([]byte(text))+"'", key)
}

func checkKubeNode(ctx context.Context, s *State) Result {
	if !s.storeOK {
		return skipAfter(CheckKubeAPI)
	}
	k := s.Deps.Kube
	cctx, cancel := withTimeout(ctx, s.Opts.DatastoreTimeout)
	defer cancel()
	name, err := k.NodeName(cctx)
	if err != nil {
		return fail("finding this node's name: "+oneLine(err),
			"set NODE_NAME (or POD_NAME and POD_NAMESPACE) from the downward API, as dist/kube-flannel.yml does")
	}
	s.nodeName = name
	n, found, err := k.Node(cctx, name, s.cfg)
	switch {
	case err != nil:
		return fail("reading node "+name+": "+oneLine(err), "check the permissions below and the API server", "node/"+name)
	case !found:
		return fail("node "+name+" does not exist in the API server",
			"register the node (kubelet) or set NODE_NAME to its name as the API server knows it", "node/"+name)
	}
	s.node = n
	return pass("node %s exists", name)
}

func checkKubePodCIDR(_ context.Context, s *State) Result {
	if s.node == nil {
		return skipAfter(CheckKubeNode)
	}
	n := s.node
	obj := "node/" + n.Name
	if len(n.PodCIDRs) == 0 {
		return fail("node "+n.Name+" has no pod CIDR (spec.podCIDR is empty)",
			"run kube-controller-manager with --allocate-node-cidrs=true and --cluster-cidr set to the Network of net-conf.json (kubeadm: --pod-network-cidr), or set spec.podCIDR yourself", obj)
	}
	var strs []string
	for _, p := range n.PodCIDRs {
		strs = append(strs, p.String())
	}
	if s.cfg != nil {
		for _, p := range n.PodCIDRs {
			net := s.cfg.Network
			if p.Addr().Is6() {
				net = s.cfg.IPv6Network
			}
			if !net.IsValid() || !net.Contains(p.Addr()) || p.Bits() < net.Bits() {
				return fail(fmt.Sprintf("node %s's pod CIDR %s is outside the network %s", n.Name, p, net),
					"make kube-controller-manager's --cluster-cidr the Network of net-conf.json (or the reverse); the daemon exits on this", obj)
			}
		}
		if s.cfg.EnableIPv6 && !slices.ContainsFunc(n.PodCIDRs, func(p netip.Prefix) bool { return p.Addr().Is6() }) {
			return fail("node "+n.Name+" has no IPv6 pod CIDR, and EnableIPv6 is true",
				"give kube-controller-manager an IPv6 --cluster-cidr too (dual stack), or set EnableIPv6 to false", obj)
		}
		if s.cfg.EnableIPv4 && !slices.ContainsFunc(n.PodCIDRs, func(p netip.Prefix) bool { return p.Addr().Is4() }) {
			return fail("node "+n.Name+" has no IPv4 pod CIDR, and EnableIPv4 is true",
				"give kube-controller-manager an IPv4 --cluster-cidr, or set EnableIPv4 to false", obj)
		}
	}
	return pass("node %s has pod CIDRs %s", n.Name, strings.Join(strs, ", "))
}

func daemonAccess(node string) []Access {
	return []Access{
		{Verb: "list", Resource: "nodes", Why: "to learn the peers"},
		{Verb: "watch", Resource: "nodes", Why: "to follow the peers"},
		{Verb: "patch", Resource: "nodes", Subresource: "status", Name: node, Why: "to publish its lease annotations and the NetworkUnavailable condition"},
		{Verb: "get", Resource: "pods", Optional: true, Why: "to find its node from POD_NAME when NODE_NAME is not set"},
	}
}

func checkKubePermissions(ctx context.Context, s *State) Result {
	if !s.storeOK {
		return skipAfter(CheckKubeAPI)
	}
	k := s.Deps.Kube
	var missing, optional, objs []string
	for _, a := range daemonAccess(s.nodeName) {
		cctx, cancel := withTimeout(ctx, s.Opts.DatastoreTimeout)
		ok, reason, err := k.Allowed(cctx, a)
		cancel()
		what := a.Verb + " " + a.Resource
		if a.Subresource != "" {
			what += "/" + a.Subresource
		}
		switch {
		case err != nil:
			return fail("asking whether the daemon may "+what+": "+oneLine(err),
				"the API server must serve authorization.k8s.io/v1 SelfSubjectAccessReview; check the API server", what)
		case ok:
		case a.Optional:
			optional = append(optional, what)
		default:
			if reason != "" {
				what += " (" + reason + ")"
			}
			missing = append(missing, what+": needed "+a.Why)
			objs = append(objs, a.Verb+" "+a.Resource+subresourceSuffix(a))
		}
	}
	if len(missing) > 0 {
		return fail("the daemon's credentials may not "+strings.Join(missing, "; "),
			"grant them in the ClusterRole bound to flannel's service account (dist/kube-flannel.yml: nodes list, watch; nodes/status patch; pods get)", objs...)
	}
	ev := "nodes list and watch, nodes/status patch granted"
	if len(optional) > 0 {
		ev += "; not granted, which only degrades the daemon: " + strings.Join(optional, ", ")
	}
	return pass("%s", ev)
}

func subresourceSuffix(a Access) string {
	if a.Subresource == "" {
		return ""
	}
	return "/" + a.Subresource
}

// naming is err on one line, led by obj unless err names it already.
func naming(obj string, err error) string {
	if text := oneLine(err); strings.Contains(text, obj) {
		return text
	}
	return obj + ": " + oneLine(err)
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
}

// compactJSON is b on one line, keys in their order; b itself when it is no JSON.
func compactJSON(b []byte) string {
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return strings.Join(strings.Fields(string(b)), " ")
	}
	return out.String()
}

func sameJSON(a, b []byte) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return strings.TrimSpace(string(a)) == strings.TrimSpace(string(b))
	}
	ja, _ := json.Marshal(va)
	jb, _ := json.Marshal(vb)
	return string(ja) == string(jb)
}
