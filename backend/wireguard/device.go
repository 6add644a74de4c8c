package wireguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/pkg/netlinkx"
	"github.com/flannel-go/flannel/pkg/tunx"
)

// wgDev is one WireGuard device of either implementation; its link is handled by name.
type wgDev interface {
	// ensure recreates a vanished or stopped device; recreated: every setting is gone.
	ensure() (recreated bool, err error)
	get() (*wgtypes.Device, error)
	configure(cfg wgtypes.Config) error
	// drifted is Watch's cheap poll; a device it cannot read counts as drifted.
	drifted(want *devWant, s wgSettings) bool
	health() error // nil while the device runs
}

// implementation creates or adopts the devices of one kind.
type implementation interface {
	name() string // "kernel" or "userspace"
	// open adopts the device of this kind or creates it, replacing a link of another kind.
	open(name string, mtu, port int) (dev wgDev, created bool, err error)
}

// Implementation names, the values of flannel_wireguard_implementation{impl}.
const (
	implKernel    = "kernel"
	implUserspace = "userspace"
)

// errNoKernelWireGuard means the kernel refused the wireguard link type.
var errNoKernelWireGuard = errors.New("the kernel has no WireGuard (wireguard link type not supported)")

const linkType = "wireguard"

type nlHandle interface {
	LinkByName(name string) (netlink.Link, error)
	LinkAdd(link netlink.Link) error
	LinkDel(link netlink.Link) error
	LinkSetUp(link netlink.Link) error
	LinkSetMTU(link netlink.Link, mtu int) error
	AddrList(link netlink.Link, family int) ([]netlink.Addr, error)
	AddrAdd(link netlink.Link, addr *netlink.Addr) error
	AddrDel(link netlink.Link, addr *netlink.Addr) error
	RouteListFiltered(family int, filter *netlink.Route, filterMask uint64) ([]netlink.Route, error)
	RouteListFilteredIter(family int, filter *netlink.Route, filterMask uint64, f func(netlink.Route) (cont bool)) error
	RouteAdd(route *netlink.Route) error
	RouteReplace(route *netlink.Route) error
	RouteDel(route *netlink.Route) error
}

var _ nlHandle = (*netlink.Handle)(nil)

// wgClient is the part of wgctrl.Client the kernel implementation uses.
type wgClient interface {
	Device(name string) (*wgtypes.Device, error)
	ConfigureDevice(name string, cfg wgtypes.Config) error
	Close() error
}

// kernelImpl runs the devices in the kernel; a restart adopts them with peers and sessions.
type kernelImpl struct {
	h  nlHandle
	wg wgClient
}

func (k *kernelImpl) name() string { return implKernel }

func (k *kernelImpl) open(name string, mtu, _ int) (wgDev, bool, error) {
	d := &kernelDev{h: k.h, wg: k.wg, name: name, mtu: mtu}
	link, err := k.h.LinkByName(name)
	if err == nil && link.Type() == linkType {
		return d, false, nil
	}
	if err != nil && !netlinkx.IsNotFound(err) {
		return nil, false, fmt.Errorf("look up %s: %w", name, err)
	}
	if err := k.create(name, mtu); err != nil {
		return nil, false, err
	}
	return d, true, nil
}

// create adds the kernel device, replacing a link of another kind only once a probe device
// showed that the kernel supports the link type.
func (k *kernelImpl) create(name string, mtu int) error {
	add := func(n string) error {
		la := netlink.NewLinkAttrs()
		la.Name, la.MTU = n, mtu
		err := k.h.LinkAdd(&netlink.Wireguard{LinkAttrs: la})
		if errors.Is(err, unix.EOPNOTSUPP) {
			return fmt.Errorf("create %s: %w: %v", n, errNoKernelWireGuard, err)
		}
		if err != nil {
			return fmt.Errorf("create %s: %w", n, err)
		}
		return nil
	}
	old, err := k.h.LinkByName(name)
	if err != nil {
		return add(name)
	}
	probe := name + "-p"
	if err := add(probe); err != nil {
		return err
	}
	if l, err := k.h.LinkByName(probe); err == nil {
		_ = k.h.LinkDel(l)
	}
	klog.InfoS("Removing a device of another kind that has the WireGuard device's name", "device", name, "type", old.Type())
	if err := k.h.LinkDel(old); err != nil && !netlinkx.IsNotFound(err) {
		return fmt.Errorf("remove %s (%s): %w", name, old.Type(), err)
	}
	return add(name)
}

