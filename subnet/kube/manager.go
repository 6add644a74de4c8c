package kube

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/pkg/connerr"
	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

// Config configures the Kubernetes subnet manager.
type Config struct {
	// APIURL and KubeconfigFile locate the API server; both empty: the in-cluster configuration.
	APIURL, KubeconfigFile string
	// ExecPluginAllowlist, if not empty, names the only exec credential plugins allowed.
	ExecPluginAllowlist []string
	// REST, when set (tests), is used instead of APIURL/KubeconfigFile.
	REST *rest.Config
	// UserAgent is sent with every request (default "flannel-go").
	UserAgent string
	// AnnotationPrefix is --kube-annotation-prefix (default DefaultAnnotationPrefix).
	AnnotationPrefix string
	// NetConfigPath is --net-config-path, the network configuration file.
	NetConfigPath string
	// SetNodeNetworkUnavailable: KeepLease sets NetworkUnavailable to False (FlannelIsUp).
	SetNodeNetworkUnavailable bool
	// NodeName is $NODE_NAME; else spec.nodeName of pod PodNamespace/PodName.
	NodeName, PodName, PodNamespace string
}

// Manager is the Kubernetes implementation of subnet.Manager. It is safe for concurrent use.
type Manager struct {
	cfg    Config
	server string // the API server's URL, for errors
	ann    Annotations
	keep   annotationFilter // the annotations of a node a peer is built from
	cs     *client
	obs    observe.Observer // metrics, readiness and the outage log (SetObserver); nil: none

	mu       sync.Mutex
	nodeName string
	netCfg   *subnet.Config
	own      *apiNode // own node as last read (GetNetworkConfig, AcquireLease)

	// condChanged: the watch saw this node's NetworkUnavailable other than False.
	condChanged chan struct{}
}

var _ subnet.Manager = (*Manager)(nil)

// New creates the manager and its API client. It does not contact the API server.
func New(cfg Config) (*Manager, error) {
	if cfg.AnnotationPrefix == "" {
		cfg.AnnotationPrefix = DefaultAnnotationPrefix
	}
	ann, err := NewAnnotations(cfg.AnnotationPrefix)
	if err != nil {
		return nil, fmt.Errorf("error creating network manager: %w", err)
	}
	if cfg.NodeName == "" && (cfg.PodName == "" || cfg.PodNamespace == "") {
		return nil, errors.New("env variables POD_NAME and POD_NAMESPACE must be set (or NODE_NAME): " +
			"set them from the downward API (fieldRef metadata.name, metadata.namespace or spec.nodeName) as dist/kube-flannel.yml does")
	}
	rc := cfg.REST
	if rc == nil {
		rc, err = restConfig(cfg.APIURL, cfg.KubeconfigFile, cfg.ExecPluginAllowlist)
		if err != nil {
			return nil, fmt.Errorf("fail to create kubernetes config: %w", err)
		}
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "flannel-go"
	}
	m := &Manager{cfg: cfg, server: rc.Host, ann: ann, nodeName: cfg.NodeName, condChanged: make(chan struct{}, 1)}
	m.keep = ann.leaseKeyFilter()
	m.cs, err = newClient(rc, cfg.UserAgent, m.keep)
	if err != nil {
		return nil, fmt.Errorf("unable to initialize client: %w", err)
	}
	return m, nil
}

// Name describes the manager for logs.
func (m *Manager) Name() string {
	name := m.cachedNodeName()
	if name == "" {
		name = "<unresolved node>"
	}
	return "Kubernetes Subnet Manager - " + name
}

// Annotations are the annotation keys in use.
func (m *Manager) Annotations() Annotations { return m.ann }

func (m *Manager) cachedNodeName() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.nodeName
}

// NodeName resolves (once) the node this daemon runs on.
func (m *Manager) NodeName(ctx context.Context) (string, error) {
	if n := m.cachedNodeName(); n != "" {
		return n, nil
	}
	if m.cfg.PodName == "" || m.cfg.PodNamespace == "" {
		return "", errors.New("env variables POD_NAME and POD_NAMESPACE must be set (or NODE_NAME)") // New refuses this
	}
	pod, err := m.cs.getPod(ctx, m.cfg.PodNamespace, m.cfg.PodName)
	if err != nil {
		return "", m.withHint(fmt.Errorf("error retrieving pod spec for '%s/%s': %w", m.cfg.PodNamespace, m.cfg.PodName, err))
	}
	if pod.Spec.NodeName == "" {
		return "", fmt.Errorf("node name not present in pod spec '%s/%s'", m.cfg.PodNamespace, m.cfg.PodName)
	}
	m.mu.Lock()
	m.nodeName = pod.Spec.NodeName
	m.mu.Unlock()
	return pod.Spec.NodeName, nil
}

