package vxlan

import (
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// ChecksumOffload controls the devices' transmit checksum offload: kernels before 5.7
// mis-compute it for SNATed VXLAN packets, which receivers then drop.
type ChecksumOffload uint8

const (
	ChecksumAuto ChecksumOffload = iota // default: off on kernels before 5.7, else left on
	ChecksumOn
	ChecksumOff
)

func (c ChecksumOffload) String() string {
	switch c {
	case ChecksumOn:
		return "on"
	case ChecksumOff:
		return "off"
	}
	return "auto"
}

// parseChecksumOffload reads "auto", "on" or "off" (any case; absent or null is auto).
func parseChecksumOffload(raw []byte) (ChecksumOffload, error) {
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return ChecksumAuto, nil
	}
	if v, err := strconv.Unquote(s); err == nil && strings.HasPrefix(s, `"`) {
		switch strings.ToLower(v) {
		case "auto":
			return ChecksumAuto, nil
		case "on":
			return ChecksumOn, nil
		case "off":
			return ChecksumOff, nil
		}
	}
	return ChecksumAuto, fmt.Errorf(`vxlan: ChecksumOffload must be "auto", "on" or "off", not %s`, s)
}

// checksumFixKernel is the first kernel release whose offload is right for SNATed packets.
var checksumFixKernel = [2]int{5, 7}

// kernelBefore reports whether a release ("5.4.0-150-generic") is older than want, if ok.
func kernelBefore(release string, want [2]int) (before, ok bool) {
	var v [2]int
	rest := release
	for i := range v {
		j := 0
		for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
			j++
		}
		if j == 0 || j > 6 {
			return false, false
		}
		v[i], _ = strconv.Atoi(rest[:j])
		rest = rest[j:]
		if i == 0 {
			if !strings.HasPrefix(rest, ".") {
				return false, false
			}
			rest = rest[1:]
		}
	}
	if v[0] != want[0] {
		return v[0] < want[0], true
	}
	return v[1] < want[1], true
}

// wantTxChecksum decides whether to change the device at all (set) and to what (on).
func wantTxChecksum(mode ChecksumOffload, release string) (on, set bool, why string) {
	switch mode {
	case ChecksumOn:
		return true, true, "ChecksumOffload is on"
	case ChecksumOff:
		return false, true, "ChecksumOffload is off"
	}
	before, ok := kernelBefore(release, checksumFixKernel)
	switch {
	case !ok:
		return false, false, fmt.Sprintf("ChecksumOffload is auto and the kernel release %q is not understood: leaving the device's default", release)
	case before:
		return false, true, fmt.Sprintf("ChecksumOffload is auto and kernel %s is older than %d.%d, whose VXLAN checksum offload breaks SNATed traffic", release, checksumFixKernel[0], checksumFixKernel[1])
	}
	return true, false, fmt.Sprintf("ChecksumOffload is auto and kernel %s is %d.%d or newer: leaving the device's default", release, checksumFixKernel[0], checksumFixKernel[1])
}

func kernelRelease() (string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", fmt.Errorf("uname: %w", err)
	}
	return unix.ByteSliceToString(u.Release[:]), nil
}

// ethtool switches every tx checksum feature with the legacy SIOCETHTOOL commands; ours, as
// safchain/ethtool allocates 2.1 MB per call and mdlayher/ethtool cannot set features.
type ethtool struct {
	socket func() (int, error) // opens a socket in the device's namespace (nil: the caller's)
}

type ethtoolValue struct {
	cmd  uint32
	data uint32
}

// ifreqData is struct ifreq with ifr_data, padded to the union's size.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

func (e ethtool) ioctl(dev string, v *ethtoolValue) error {
	if len(dev) >= unix.IFNAMSIZ {
		return fmt.Errorf("device name %q too long", dev)
	}
	open := e.socket
	if open == nil {
		open = func() (int, error) { return unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0) }
	}
	fd, err := open()
	if err != nil {
		return fmt.Errorf("ethtool socket: %w", err)
	}
	defer unix.Close(fd)
	var ifr ifreqData
	copy(ifr.name[:], dev)
	ifr.data = unsafe.Pointer(v)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	runtime.KeepAlive(v)
	if errno != 0 {
		return errno
	}
	return nil
}

