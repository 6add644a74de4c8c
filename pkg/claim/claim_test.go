package claim

import (
	"encoding/json"
	"net/netip"
	"slices"
	"testing"
)

func vxlanPort(fam string, port, vni int) Port {
	return Port{Family: fam, Port: port, VNI: vni, SetBy: "Backend.Port"}
}

func udpPort(addr string, port int) Port {
	return Port{Family: IPv4, Port: port, Addr: netip.MustParseAddr(addr), SetBy: "Backend.Port"}
}

func TestConflicts(t *testing.T) {
	net := netip.MustParsePrefix
	vxlan1 := Set{Devices: []Device{{Name: "flannel.1", SetBy: "Backend.VNI"}}, Ports: []Port{vxlanPort(IPv4, 8472, 1)},
		Networks: []netip.Prefix{net("10.5.0.0/16")}}
	tests := []struct {
		name         string
		ours, theirs Set
		want         []string // Conflict.String
		wantRemedies []string
	}{
		{"nothing shared", vxlan1,
			Set{Devices: []Device{{Name: "flannel.2"}}, Ports: []Port{vxlanPort(IPv4, 8472, 2)}, Networks: []netip.Prefix{net("10.6.0.0/16")}},
			nil, nil},
		{"same VNI: the device and the kernel's VNI on the port", vxlan1,
			Set{Devices: []Device{{Name: "flannel.1"}}, Ports: []Port{vxlanPort(IPv4, 8472, 1)}, Networks: []netip.Prefix{net("10.6.0.0/16")}},
			[]string{"device flannel.1", "VXLAN VNI 1 on UDP port 8472 (IPv4)"},
			[]string{"set another Backend.VNI in this network's config", "set another Backend.Port in this network's config"}},
		{"same VNI on another port: the kernel allows it", Set{Ports: []Port{vxlanPort(IPv4, 8472, 1)}},
			Set{Ports: []Port{vxlanPort(IPv4, 4789, 1)}}, nil, nil},
		{"same VNI and port in the other family: the kernel allows it", Set{Ports: []Port{vxlanPort(IPv4, 8472, 1)}},
			Set{Ports: []Port{vxlanPort(IPv6, 8472, 1)}}, nil, nil},
		{"a udp socket on a VXLAN port", Set{Ports: []Port{udpPort("192.0.2.11", 8472)}},
			Set{Ports: []Port{vxlanPort(IPv4, 8472, 7)}},
			[]string{"UDP port 8472 (IPv4, 192.0.2.11) (theirs: VXLAN VNI 7 on UDP port 8472 (IPv4))"},
			[]string{"set another Backend.Port in this network's config"}},
		{"two udp sockets on one address", Set{Ports: []Port{udpPort("192.0.2.11", 8285)}},
			Set{Ports: []Port{udpPort("192.0.2.11", 8285)}},
			[]string{"UDP port 8285 (IPv4, 192.0.2.11)"}, []string{"set another Backend.Port in this network's config"}},
		{"two udp sockets on two addresses", Set{Ports: []Port{udpPort("192.0.2.11", 8285)}},
			Set{Ports: []Port{udpPort("198.51.100.11", 8285)}}, nil, nil},
		{"a port nobody chooses", Set{Ports: []Port{{Family: IPv6, Port: 51820}}}, Set{Ports: []Port{{Family: IPv6, Port: 51820}}},
			[]string{"UDP port 51820 (IPv6)"}, []string{"run only one of the two on this node"}},
		{"overlapping networks", Set{Networks: []netip.Prefix{net("10.5.0.0/16"), net("2001:db8:5::/48")}},
			Set{Networks: []netip.Prefix{net("10.0.0.0/8")}},
			[]string{"network 10.5.0.0/16 (theirs: 10.0.0.0/8)"},
			[]string{"set another Network, one that does not overlap theirs, in this network's config"}},
		{"the same network", Set{Networks: []netip.Prefix{net("2001:db8:5::/48")}}, Set{Networks: []netip.Prefix{net("2001:db8:5::/48")}},
			[]string{"network 2001:db8:5::/48"}, []string{"set another IPv6Network, one that does not overlap theirs, in this network's config"}},
		{"empty sets", Set{}, Set{}, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Conflicts(tt.ours, tt.theirs)
			var strs, remedies []string
			for _, c := range got {
				strs, remedies = append(strs, c.String()), append(remedies, c.Remedy())
			}
			if !slices.Equal(strs, tt.want) || !slices.Equal(remedies, tt.wantRemedies) {
				t.Errorf("Conflicts = %q %q, want %q %q", strs, remedies, tt.want, tt.wantRemedies)
			}
			// A collision is a collision from either side.
			if back := Conflicts(tt.theirs, tt.ours); (len(back) == 0) != (len(got) == 0) {
				t.Errorf("not symmetric: %v one way, %v the other", got, back)
			}
		})
	}
}

// The set's JSON is part of the control socket's status document.
func TestSetJSON(t *testing.T) {
	s := Set{Devices: []Device{{Name: "flannel.1", SetBy: "Backend.VNI"}},
		Ports:    []Port{vxlanPort(IPv4, 8472, 1), udpPort("192.0.2.11", 8285)},
		Networks: []netip.Prefix{netip.MustParsePrefix("10.5.0.0/16")}}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"devices":[{"name":"flannel.1","setBy":"Backend.VNI"}],"ports":[{"family":"ipv4","port":8472,"vni":1,"setBy":"Backend.Port"},` +
		`{"family":"ipv4","port":8285,"addr":"192.0.2.11","setBy":"Backend.Port"}],"networks":["10.5.0.0/16"]}`
	if string(b) != want {
		t.Errorf("JSON\n got %s\nwant %s", b, want)
	}
	var back Set
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if len(Conflicts(s, back)) != 4 {
		t.Errorf("decoded %+v does not collide with itself in full", back)
	}
}

func TestDevices(t *testing.T) {
	got := Devices([]string{"flannel0", "flannel.9"})
	if len(got) != 2 || got[0] != (Device{Name: "flannel0"}) || got[1] != (Device{Name: "flannel.9"}) {
		t.Errorf("Devices = %+v", got)
	}
}