type kernelDev struct {
	h    nlHandle
	wg   wgClient
	name string
	mtu  int
}

func (d *kernelDev) ensure() (bool, error) {
	link, err := d.h.LinkByName(d.name)
	if err == nil && link.Type() == linkType {
		return false, nil
	}
	if err != nil && !netlinkx.IsNotFound(err) {
		return false, fmt.Errorf("look up %s: %w", d.name, err)
	}
	k := kernelImpl{h: d.h, wg: d.wg}
	if err := k.create(d.name, d.mtu); err != nil {
		return false, err
	}
	klog.InfoS("Recreated the WireGuard device", "device", d.name, "implementation", implKernel)
	return true, nil
}

func (d *kernelDev) get() (*wgtypes.Device, error) { return d.wg.Device(d.name) }

func (d *kernelDev) configure(cfg wgtypes.Config) error { return d.wg.ConfigureDevice(d.name, cfg) }

func (d *kernelDev) health() error { return nil }

func (d *kernelDev) drifted(want *devWant, s wgSettings) bool {
	have, err := d.get()
	return err != nil || drifted(want, s, have)
}

// userspaceImpl runs the devices in flanneld on TUN devices until ctx ends.
type userspaceImpl struct {
	h   nlHandle
	ctx context.Context
}

func (u *userspaceImpl) name() string { return implUserspace }

func (u *userspaceImpl) open(name string, mtu, port int) (wgDev, bool, error) {
	d := &userDev{h: u.h, ctx: u.ctx, name: name, mtu: mtu, port: port}
	if err := d.start(); err != nil {
		return nil, false, err
	}
	go func() {
		<-u.ctx.Done()
		d.mu.Lock()
		d.stop()
		d.mu.Unlock()
	}()
	return d, true, nil
}

type userDev struct {
	h    nlHandle
	ctx  context.Context
	name string
	mtu  int

	mu   sync.Mutex
	dev  *device.Device // nil when stopped
	uapi net.Listener   // nil when the socket could not be served
	port int            // listen port a (re)started device binds at once
}

