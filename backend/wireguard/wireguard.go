// Package wireguard is the wireguard backend with upstream's devices, modes and lease data:
// each peer lease is a WireGuard peer, and a blackhole route beneath each network route keeps
// pod traffic from leaving unencrypted while a device is absent. It runs the kernel's
// WireGuard where present, else wireguard-go in process, serving the UAPI socket for wg(8).
package wireguard

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/claim"
	"github.com/flannel-go/flannel/pkg/kernelwatch"
	"github.com/flannel-go/flannel/pkg/netlinkx"
	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

// BackendType is the lease BackendType and config Backend.Type of this backend.
const BackendType = "wireguard"

// pollInterval is how often Watch reads the devices and the key file.
const pollInterval = time.Second

// Options are what the backend needs beside the network config.
type Options struct {
	KeyFile string // the private key file (KeyFile(subnetFile, os.LookupEnv))
}

// Backend is the wireguard backend; after Start also the running backend.Network. Its
// methods may be called from several goroutines; they serialise on one mutex.
type Backend struct {
	h            nlHandle
	ext          *backend.ExternalInterface
	keyFile      string
	newKernel    func() (wgClient, error)                 // wgctrl.New
	newUserspace func(ctx context.Context) implementation // devices end with ctx
	poll         time.Duration                            // Watch's period

	// set by Prepare; readiness reads them without the mutex
	described atomic.Pointer[string]
	devList   atomic.Pointer[[]wgDev]

	mu       sync.Mutex
	node     nodeInfo
	key      wgtypes.Key
	stamp    fileStamp // of the key file the key was read from
	keyErr   string    // the key file problem last logged
	impl     implementation
	devs     map[string]wgDev
	names    []string // device names, in devices() order
	prepared bool
	started  bool
	last     []devWant                                 // the last round's desired state (the poll compares against it)
	sent     map[string]map[wgtypes.Key]netip.AddrPort // endpoints written, per device and peer
	refused  map[string]map[wgtypes.Key]refusal        // per device (holdBack)
	retry    bool
	plog     backend.ProblemLog
	obs      observe.Observer
}

// refusal is a peer a device refused, and why.
type refusal struct {
	peer   peerWant
	reason string // observe.Refused*
	text   string
}

var (
	_ backend.Backend     = (*Backend)(nil)
	_ backend.Claimer     = (*Backend)(nil)
	_ backend.Network     = (*Backend)(nil)
	_ backend.Watcher     = (*Backend)(nil)
	_ backend.Describer   = (*Backend)(nil)
	_ backend.Invalidator = (*Backend)(nil)
	_ observe.Setter      = (*Backend)(nil)
)

// Constructor returns the backend.Constructor for the current network namespace.
func Constructor(o Options) backend.Constructor {
	return func(ext *backend.ExternalInterface, cfg *subnet.Config) (backend.Backend, error) {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return nil, fmt.Errorf("wireguard: open netlink handle: %w", err)
		}
		b, err := newBackend(h, o, ext, cfg)
		if err != nil {
			h.Close()
			return nil, err
		}
		return b, nil
	}
}

