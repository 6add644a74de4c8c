package daemon

import (
	"strconv"

	"github.com/flannel-go/flannel/pkg/logwarn"
	"github.com/flannel-go/flannel/pkg/subnetenv"
)

// noteMTUChange warns when mtu differs from the subnet file's: pods keep theirs until re-created.
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
