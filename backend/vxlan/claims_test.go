package vxlan

import (
	"encoding/json"
	"net"
	"net/netip"
	"testing"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/subnet"
)

// The claims are the devices and ports the config asks for, after defaults.
func TestClaims(t *testing.T) {
	ext := &backend.ExternalInterface{Iface: &net.Interface{Index: 2, MTU: 1500, Name: "eth0"},
		ExtAddr: netip.MustParseAddr("192.0.2.1"), ExtV6Addr: netip.MustParseAddr("2001:db8::1")}
	tests := []struct {
		name, config, want string
	}{
		{"defaults", `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`,
			`{"devices":[{"name":"flannel.1","setBy":"Backend.VNI"}],"ports":[{"family":"ipv4","port":8472,"vni":1,"setBy":"Backend.Port"}]}`},
		{"dual stack, VNI and port set", `{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:1000::/56","Backend":{"Type":"vxlan","VNI":9,"Port":4789}}`,
			`{"devices":[{"name":"flannel.9","setBy":"Backend.VNI"},{"name":"flannel-v6.9","setBy":"Backend.VNI"}],` +
				`"ports":[{"family":"ipv4","port":4789,"vni":9,"setBy":"Backend.Port"},{"family":"ipv6","port":4789,"vni":9,"setBy":"Backend.Port"}]}`},
		{"IPv6 only", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:1000::/56","Backend":{"Type":"vxlan","VNI":2}}`,
			`{"devices":[{"name":"flannel-v6.2","setBy":"Backend.VNI"}],"ports":[{"family":"ipv6","port":8472,"vni":2,"setBy":"Backend.Port"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := subnet.ParseConfig(tt.config)
			if err != nil {
				t.Fatal(err)
			}
			b, err := newBackend(nil, nil, nil, ext, cfg)
			if err != nil {
				t.Fatal(err)
			}
			got, err := json.Marshal(b.Claims())
			if err != nil || string(got) != tt.want {
				t.Errorf("Claims =\n %s %v\nwant\n %s", got, err, tt.want)
			}
		})
	}
}
