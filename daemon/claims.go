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

// ConflictError means another instance in this namespace claims a device, port or range we need.
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

// describe names another instance: first lock, PID, backend, networks, subnet file.
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

// yields reports whether other, colliding with ours (published at mine by socket own), goes
// first: it published earlier, never, or at the same time from a lower socket name.
func yields(other control.Instance, mine time.Time, own string) bool {
	switch {
	case other.ClaimedAt.IsZero() || other.ClaimedAt.Before(mine):
		return true
	case other.ClaimedAt.Equal(mine):
		return other.Socket < own
	}
	return false
}

const instancesTimeout = 30 * time.Second

// checkClaims publishes mine and returns the other instances, or a *ConflictError for the first one
// that collides and goes first; unreachable ones are only logged (the kernel refuses duplicates).
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

// listInstances asks the other instances for statuses, logging and skipping those without.
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

// warnRecordedDevices warns about each device of mine that a stopped instance's state file records.
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

// withoutClaimed drops, logging each, the stale devices another running instance claims or owns.
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
