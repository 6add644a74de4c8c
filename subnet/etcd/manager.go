package etcd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"path"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"
	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

// Defaults used when the corresponding Config field is zero.
const (
	DefaultPrefix      = "/coreos.com/network"
	DefaultLeaseTTL    = 24 * time.Hour
	DefaultRenewMargin = 60 * time.Minute
)

// opTimeout bounds a background loop's etcd call, so an unreachable etcd does not stall it.
const opTimeout = 10 * time.Second

// Config configures the etcd subnet manager.
type Config struct {
	// Endpoints are the etcd client URLs (default http://127.0.0.1:4001,http://127.0.0.1:2379).
	Endpoints []string
	// Prefix is the key prefix (default DefaultPrefix).
	Prefix string
	// KeyFile, CertFile and CAFile configure TLS (see usesTLS); CAFile defaults to system roots.
	KeyFile, CertFile, CAFile string
	// Username and Password enable etcd authentication when both are set; never logged.
	Username, Password string
	Admission          subnet.RuleOptions
	// PrevSubnet and PrevIPv6Subnet (from the previous subnet.env) are preferred when free.
	PrevSubnet, PrevIPv6Subnet netip.Prefix
	// LeaseTTL is the TTL of the etcd lease attached to the subnet key (default 24 h).
	LeaseTTL time.Duration
	// RenewMargin is how long before expiry the lease is renewed (default 60 min).
	RenewMargin time.Duration
	// maxResponse is the client's receive limit (0: maxResponseBytes); tests lower it.
	maxResponse int
}

// Manager is the etcd implementation of subnet.Manager. It is safe for concurrent use.
type Manager struct {
	cfg        Config
	configKey  string
	subnetsDir string // "<prefix>/subnets/"
	ccfg       clientv3.Config
	tls        *tls.Config      // the client's TLS configuration (nil: none), for probes
	obs        observe.Observer // metrics and readiness (SetObserver); nil: none

	mu     sync.Mutex
	cli    *clientv3.Client
	closed bool

	// connMu guards connErr, the last failed connection: the client dials while client() holds mu.
	connMu  sync.Mutex
	connErr error

	// beforeWatch, tests only, is called right before a watch opens at rev.
	beforeWatch func(rev int64)
	// page is the number of keys per range request when listing (0: listPage).
	page int
	// handshake is the last TLS handshake failure, for errors and Health.
	handshake lastHandshake
	// primed is the last AcquireLease listing, for WatchLeases' first snapshot (mu; taken once).
	primed *listing
	// own is this node's etcd key after AcquireLease (mu); the lease watch leaves it out.
	own string
}

type listing struct {
	leases []subnet.Candidate // without this node's
	rev    int64
}

func (m *Manager) ownKey() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.own
}

var _ subnet.Manager = (*Manager)(nil)

var errClosed = errors.New("etcd subnet manager is closed")