// start replaces any link of the name with a running device; called with mu held or
// before the device is shared.
func (d *userDev) start() error {
	if d.ctx.Err() != nil {
		return d.ctx.Err()
	}
	if link, err := d.h.LinkByName(d.name); err == nil {
		klog.InfoS("Removing the existing device before creating the userspace WireGuard device", "device", d.name, "type", link.Type())
		if err := d.h.LinkDel(link); err != nil && !netlinkx.IsNotFound(err) {
			return fmt.Errorf("remove %s (%s): %w", d.name, link.Type(), err)
		}
	}
	t, name, offloads, err := tunx.Open(d.name)
	if err != nil {
		return err
	}
	if link, err := d.h.LinkByName(name); err != nil {
		_ = t.Close()
		return fmt.Errorf("look up %s: %w", name, err)
	} else if err := d.h.LinkSetMTU(link, d.mtu); err != nil {
		_ = t.Close()
		return fmt.Errorf("set MTU %d on %s: %w", d.mtu, name, err)
	}
	dev := device.NewDevice(t, conn.NewDefaultBind(), deviceLogger(name))
	if d.port != 0 {
		if err := dev.IpcSet(fmt.Sprintf("listen_port=%d\n", d.port)); err != nil {
			dev.Close()
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	if err := dev.Up(); err != nil {
		dev.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	d.dev = dev
	d.serveUAPI()
	klog.V(2).InfoS("Userspace WireGuard device running", "device", name, "tunOffloads", offloads, "batch", t.BatchSize())
	return nil
}

// serveUAPI answers wg(8) on /var/run/wireguard/<name>.sock until the device stops, best effort.
func (d *userDev) serveUAPI() {
	f, err := ipc.UAPIOpen(d.name)
	if err != nil {
		klog.ErrorS(err, "Cannot serve the WireGuard UAPI socket; the device works, but wg(8) cannot show or change it", "device", d.name)
		return
	}
	l, err := ipc.UAPIListen(d.name, f)
	_ = f.Close()
	if err != nil {
		klog.ErrorS(err, "Cannot serve the WireGuard UAPI socket; the device works, but wg(8) cannot show or change it", "device", d.name)
		return
	}
	d.uapi = l
	dev := d.dev
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go dev.IpcHandle(c)
		}
	}()
}

// stop closes the UAPI socket and the device (its TUN goes with it). Called with mu held.
func (d *userDev) stop() {
	if d.uapi != nil {
		_ = d.uapi.Close()
		d.uapi = nil
	}
	if d.dev != nil {
		d.dev.Close()
		d.dev = nil
	}
}

func (d *userDev) closed() bool {
	if d.dev == nil {
		return true
	}
	select {
	case <-d.dev.Wait():
		return true
	default:
		return false
	}
}

func (d *userDev) ensure() (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.closed() {
		if _, err := d.h.LinkByName(d.name); err == nil {
			return false, nil
		} else if !netlinkx.IsNotFound(err) {
			return false, fmt.Errorf("look up %s: %w", d.name, err)
		}
	}
	d.stop()
	if err := d.start(); err != nil {
		return false, err
	}
	klog.InfoS("Recreated the WireGuard device", "device", d.name, "implementation", implUserspace)
	return true, nil
}

func (d *userDev) get() (*wgtypes.Device, error) {
	d.mu.Lock()
	dev := d.dev
	d.mu.Unlock()
	if dev == nil {
		return nil, fmt.Errorf("%s is stopped", d.name)
	}
	text, err := dev.IpcGet()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", d.name, err)
	}
	wd, err := parseUAPI(text)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", d.name, err)
	}
	wd.Name = d.name
	return wd, nil
}

func (d *userDev) configure(cfg wgtypes.Config) error {
	d.mu.Lock()
	dev := d.dev
	if cfg.ListenPort != nil {
		d.port = *cfg.ListenPort
	}
	d.mu.Unlock()
	if dev == nil {
		return fmt.Errorf("%s is stopped", d.name)
	}
	if err := dev.IpcSet(uapiSet(cfg)); err != nil {
		// the device's codes are negated errnos, as the kernel's answers are errnos
		var ipcErr *device.IPCError
		if errors.As(err, &ipcErr) && ipcErr.ErrorCode() < 0 {
			return fmt.Errorf("configure %s: %w (%w)", d.name, err, syscall.Errno(-ipcErr.ErrorCode()))
		}
		return fmt.Errorf("configure %s: %w", d.name, err)
	}
	return nil
}

// drifted reads the device's configuration text without parsing it into wgtypes.
func (d *userDev) drifted(want *devWant, s wgSettings) bool {
	d.mu.Lock()
	dev := d.dev
	d.mu.Unlock()
	if dev == nil {
		return true
	}
	text, err := dev.IpcGet()
	return err != nil || uapiDrifted(text, want, s)
}

func (d *userDev) health() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed() {
		return fmt.Errorf("the userspace WireGuard device %s has stopped", d.name)
	}
	return nil
}

// deviceLogger logs the device's errors at -v=1 only, as they repeat while they last.
func deviceLogger(name string) *device.Logger {
	return &device.Logger{
		Verbosef: func(format string, args ...any) {
			if v := klog.V(4); v.Enabled() {
				v.InfoS("wireguard-go: "+fmt.Sprintf(format, args...), "device", name)
			}
		},
		Errorf: func(format string, args ...any) {
			if v := klog.V(1); v.Enabled() {
				v.InfoS("wireguard-go: "+fmt.Sprintf(format, args...), "device", name)
			}
		},
	}
}