func newBackend(h nlHandle, o Options, ext *backend.ExternalInterface, cfg *subnet.Config) (*Backend, error) {
	if cfg == nil {
		return nil, errors.New("wireguard: nil network config")
	}
	if ext == nil || ext.Iface == nil {
		return nil, errors.New("wireguard: no external interface")
	}
	if o.KeyFile == "" {
		return nil, errors.New("wireguard: no private key file configured")
	}
	c, err := parseConfig(cfg.Backend, ext.Iface.MTU, cfg.EnableIPv4, cfg.EnableIPv6)
	if err != nil {
		return nil, err
	}
	switch {
	case !cfg.EnableIPv4 && !cfg.EnableIPv6:
		return nil, errors.New("wireguard: the network config enables no address family")
	case cfg.EnableIPv4 && (!ext.ExtAddr.IsValid() || !ext.ExtAddr.Is4()):
		return nil, errors.New("wireguard: no IPv4 public address for the IPv4 network")
	case cfg.EnableIPv6 && !ext.ExtV6Addr.IsValid():
		return nil, errors.New("wireguard: no IPv6 public address for the IPv6 network")
	case c.Mode == IPv4 && !cfg.EnableIPv4 && !ext.ExtAddr.IsValid():
		return nil, errors.New("wireguard: Mode ipv4 needs an IPv4 public address")
	case c.Mode == IPv6 && !ext.ExtV6Addr.IsValid():
		return nil, errors.New("wireguard: Mode ipv6 needs an IPv6 public address")
	}
	klog.InfoS("WireGuard config", "ListenPort", c.ListenPort, "ListenPortV6", c.ListenPortV6, "MTU", c.MTU,
		"PSK", c.PSK != nil, "PersistentKeepaliveInterval", c.PersistentKeepaliveInterval, "Mode", c.Mode,
		"Implementation", c.Implementation, "keyFile", o.KeyFile)
	b := &Backend{
		h: h, ext: ext, keyFile: o.KeyFile,
		newKernel:    func() (wgClient, error) { return wgctrl.New() },
		newUserspace: func(ctx context.Context) implementation { return &userspaceImpl{h: h, ctx: ctx} },
		poll:         pollInterval,
		node: nodeInfo{cfg: c, v4: cfg.EnableIPv4, v6: cfg.EnableIPv6, network: cfg.Network, network6: cfg.IPv6Network,
			own: &subnet.Lease{}, extAddr: ext.ExtAddr, extV6Addr: ext.ExtV6Addr},
		sent:    map[string]map[wgtypes.Key]netip.AddrPort{},
		refused: map[string]map[wgtypes.Key]refusal{},
	}
	for _, d := range b.node.devices() {
		b.names = append(b.names, d.name)
	}
	return b, nil
}

// Config returns the parsed backend config.
func (b *Backend) Config() Config { return b.node.cfg }

// Claims names the devices and each one's listen port on every address of both families:
// a WireGuard device binds its port on both wildcards whichever family it carries.
func (b *Backend) Claims() claim.Set {
	var s claim.Set
	for _, d := range b.node.devices() {
		s.Devices = append(s.Devices, claim.Device{Name: d.name})
		setBy := "Backend.ListenPort"
		if d.name == deviceNameV6 {
			setBy = "Backend.ListenPortV6"
		}
		for _, fam := range []string{claim.IPv4, claim.IPv6} {
			s.Ports = append(s.Ports, claim.Port{Family: fam, Port: d.port, SetBy: setBy})
		}
	}
	return s
}

// SetObserver implements observe.Setter.
func (b *Backend) SetObserver(o observe.Observer) {
	b.mu.Lock()
	b.obs = o
	b.mu.Unlock()
}

// Prepare reads or generates the private key, decides the implementation and creates or
// adopts the devices; userspace devices live until ctx ends.
func (b *Backend) Prepare(ctx context.Context, _ *subnet.Lease) (*subnet.LeaseAttrs, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if b.prepared {
		return b.node.attrs(), nil
	}
	key, st, created, err := loadOrCreateKey(b.keyFile)
	if err != nil {
		return nil, fmt.Errorf("wireguard: %w", err)
	}
	b.key, b.stamp, b.node.pub = key, st, key.PublicKey()
	if created {
		klog.InfoS("Generated a WireGuard private key", "keyFile", b.keyFile, "publicKey", b.node.pub)
	} else {
		klog.InfoS("Read the WireGuard private key", "keyFile", b.keyFile, "publicKey", b.node.pub)
	}
	if err := b.openDevices(ctx); err != nil {
		return nil, fmt.Errorf("wireguard: %w", err)
	}
	list := make([]wgDev, 0, len(b.names))
	for _, n := range b.names {
		list = append(list, b.devs[n])
	}
	b.devList.Store(&list)
	desc := b.impl.name() + " WireGuard: " + strings.Join(b.names, ", ")
	b.described.Store(&desc)
	b.prepared = true
	return b.node.attrs(), nil
}