// New creates the manager and its client (on first use with authentication), not dialing etcd.
func New(cfg Config) (*Manager, error) {
	if len(cfg.Endpoints) == 0 {
		cfg.Endpoints = []string{"http://127.0.0.1:4001", "http://127.0.0.1:2379"}
	}
	var hadUserinfo bool
	cfg.Endpoints, hadUserinfo = cleanEndpoints(cfg.Endpoints)
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.RenewMargin == 0 {
		cfg.RenewMargin = DefaultRenewMargin
	}
	if cfg.maxResponse == 0 {
		cfg.maxResponse = maxResponseBytes
	}
	if cfg.LeaseTTL < time.Second {
		return nil, fmt.Errorf("etcd lease TTL %v is shorter than one second", cfg.LeaseTTL)
	}
	if cfg.RenewMargin < 0 || cfg.RenewMargin >= cfg.LeaseTTL {
		return nil, fmt.Errorf("lease renew margin %v must be positive and shorter than the lease TTL %v", cfg.RenewMargin, cfg.LeaseTTL)
	}
	m := &Manager{
		cfg:        cfg,
		configKey:  path.Join(cfg.Prefix, "config"),
		subnetsDir: path.Join(cfg.Prefix, "subnets") + "/",
	}
	// gRPC's default pool hands a message over 32 KB a 1 MB buffer; pages and watch
	// responses of a few hundred KB get the next power of two up to the receive limit.
	pool, err := mem.NewBinaryTieredBufferPool(8, 12, 14, 15, 16, 17, 18, 19)
	if err != nil {
		return nil, fmt.Errorf("etcd client buffer pool: %w", err)
	}
	m.ccfg = clientv3.Config{
		// The client's zap logger would print JSON next to klog's lines; we log through klog.
		Logger:               zap.NewNop(),
		MaxCallRecvMsgSize:   cfg.maxResponse,
		Endpoints:            cfg.Endpoints,
		Username:             cfg.Username,
		Password:             cfg.Password,
		DialTimeout:          5 * time.Second, // bounds the token fetch when authenticating
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		DialOptions: []grpc.DialOption{
			// Reconnect quickly after an etcd outage (grpc's default backoff grows to 2 min).
			grpc.WithConnectParams(grpc.ConnectParams{
				Backoff: grpcbackoff.Config{
					BaseDelay:  100 * time.Millisecond,
					Multiplier: 1.6,
					Jitter:     0.2,
					MaxDelay:   time.Second,
				},
				MinConnectTimeout: 5 * time.Second,
			}),
			grpc.WithContextDialer(m.dial),
			experimental.WithBufferPool(pool),
		},
	}
	if err := m.secure(cfg, hadUserinfo); err != nil {
		return nil, err
	}
	if cfg.Username == "" || cfg.Password == "" {
		if _, err := m.client(); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Manager) client() (*clientv3.Client, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, errClosed
	}
	if m.cli != nil {
		return m.cli, nil
	}
	c, err := clientv3.New(m.ccfg)
	if err != nil {
		return nil, fmt.Errorf("creating etcd client for %v: %w", m.ccfg.Endpoints, m.explain(context.Background(), err))
	}
	m.cli = c
	return c, nil
}

// Close closes the etcd client; cancel KeepLease and WatchLeases first.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	if m.cli == nil {
		return nil
	}
	err := m.cli.Close()
	m.cli = nil
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("closing etcd client: %w", err)
	}
	return nil
}

// Name describes the manager for logs, as upstream does.
func (m *Manager) Name() string {
	prev := "None"
	if m.cfg.PrevSubnet.IsValid() {
		prev = m.cfg.PrevSubnet.String()
	}
	return "Etcd Local Manager with Previous Subnet: " + prev
}

// GetNetworkConfig reads <prefix>/config and validates it.
func (m *Manager) GetNetworkConfig(ctx context.Context) (*subnet.Config, error) {
	text, found, err := m.ConfigText(ctx)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, errors.New("flannel config not found in etcd store. Did you create your config using etcdv3 API?")
	}
	return subnet.ParseConfig(text)
}

// ConfigText reads <prefix>/config as stored; found is false when the key is absent.
func (m *Manager) ConfigText(ctx context.Context) (text string, found bool, err error) {
	cli, err := m.client()
	if err != nil {
		return "", false, err
	}
	resp, err := cli.Get(ctx, m.configKey)
	if err != nil {
		return "", false, fmt.Errorf("reading %s from etcd: %w", m.configKey, m.explain(ctx, err))
	}
	if len(resp.Kvs) == 0 {
		return "", false, nil
	}
	return string(resp.Kvs[0].Value), true, nil
}

func (m *Manager) ttlSeconds() int64 {
	return max(1, int64(math.Ceil(m.cfg.LeaseTTL.Seconds())))
}

func (m *Manager) subnetKey(sn, sn6 netip.Prefix) string {
	return m.subnetsDir + subnet.MakeSubnetKey(sn, sn6)
}

// revoke releases an etcd lease we granted but did not use. Best effort.
func revoke(cli *clientv3.Client, id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if _, err := cli.Revoke(ctx, id); err != nil {
		klog.V(2).InfoS("Could not revoke unused etcd lease", "lease", fmt.Sprintf("%x", int64(id)), "err", err)
	}
}

// sleepCtx reports whether the full wait d elapsed before ctx ended.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// retryDelay is an exponential backoff: min, 2·min, … capped at max.
type retryDelay struct {
	min, max, cur time.Duration
}

func (r *retryDelay) next() time.Duration {
	if r.cur == 0 {
		r.cur = r.min
	} else {
		r.cur = min(2*r.cur, r.max)
	}
	return r.cur
}

func (r *retryDelay) reset() { r.cur = 0 }
