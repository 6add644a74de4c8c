package daemon

import (
	"strconv"

	"github.com/flannel-go/flannel/pkg/logwarn"
	"github.com/flannel-go/flannel/pkg/subnetenv"
)

// noteMTUChange warns when the pods' MTU (FLANNEL_MTU) differs from the one in the
// subnet file a previous run wrote at path (after a change of backend, of the vxlan MTU
// or of the underlay): the MTU of existing pods and of the bridge (cni0, docker0) is set
// when they are created, so they keep the old one until then. Nothing is said without a
// previous file or value.
func noteMTUChange(path string, mtu int) {
	prev, err := subnetenv.Read(path)
	if err != nil {
		return
	}
	old, err := strconv.Atoi(prev["FLANNEL_MTU"])
	if err != nil || old == mtu {
		return
	}
	logwarn.S("FLANNEL_MTU changed: pods and the bridge keep the old MTU until they are recreated",
		"old", old, "new", mtu, "file", path)
}