// openDevices opens every device with the kernel's WireGuard, else, as allowed, userspace.
func (b *Backend) openDevices(ctx context.Context) error {
	devs := b.node.devices()
	mtu := b.node.cfg.DeviceMTU()
	var candidates []implementation
	reason := ""
	if b.node.cfg.Implementation != ImplUserspace {
		wg, err := b.newKernel()
		if err != nil {
			return fmt.Errorf("open the kernel's WireGuard configuration interface: %w", err)
		}
		candidates = append(candidates, &kernelImpl{h: b.h, wg: wg})
		go func() { <-ctx.Done(); _ = wg.Close() }()
	} else {
		reason = "Implementation is userspace"
	}
	if b.node.cfg.Implementation != ImplKernel {
		candidates = append(candidates, b.newUserspace(ctx))
	}
	b.devs = map[string]wgDev{}
	for ci, impl := range candidates {
		ok := true
		for i := range devs {
			d, created, err := impl.open(devs[i].name, mtu, devs[i].port)
			if err != nil {
				if errors.Is(err, errNoKernelWireGuard) && ci+1 < len(candidates) {
					reason = "the kernel has no WireGuard: " + err.Error()
					ok = false
					break
				}
				if errors.Is(err, errNoKernelWireGuard) {
					return fmt.Errorf("Implementation is kernel, but %w; load the wireguard module (modprobe wireguard) or set Implementation to auto or userspace", err)
				}
				return fmt.Errorf("%s WireGuard device %s: %w", impl.name(), devs[i].name, err)
			}
			b.devs[devs[i].name] = d
			if created {
				observe.Count(b.obs, observe.Device, observe.Add, 1)
			} else {
				klog.InfoS("Adopted the existing WireGuard device with its peers", "device", devs[i].name)
			}
			if err := b.setDevice(d, &devs[i]); err != nil {
				return err
			}
		}
		if ok {
			b.impl = impl
			break
		}
	}
	if reason == "" {
		reason = "the kernel has WireGuard"
	}
	klog.InfoS("WireGuard implementation", "implementation", b.impl.name(), "reason", reason, "devices", b.names, "mtu", mtu)
	observe.Or(b.obs).WireguardImplementation(b.impl.name())
	return nil
}

// setDevice writes the private key and listen port when the device holds others.
func (b *Backend) setDevice(d wgDev, w *devWant) error {
	have, err := d.get()
	if err != nil {
		return fmt.Errorf("read WireGuard device %s: %w", w.name, err)
	}
	var cfg wgtypes.Config
	if have.PrivateKey != b.key {
		k := b.key
		cfg.PrivateKey = &k
	}
	if have.ListenPort != w.port {
		p := w.port
		cfg.ListenPort = &p
	}
	if cfg.PrivateKey == nil && cfg.ListenPort == nil {
		return nil
	}
	if err := d.configure(cfg); err != nil {
		return fmt.Errorf("set the key and listen port %d of %s: %w", w.port, w.name, err)
	}
	return nil
}

// Start configures the devices' links for the lease; peers come with Reconcile.
func (b *Backend) Start(ctx context.Context, lease *subnet.Lease) (backend.Network, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case !b.prepared:
		return nil, errors.New("wireguard: Start called before Prepare")
	case b.started:
		return nil, errors.New("wireguard: already started")
	case lease == nil:
		return nil, errors.New("wireguard: no lease")
	}
	if _, ok := lease.FamilySubnet(false); b.node.v4 && !ok {
		return nil, errors.New("wireguard: the lease has no IPv4 subnet")
	}
	if _, ok := lease.FamilySubnet(true); b.node.v6 && !ok {
		return nil, errors.New("wireguard: the lease has no IPv6 subnet")
	}
	own := *lease
	b.node.own = &own
	for _, d := range b.node.devices() {
		n, err := healLink(b.h, &d, b.node.cfg.DeviceMTU(), b.ext.Iface)
		b.reportLink(n)
		if err != nil {
			return nil, fmt.Errorf("wireguard: %w", err)
		}
	}
	b.started = true
	klog.InfoS("wireguard backend started", "implementation", b.impl.name(), "devices", b.names,
		"mtu", b.node.cfg.DeviceMTU(), "publicKey", b.node.pub)
	return b, nil
}

// MTU is the underlay MTU minus 80.
func (b *Backend) MTU() int { return b.node.cfg.DeviceMTU() }

// Devices names the WireGuard devices.
func (b *Backend) Devices() []string { return append([]string(nil), b.names...) }

// RemoveDevices implements backend.Network.
func (b *Backend) RemoveDevices(names []string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return netlinkx.DeleteLinks(b.h, names)
}