// GetNetworkConfig reads --net-config-path and the own node (its public-ip annotations).
func (m *Manager) GetNetworkConfig(ctx context.Context) (*subnet.Config, error) {
	data, err := os.ReadFile(m.cfg.NetConfigPath)
	if err != nil {
		return nil, fmt.Errorf("failed to read net conf: %w (mount the kube-flannel-cfg ConfigMap there, or set --net-config-path)", err)
	}
	cfg, err := subnet.ParseConfig(string(data))
	if err != nil {
		return nil, fmt.Errorf("error parsing subnet config %s: %w", m.cfg.NetConfigPath, err)
	}
	name, err := m.NodeName(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := m.getNode(ctx, name); err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.netCfg = cfg
	m.mu.Unlock()
	return cfg, nil
}

func (m *Manager) getNode(ctx context.Context, name string) (*apiNode, error) {
	n, err := m.cs.getNode(ctx, name)
	if err != nil {
		return nil, m.withHint(fmt.Errorf("failed to get node %q: %w", name, err))
	}
	m.mu.Lock()
	m.own = n
	m.mu.Unlock()
	return n, nil
}

// NodePublicIPs returns the own node's node-public-ip(v6) annotations as last read.
func (m *Manager) NodePublicIPs() (v4, v6 string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.own == nil {
		return "", ""
	}
	a := m.own.Annotations
	return a[m.ann.NodePublicIP], a[m.ann.NodePublicIPv6]
}

// PublicIPs returns the own node's valid node-public-ip(v6) annotations, else the flags (upstream).
func (m *Manager) PublicIPs(flagV4, flagV6 string) (v4, v6 string) {
	a4, a6 := m.NodePublicIPs()
	v4, v6 = flagV4, flagV6
	if a4 != "" {
		if ip, err := netip.ParseAddr(a4); err != nil || !ip.Is4() {
			klog.ErrorS(err, "Ignoring invalid node annotation: not an IPv4 address", "annotation", m.ann.NodePublicIP, "value", a4)
		} else {
			klog.InfoS("Using the node's public IP annotation instead of --public-ip", "annotation", m.ann.NodePublicIP, "publicIP", a4)
			v4 = a4
		}
	}
	if a6 != "" {
		if ip, err := netip.ParseAddr(a6); err != nil || !ip.Is6() || ip.Is4In6() {
			klog.ErrorS(err, "Ignoring invalid node annotation: not an IPv6 address", "annotation", m.ann.NodePublicIPv6, "value", a6)
		} else {
			klog.InfoS("Using the node's public IPv6 annotation instead of --public-ipv6", "annotation", m.ann.NodePublicIPv6, "publicIPv6", a6)
			v6 = a6
		}
	}
	return v4, v6
}

// PreviousLease is what the own node's flannel annotations advertise; nil when it has none.
func (m *Manager) PreviousLease() *subnet.Lease {
	m.mu.Lock()
	n, cfg := m.own, m.netCfg
	m.mu.Unlock()
	if n == nil || cfg == nil || n.Annotations[m.ann.SubnetKubeManaged] != "true" {
		return nil
	}
	a := n.Annotations
	l := &subnet.Lease{EnableIPv4: cfg.EnableIPv4, EnableIPv6: cfg.EnableIPv6}
	l.Attrs.BackendType = a[m.ann.BackendType]
	l.Attrs.BackendData = rawData(a[m.ann.BackendData])
	l.Attrs.BackendV6Data = rawData(a[m.ann.BackendV6Data])
	l.Subnet, l.IPv6Subnet, _ = podCIDRs(n)
	return l
}

// withHint adds what to fix to API errors of known cause, and the server's name if missing.
func (m *Manager) withHint(err error) error {
	switch {
	case apierrors.IsForbidden(err):
		return fmt.Errorf("%w (permission denied by the API server %s: grant the flannel ClusterRole of dist/kube-flannel.yml to this service account: pods get; nodes list, watch; nodes/status patch)", err, m.server)
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("%w (the API server %s refused the credentials: check the kubeconfig or the service-account token)", err, m.server)
	}
	var uerr *url.Error
	if errors.As(err, &uerr) && !errors.Is(err, context.Canceled) {
		cause := connerr.Classify(err)
		switch {
		case cause.IsTLS():
			return fmt.Errorf("%w (%s: check the server URL and the certificate-authority of the kubeconfig, or --kube-api-url)", err, cause)
		case cause != connerr.Unknown:
			return fmt.Errorf("%w (cannot reach the API server, %s: check --kube-api-url, --kubeconfig-file or the in-cluster service address, and the node's route to it)", err, cause)
		}
		return fmt.Errorf("%w (cannot reach the API server: check --kube-api-url, --kubeconfig-file or the in-cluster service address, and the node's route to it)", err)
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		return fmt.Errorf("%w (API server %s)", err, m.server) // its answer, from which server
	}
	return err
}