func (e ethtool) txChecksum(dev string) (bool, error) {
	v := ethtoolValue{cmd: unix.ETHTOOL_GTXCSUM}
	if err := e.ioctl(dev, &v); err != nil {
		return false, fmt.Errorf("ethtool: read tx checksum offload of %s: %w", dev, err)
	}
	return v.data != 0, nil
}

func (e ethtool) setTxChecksum(dev string, on bool) error {
	v := ethtoolValue{cmd: unix.ETHTOOL_STXCSUM}
	if on {
		v.data = 1
	}
	if err := e.ioctl(dev, &v); err != nil {
		return fmt.Errorf("ethtool: set tx checksum offload of %s to %v: %w", dev, on, err)
	}
	return nil
}

// applyChecksumOffload brings f's device to the setting and reports it; failures are only
// logged, as the data path works either way.
func (b *Backend) applyChecksumOffload(f *family) {
	if b.ethtool == nil {
		return
	}
	uname := b.kernelRelease
	if uname == nil {
		uname = kernelRelease
	}
	release, err := uname()
	if err != nil {
		klog.ErrorS(err, "Cannot read the kernel release for ChecksumOffload=auto")
	}
	on, set, why := wantTxChecksum(b.vc.ChecksumOffload, release)
	if set {
		cur, err := b.ethtool.txChecksum(f.name)
		if err == nil && cur == on {
			b.reportChecksum(f, on, why, false)
			return
		}
		if err := b.ethtool.setTxChecksum(f.name, on); err != nil {
			klog.ErrorS(err, "Failed to apply ChecksumOffload", "device", f.name, "mode", b.vc.ChecksumOffload, "want", on)
			if errors.Is(err, unix.EOPNOTSUPP) {
				return
			}
		}
	}
	got, err := b.ethtool.txChecksum(f.name)
	if err != nil {
		klog.ErrorS(err, "Cannot read the transmit checksum offload state", "device", f.name)
		return
	}
	if set && got != on {
		klog.ErrorS(nil, "Transmit checksum offload did not take the wanted state", "device", f.name, "want", on, "have", got)
	}
	b.reportChecksum(f, got, why, set)
}

func (b *Backend) reportChecksum(f *family, on bool, why string, changed bool) {
	if changed || !b.csumLogged[f.name] {
		klog.InfoS("vxlan transmit checksum offload", "device", f.name, "txChecksumOffload", on,
			"mode", b.vc.ChecksumOffload, "changed", changed, "reason", why)
		if b.csumLogged == nil {
			b.csumLogged = make(map[string]bool)
		}
		b.csumLogged[f.name] = true
	}
	b.observer().TxChecksumOffload(f.name, on)
}

// TxChecksumState is one device's transmit checksum offload and what the option wants.
type TxChecksumState struct {
	Device        string
	On            bool
	Want, Decided bool // Decided is false when either state is right
	Why           string
}

// TxChecksum reads, changing nothing and needing no Prepare, the existing devices' offload.
func (b *Backend) TxChecksum() ([]TxChecksumState, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ethtool == nil {
		return nil, errors.New("vxlan: the backend's network namespace is not the caller's")
	}
	uname := b.kernelRelease
	if uname == nil {
		uname = kernelRelease
	}
	release, err := uname()
	if err != nil {
		return nil, err
	}
	want, set, why := wantTxChecksum(b.vc.ChecksumOffload, release)
	var out []TxChecksumState
	for _, f := range b.fams {
		on, err := b.ethtool.txChecksum(f.name)
		if errors.Is(err, unix.ENODEV) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, TxChecksumState{Device: f.name, On: on, Want: want, Decided: set, Why: why})
	}
	return out, nil
}

// UDPPort is the VXLAN UDP port the devices use (the kernel's 8472 when Port is 0).
func (b *Backend) UDPPort() int {
	if b.vc.Port == 0 {
		return kernelDefaultPort
	}
	return b.vc.Port
}