// WatchFilter selects the devices, the external interface and the routes in the networks.
func (b *Backend) WatchFilter() kernelwatch.Filter {
	f := kernelwatch.Filter{Devices: b.Devices(), Links: []string{b.ext.Iface.Name}}
	for _, d := range b.node.devices() {
		f.Networks = append(f.Networks, d.networks...)
	}
	return f
}

// Describe says which WireGuard runs the devices, for the verbose readiness output.
func (b *Backend) Describe() string {
	if d := b.described.Load(); d != nil {
		return *d
	}
	return "no devices yet"
}

// Health fails while a device has stopped, until Reconcile restarts it.
func (b *Backend) Health() error {
	list := b.devList.Load()
	if list == nil {
		return nil
	}
	var errs []error
	for _, d := range *list {
		errs = append(errs, d.health())
	}
	return errors.Join(errs...)
}

// settings are the device-wide WireGuard settings. Called with mu held.
func (b *Backend) settings() wgSettings {
	return wgSettings{key: b.key, psk: b.node.cfg.PSK, keepalive: b.node.cfg.PersistentKeepaliveInterval}
}

// Reconcile converges every device, recreated if gone, and its link to the peer leases.
func (b *Backend) Reconcile(ctx context.Context, peers subnet.Peers) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.started {
		return errors.New("wireguard: Reconcile called before Start")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	retry := b.retry
	b.retry = false
	devs, skipped := b.node.desired(peers)
	var refusedProbs []backend.Problem
	reported := map[wgtypes.Key]bool{} // one report per peer and round, whatever its devices
	var errs []error
	for i := range devs {
		if err := ctx.Err(); err != nil {
			return err
		}
		b.holdBack(&devs[i], retry)
		if err := b.reconcileDevice(&devs[i], reported); err != nil {
			errs = append(errs, fmt.Errorf("wireguard: %w", err))
		}
		for _, r := range b.refused[devs[i].name] {
			refusedProbs = append(refusedProbs, backend.Problem{Peer: r.peer.lease, Reason: r.text})
		}
	}
	b.plog.Round(skipped, refusedProbs)
	b.last = devs
	return errors.Join(errs...)
}

// Invalidate makes the next Reconcile retry the peers the devices refused.
func (b *Backend) Invalidate() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.retry = true
}

// holdBack keeps refused peers out of w while the leases want exactly them (none on retry).
func (b *Backend) holdBack(w *devWant, retry bool) {
	refused := b.refused[w.name]
	for k, r := range refused {
		i := slices.IndexFunc(w.peers, func(p peerWant) bool { return p.key == k })
		if retry || i < 0 || !samePeer(w.peers[i], r.peer) {
			delete(refused, k)
			continue
		}
		w.peers = slices.Delete(w.peers, i, i+1)
	}
}

func samePeer(a, b peerWant) bool {
	return a.key == b.key && a.endpoint == b.endpoint && slices.Equal(a.allowed, b.allowed)
}

func (b *Backend) reconcileDevice(w *devWant, reported map[wgtypes.Key]bool) error {
	d := b.devs[w.name]
	recreated, err := d.ensure()
	if err != nil {
		return fmt.Errorf("WireGuard device %s: %w", w.name, err)
	}
	if recreated {
		observe.Count(b.obs, observe.Device, observe.Repair, 1)
		delete(b.sent, w.name)
	}
	n, linkErr := healLink(b.h, w, b.node.cfg.DeviceMTU(), b.ext.Iface)
	b.reportLink(n)
	have, err := d.get()
	if err != nil {
		return errors.Join(linkErr, fmt.Errorf("read WireGuard device %s: %w", w.name, err))
	}
	sent := b.sent[w.name]
	cfg, counts := diffDevice(w, b.settings(), have, sent)
	var failed map[wgtypes.Key]error
	if counts.total() > 0 {
		failed = b.apply(d, cfg)
	}
	b.sent[w.name] = endpointsSent(w, have, cfg, failed, sent)
	if err := b.startHandshakes(d, cfg, failed); err != nil {
		klog.ErrorS(err, "Could not start handshakes with new peers; they start with the first packet", "device", w.name)
	}
	b.reportPeers(counts)
	if counts.total() > 0 {
		klog.V(2).InfoS("WireGuard peers changed", "device", w.name, "added", counts.added, "removed", counts.removed,
			"updated", counts.updated, "failed", len(failed))
	}
	errs := []error{linkErr}
	for k, err := range failed {
		if k == (wgtypes.Key{}) {
			errs = append(errs, fmt.Errorf("configure %s: %w", w.name, err))
			continue
		}
		if e := b.refuse(d, w, k, err, reported); e != nil {
			errs = append(errs, e)
		}
	}
	return errors.Join(errs...)
}

