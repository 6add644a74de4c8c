package daemon

import (
	"strconv"

	"github.com/flannel-go/flannel/pkg/logwarn"
	"github.com/flannel-go/flannel/pkg/subnetenv"
)

// noteMTUChange warns when the pods' MTU differs from the one a previous run wrote to the
// subnet file at path: existing pods and the bridge keep their MTU until re-created.
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
