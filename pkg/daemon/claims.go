package daemon

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/claim"
	"github.com/flannel-go/flannel/pkg/control"
	"github.com/flannel-go/flannel/subnet"
)

// ConflictError means another instance in the network namespace claims a device, a port
// or a network range this instance's config asks for: the daemon refuses to start.
type ConflictError struct {
	Conflicts []claim.Conflict // ours that collide, the first one reported
	Other     string           // the other instance, in words
}

// Error is one line: what is taken, by whom, and what to change.
func (e *ConflictError) Error() string {
	c := e.Conflicts[0]
	s := fmt.Sprintf("%s is taken by %s: %s", c, e.Other, c.Remedy())
	if more := e.Conflicts[1:]; len(more) > 0 {
		strs := make([]string, len(more))
		for i, m := range more {
			strs[i] = m.String()
		}
		s += fmt.Sprintf(" (also taken: %s)", strings.Join(strs, "; "))
	}
	return s
}

// ownClaims is what this instance takes: its backend's claims and its networks.
func ownClaims(cfg *subnet.Config, be backend.Backend) claim.Set {
	var s claim.Set
	if c, ok := be.(backend.Claimer); ok {
		s = c.Claims()
	}
	if cfg.EnableIPv4 && cfg.Network.IsValid() {
		s.Networks = append(s.Networks, cfg.Network.Masked())
	}
	if cfg.EnableIPv6 && cfg.IPv6Network.IsValid() {
		s.Networks = append(s.Networks, cfg.IPv6Network.Masked())
	}
	return s
}

// describe names another instance for a message: its first lock (the network), PID,
// backend, networks and subnet file.
func describe(in control.Instance) string {
	name := "the flanneld"
	if len(in.Locks) > 0 {
		name += " of " + in.Locks[0]
	}
	details := []string{fmt.Sprintf("pid %d", in.PID)}
	if in.BackendType != "" {
		details = append(details, "backend "+in.BackendType)
	}
	for _, n := range []netip.Prefix{in.Network, in.IPv6Network} {
		if n.IsValid() {
			details = append(details, "network "+n.String())
		}
	}
	if in.SubnetFile != "" {
		details = append(details, "subnet file "+in.SubnetFile)
	}
	return name + " (" + strings.Join(details, ", ") + ")"
}

// yields reports whether an instance whose claims collide with ours, published at
// mine by the instance at socket own, goes first: it published earlier (or published
// no time: an older daemon, or one already running), or at the same time from a lower
// socket name. The rule is the same on both sides, and each instance publishes before it
// looks, so of two that start together exactly one refuses.
func yields(other control.Instance, mine time.Time, own string) bool {
	switch {
	case other.ClaimedAt.IsZero() || other.ClaimedAt.Before(mine):
		return true
	case other.ClaimedAt.Equal(mine):
		return other.Socket < own
	}
	return false
}

// instancesTimeout bounds the questions to the other instances.
const instancesTimeout = 30 * time.Second

// checkClaims publishes mine in the status and compares it with the claims of every
// other instance in the network namespace, which it returns. It returns a
// *ConflictError naming the first instance that goes first (yields) and collides with
// mine. Instances that cannot be asked are logged and not checked: the kernel still
// refuses a second device with the same VNI and port, or a second socket on a port.
func checkClaims(ctx context.Context, deps Deps, mine claim.Set) ([]control.Found, error) {
	at := time.Now()
	deps.Status.setClaims(mine, at)
	found := listInstances(ctx, deps)
	own := deps.Status.socket()
	for _, f := range found {
		cs := claim.Conflicts(mine, f.Status.Instance.ClaimSet())
		if len(cs) == 0 {
			continue
		}
		if !yields(f.Status.Instance, at, own) {
			klog.InfoS("Another flanneld instance claims what this one does and started claiming later; it refuses to start",
				"other", describe(f.Status.Instance), "conflict", cs[0].String())
			continue
		}
		return found, &ConflictError{Conflicts: cs, Other: describe(f.Status.Instance)}
	}
	return found, nil
}

// listInstances asks the other instances (Deps.Instances) for their statuses; those
// that gave none are logged and left out. Without Deps.Instances there are none.
func listInstances(ctx context.Context, deps Deps) []control.Found {
	if deps.Instances == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, instancesTimeout)
	defer cancel()
	found, err := deps.Instances(ctx)
	if err != nil {
		klog.ErrorS(err, "Cannot look for other flanneld instances on this node; their devices and ports are not compared with ours")
		return nil
	}
	return slices.DeleteFunc(found, func(f control.Found) bool {
		if f.Status == nil {
			klog.ErrorS(f.Err, "Another flanneld instance's control socket did not answer; what it owns is not compared with ours", "socket", f.Socket)
		}
		return f.Status == nil
	})
}

// warnRecordedDevices warns about each device of mine that exists and that the state
// file of an instance not running records (a state file beside ours, other than ours
// and those of the running instances, found): a stopped instance of another network
// may come back for it. The daemon adopts it all the same, as the config names exactly
// that device.
func warnRecordedDevices(ownState string, mine claim.Set, found []control.Found) {
	files, err := filepath.Glob(filepath.Join(filepath.Dir(ownState), "*"+stateSuffix))
	if err != nil || len(files) == 0 {
		return
	}
	running := map[string]bool{ownState: true}
	for _, f := range found {
		if sf := f.Status.Instance.SubnetFile; sf != "" {
			running[statePath(sf)] = true
		}
	}
	for _, path := range files {
		if running[path] {
			continue
		}
		st, err := readState(path)
		if err != nil || st == nil {
			continue
		}
		for _, d := range mine.Devices {
			if !slices.Contains(st.Devices, d.Name) {
				continue
			}
			if _, err := net.InterfaceByName(d.Name); err != nil {
				continue // not there: nothing is adopted
			}
			remedy := "only one of the two can run on this node"
			if d.SetBy != "" {
				remedy = "give one of the two networks another " + d.SetBy
			}
			klog.ErrorS(nil, "Adopting a device recorded by the state file of a flanneld instance that is not running; "+
				"if that instance serves another network, "+remedy, "device", d.Name, "stateFile", path)
		}
	}
}

// withoutClaimed drops from stale (devices of a previous configuration of this
// instance) those another running instance claims or owns now, and logs each.
func withoutClaimed(stale []string, found []control.Found) []string {
	return slices.DeleteFunc(stale, func(name string) bool {
		for _, f := range found {
			theirs := f.Status.Instance.ClaimSet()
			if slices.ContainsFunc(theirs.Devices, func(d claim.Device) bool { return d.Name == name }) {
				klog.InfoS("Leaving a device of a previous configuration to the instance that uses it now",
					"device", name, "other", describe(f.Status.Instance))
				return true
			}
		}
		return false
	})
}