// refuse holds back and removes a peer the device refused, or returns err if not a refusal.
func (b *Backend) refuse(d wgDev, w *devWant, k wgtypes.Key, err error, reported map[wgtypes.Key]bool) error {
	i := slices.IndexFunc(w.peers, func(p peerWant) bool { return p.key == k })
	reason := backend.RefusalReason(err)
	if reason == "" || i < 0 {
		return fmt.Errorf("configure peer %s of %s: %w", k, w.name, err)
	}
	p := w.peers[i]
	if b.refused[w.name] == nil {
		b.refused[w.name] = map[wgtypes.Key]refusal{}
	}
	b.refused[w.name][k] = refusal{peer: p, reason: reason, text: fmt.Sprintf("%s refused the peer (endpoint %s, allowed IPs %v): %v", w.name, p.endpoint, p.allowed, err)}
	w.peers = slices.Delete(w.peers, i, i+1) // the poll compares against what was programmed
	if !reported[k] {
		reported[k] = true
		if b.obs != nil {
			b.obs.PeerProgrammingFailures(reason, 1)
		}
	}
	if e := d.configure(wgtypes.Config{Peers: []wgtypes.PeerConfig{{PublicKey: k, Remove: true}}}); e != nil {
		return fmt.Errorf("remove refused peer %s from %s: %w", k, w.name, e)
	}
	return nil
}

// apply writes cfg, retrying each part alone when refused, so one refused peer does not
// hold up the others; it returns failures by peer key (zero: the device settings).
func (b *Backend) apply(d wgDev, cfg wgtypes.Config) map[wgtypes.Key]error {
	err := d.configure(cfg)
	if err == nil || len(cfg.Peers) == 0 {
		if err != nil {
			return map[wgtypes.Key]error{{}: err}
		}
		return nil
	}
	failed := map[wgtypes.Key]error{}
	if cfg.PrivateKey != nil || cfg.ListenPort != nil {
		if err := d.configure(wgtypes.Config{PrivateKey: cfg.PrivateKey, ListenPort: cfg.ListenPort}); err != nil {
			failed[wgtypes.Key{}] = err
		}
	}
	for _, p := range cfg.Peers {
		if err := d.configure(wgtypes.Config{Peers: []wgtypes.PeerConfig{p}}); err != nil {
			failed[p.PublicKey] = err
		}
	}
	return failed
}

// startHandshakes offers a session to every peer the round added, by turning a keepalive on
// and off: a peer holding a session with a recreated device would otherwise wait ~15 s.
func (b *Backend) startHandshakes(d wgDev, cfg wgtypes.Config, failed map[wgtypes.Key]error) error {
	if b.node.cfg.PersistentKeepaliveInterval != 0 {
		return nil // turned on at the peer's creation already
	}
	on, off := time.Second, time.Duration(0)
	var set, reset []wgtypes.PeerConfig
	for _, p := range cfg.Peers {
		if _, bad := failed[p.PublicKey]; p.Remove || p.UpdateOnly || bad {
			continue
		}
		set = append(set, wgtypes.PeerConfig{PublicKey: p.PublicKey, UpdateOnly: true, PersistentKeepaliveInterval: &on})
		reset = append(reset, wgtypes.PeerConfig{PublicKey: p.PublicKey, UpdateOnly: true, PersistentKeepaliveInterval: &off})
	}
	if len(set) == 0 {
		return nil
	}
	return errors.Join(d.configure(wgtypes.Config{Peers: set}), d.configure(wgtypes.Config{Peers: reset}))
}

