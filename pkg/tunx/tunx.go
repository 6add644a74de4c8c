// Package tunx opens non-persistent TUN devices for flanneld's userspace data paths, with
// IFF_VNET_HDR and TCP offloads when the kernel grants them, else plain IFF_TUN|IFF_NO_PI.
package tunx

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
	"k8s.io/klog/v2"
)

// CloneDevice is the TUN clone device.
const CloneDevice = "/dev/net/tun"

// Open creates the TUN device name, or the first free one for a template ("flannel%d"),
// and returns it, its name and whether the offloads are on. The caller owns its link state.
func Open(name string) (dev tun.Device, actual string, offloads bool, err error) {
	for _, vnet := range []bool{true, false} {
		fd, err := unix.Open(CloneDevice, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, "", false, fmt.Errorf("open %s: %w", CloneDevice, err)
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			_ = unix.Close(fd)
			return nil, "", false, err
		}
		flags := uint16(unix.IFF_TUN | unix.IFF_NO_PI)
		if vnet {
			flags |= unix.IFF_VNET_HDR
		}
		ifr.SetUint16(flags)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			_ = unix.Close(fd)
			if vnet {
				continue
			}
			return nil, "", false, fmt.Errorf("create TUN %s: %w", name, err)
		}
		if vnet {
			// the library requires TCP offloads with IFF_VNET_HDR: a refusal falls back
			if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, unix.TUN_F_CSUM|unix.TUN_F_TSO4|unix.TUN_F_TSO6); err != nil {
				_ = unix.Close(fd)
				klog.InfoS("TUN offloads unavailable; moving one packet per read", "device", name, "err", err)
				continue
			}
		}
		dev, actual, err := tun.CreateUnmonitoredTUNFromFD(fd)
		if err != nil {
			// the library wrapped fd in an *os.File already; its finalizer closes it
			return nil, "", false, fmt.Errorf("set up TUN: %w", err)
		}
		return dev, actual, vnet, nil
	}
	return nil, "", false, errors.New("unreachable")
}
