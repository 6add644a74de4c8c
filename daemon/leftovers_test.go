package daemon

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/subnet"
)

// What a previous run left goes through its own type's remover when the type changed and
// has one (with the previous lease, even when no device is stale), otherwise through the
// current network's RemoveDevices, and only when a device is stale.
func TestRemoveLeftovers(t *testing.T) {
	wgState := func(devices ...string) *state {
		return &state{Key: "10.5.3.0-24", Attrs: subnet.LeaseAttrs{BackendType: "wireguard"}, Devices: devices}
	}
	cases := []struct {
		name        string
		prev        *state
		curType     string
		stale       []string
		wantRemover []string // devices handed to the wireguard remover; nil: not called
		wantNetwork []string // devices handed to the network's RemoveDevices
	}{
		{name: "wireguard to vxlan", prev: wgState("flannel-wg"), curType: "vxlan", stale: []string{"flannel-wg"}, wantRemover: []string{"flannel-wg"}},
		{name: "wireguard to vxlan, devices another instance's now", prev: wgState("flannel-wg"), curType: "vxlan", wantRemover: []string{}},
		{name: "wireguard to wireguard", prev: wgState("flannel-wg", "flannel-wg-v6"), curType: "wireguard", stale: []string{"flannel-wg-v6"}, wantNetwork: []string{"flannel-wg-v6"}},
		{name: "type recorded in capitals", prev: &state{Key: "10.5.3.0-24", Attrs: subnet.LeaseAttrs{BackendType: "WireGuard"}}, curType: "wireguard"},
		{name: "vxlan to wireguard", prev: &state{Key: "10.5.3.0-24", Attrs: subnet.LeaseAttrs{BackendType: "vxlan"}, Devices: []string{"flannel.1"}},
			curType: "wireguard", stale: []string{"flannel.1"}, wantNetwork: []string{"flannel.1"}},
		{name: "no type recorded", prev: &state{Key: "10.5.3.0-24", Devices: []string{"flannel.1"}}, curType: "vxlan", stale: []string{"flannel.1"}, wantNetwork: []string{"flannel.1"}},
		{name: "no state", curType: "vxlan"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var gotRemover []string
			var gotPrev *subnet.Lease
			leftovers := map[string]backend.LeftoverRemover{"wireguard": func(prev *subnet.Lease, devices []string) error {
				gotRemover, gotPrev = append([]string{}, devices...), prev
				return nil
			}}
			nw := &fakeBackend{}
			removeLeftovers(c.prev, c.curType, c.stale, nw, leftovers)
			if !slices.Equal(gotRemover, c.wantRemover) || (gotRemover == nil) != (c.wantRemover == nil) {
				t.Errorf("wireguard remover got %q, want %q", gotRemover, c.wantRemover)
			}
			if gotRemover != nil && gotPrev.Subnet != netip.MustParsePrefix("10.5.3.0/24") {
				t.Errorf("wireguard remover got lease %+v, want the recorded 10.5.3.0/24", gotPrev)
			}
			if !slices.Equal(nw.removed, c.wantNetwork) {
				t.Errorf("RemoveDevices got %q, want %q", nw.removed, c.wantNetwork)
			}
		})
	}
}