// endpointsSent records per peer the endpoint written or found; a roamed peer keeps its record.
func endpointsSent(w *devWant, have *wgtypes.Device, cfg wgtypes.Config, failed map[wgtypes.Key]error, prev map[wgtypes.Key]netip.AddrPort) map[wgtypes.Key]netip.AddrPort {
	out := make(map[wgtypes.Key]netip.AddrPort, len(w.peers))
	wrote := make(map[wgtypes.Key]bool, len(cfg.Peers))
	for _, p := range cfg.Peers {
		if p.Endpoint != nil {
			if _, bad := failed[p.PublicKey]; !bad {
				wrote[p.PublicKey] = true
			}
		}
	}
	cur := make(map[wgtypes.Key]netip.AddrPort, len(have.Peers))
	for i := range have.Peers {
		if ap, ok := addrPort(have.Peers[i].Endpoint); ok {
			cur[have.Peers[i].PublicKey] = ap
		}
	}
	for _, p := range w.peers {
		switch {
		case wrote[p.key] || cur[p.key] == p.endpoint:
			out[p.key] = p.endpoint
		default:
			if ep, ok := prev[p.key]; ok {
				out[p.key] = ep
			}
		}
	}
	return out
}

// Watch polls what no notification reports: the key file, advertising a new key, and the
// devices' peers against the last round.
func (b *Backend) Watch(ctx context.Context, kick func(), advertise func(subnet.LeaseAttrs)) {
	t := time.NewTicker(b.poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if attrs, ok := b.checkKeyFile(); ok {
			advertise(attrs)
			kick()
			continue
		}
		if b.drifted() {
			kick()
		}
	}
}

// checkKeyFile rereads a changed key file (keeping the key if unusable); ok: the key changed.
func (b *Backend) checkKeyFile() (subnet.LeaseAttrs, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.started {
		return subnet.LeaseAttrs{}, false
	}
	if fi, err := os.Stat(b.keyFile); err == nil && stampOf(fi) == b.stamp {
		return subnet.LeaseAttrs{}, false // unchanged: not read again
	}
	key, st, err := readKey(b.keyFile)
	if err != nil {
		msg := err.Error()
		if errors.Is(err, errKeyFileMissing) {
			msg = "the key file was removed; keeping the current key (a restart generates a new one)"
		}
		if msg != b.keyErr {
			b.keyErr = msg
			klog.ErrorS(nil, "Cannot use the WireGuard key file; keeping the current key", "keyFile", b.keyFile, "reason", msg)
		}
		return subnet.LeaseAttrs{}, false
	}
	b.keyErr = ""
	if st == b.stamp || key == b.key {
		b.stamp = st
		return subnet.LeaseAttrs{}, false
	}
	old := b.node.pub
	b.key, b.stamp, b.node.pub = key, st, key.PublicKey()
	klog.InfoS("The WireGuard private key changed; putting it on the devices and advertising the new public key",
		"keyFile", b.keyFile, "oldPublicKey", old, "publicKey", b.node.pub)
	return *b.node.attrs(), true
}

// drifted reports whether a device stopped or differs from the last round's desired state.
func (b *Backend) drifted() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.started || b.last == nil {
		return false
	}
	s := b.settings()
	for i := range b.last {
		d := b.devs[b.last[i].name]
		if d.health() != nil || d.drifted(&b.last[i], s) {
			return true
		}
	}
	return false
}

func (b *Backend) reportLink(n linkCounts) {
	for _, s := range n.strayRoutes {
		klog.InfoS("Removed a stale route", "dst", s.route.Dst, "gateway", s.route.Gw, "device", s.dev, "reason", s.why)
	}
	observe.Count(b.obs, observe.Device, observe.Repair, n.device)
	observe.Count(b.obs, observe.Address, observe.Add, n.addrAdded)
	observe.Count(b.obs, observe.Address, observe.Remove, n.addrRemoved)
	observe.Count(b.obs, observe.Route, observe.Add, n.routesAdded)
	observe.Count(b.obs, observe.Route, observe.Remove, n.routesRemoved)
}

func (b *Backend) reportPeers(c peerCounts) {
	observe.Count(b.obs, observe.Peer, observe.Add, c.added)
	observe.Count(b.obs, observe.Peer, observe.Remove, c.removed)
	observe.Count(b.obs, observe.Peer, observe.Repair, c.updated)
	observe.Count(b.obs, observe.Device, observe.Repair, c.device)
}
