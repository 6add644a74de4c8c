package daemon

import (
	"slices"
	"strings"

	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/subnet"
)

// removeLeftovers removes what the previous run left that this one does not use: the stale
// devices, through the previous backend type's remover when the type changed and it has one
// (which also removes what that type installs beside them), else through nw.
func removeLeftovers(prev *state, curType string, stale []string, nw backend.Network, leftovers map[string]backend.LeftoverRemover) {
	remove := leftoverRemover(prev, curType, leftovers)
	if remove == nil {
		if len(stale) == 0 {
			return
		}
		remove = func(_ *subnet.Lease, names []string) error { return nw.RemoveDevices(names) }
	}
	prevType := prev.Attrs.BackendType
	if err := remove(prev.previousLease(), stale); err != nil {
		klog.ErrorS(err, "Failed to remove what a previous configuration left", "previousBackend", prevType, "devices", stale)
	} else {
		klog.InfoS("Removed what a previous configuration left", "previousBackend", prevType, "devices", stale)
	}
}

// leftoverRemover is the remover of the previous run's backend type when it differs from
// curType; nil when the types agree, nothing was recorded, or the type has none.
func leftoverRemover(prev *state, curType string, leftovers map[string]backend.LeftoverRemover) backend.LeftoverRemover {
	if prev == nil {
		return nil
	}
	t := strings.ToLower(prev.Attrs.BackendType)
	if t == "" || t == curType {
		return nil
	}
	return leftovers[t]
}

// staleDevices are the devices a previous run recorded that the current network does not use.
func staleDevices(prev *state, current []string) []string {
	if prev == nil {
		return nil
	}
	var stale []string
	for _, name := range prev.Devices {
		if !slices.Contains(current, name) {
			stale = append(stale, name)
		}
	}
	return stale
}
