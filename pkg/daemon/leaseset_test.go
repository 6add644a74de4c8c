package daemon

import (
	"encoding/json"
	"net/netip"
	"testing"

	"github.com/flannel-go/flannel/subnet"
)

func lease(sn, pub, mac string) subnet.Lease {
	return subnet.Lease{EnableIPv4: true, Subnet: netip.MustParsePrefix(sn), Attrs: subnet.LeaseAttrs{
		PublicIP: netip.MustParseAddr(pub), BackendType: "vxlan",
		BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"` + mac + `"}`)}}
}

func keys(ls []subnet.Lease) []string {
	var out []string
	for _, l := range ls {
		out = append(out, l.Key())
	}
	return out
}

func TestLeaseSet(t *testing.T) {
	own := lease("10.5.1.0/24", "192.0.2.11", "aa:aa:aa:aa:aa:01")
	a := lease("10.5.2.0/24", "192.0.2.12", "aa:aa:aa:aa:aa:02")
	b := lease("10.5.3.0/24", "192.0.2.13", "aa:aa:aa:aa:aa:03")
	b2 := lease("10.5.3.0/24", "192.0.2.13", "aa:aa:aa:aa:aa:33")
	s := newLeaseSet(own.Key())

	steps := []struct {
		name    string
		in      subnet.WatchResult
		changed bool
		want    []string
	}{
		{"empty first snapshot still counts as a change (sync)", subnet.WatchResult{Snapshot: []subnet.Lease{}}, true, nil},
		{"snapshot with own lease", subnet.WatchResult{Snapshot: []subnet.Lease{own, a}}, true, []string{"10.5.2.0-24"}},
		{"same snapshot again", subnet.WatchResult{Snapshot: []subnet.Lease{a, own}}, false, []string{"10.5.2.0-24"}},
		{"add b", subnet.WatchResult{Events: []subnet.Event{{Type: subnet.EventAdded, Lease: b}}}, true, []string{"10.5.2.0-24", "10.5.3.0-24"}},
		{"re-add b unchanged (renewal)", subnet.WatchResult{Events: []subnet.Event{{Type: subnet.EventAdded, Lease: b}}}, false, []string{"10.5.2.0-24", "10.5.3.0-24"}},
		{"b changes MAC", subnet.WatchResult{Events: []subnet.Event{{Type: subnet.EventAdded, Lease: b2}}}, true, []string{"10.5.2.0-24", "10.5.3.0-24"}},
		{"own lease events ignored", subnet.WatchResult{Events: []subnet.Event{{Type: subnet.EventRemoved, Lease: own}}}, false, []string{"10.5.2.0-24", "10.5.3.0-24"}},
		{"remove a", subnet.WatchResult{Events: []subnet.Event{{Type: subnet.EventRemoved, Lease: subnet.Lease{Subnet: a.Subnet}}}}, true, []string{"10.5.3.0-24"}},
		{"remove unknown", subnet.WatchResult{Events: []subnet.Event{{Type: subnet.EventRemoved, Lease: a}}}, false, []string{"10.5.3.0-24"}},
		{"snapshot after compaction replaces", subnet.WatchResult{Snapshot: []subnet.Lease{a}}, true, []string{"10.5.2.0-24"}},
	}
	for _, st := range steps {
		if got := s.apply(st.in); got != st.changed {
			t.Errorf("%s: changed=%v want %v", st.name, got, st.changed)
		}
		got := keys(s.peers())
		if len(got) != len(st.want) {
			t.Fatalf("%s: peers %v want %v", st.name, got, st.want)
		}
		for i := range got {
			if got[i] != st.want[i] {
				t.Fatalf("%s: peers %v want %v", st.name, got, st.want)
			}
		}
	}
	if p := s.peers(); string(p[0].Attrs.BackendData) != string(a.Attrs.BackendData) {
		t.Fatal("lease content lost")
	}
}
