package wireguard

import (
	"encoding/json"
	"net"
	"net/netip"
	"strconv"
	"testing"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/claim"
	"github.com/flannel-go/flannel/subnet"
)

// The claims are the devices the Mode and families ask for and each device's listen
// port in both families, after defaults.
func TestClaims(t *testing.T) {
	ext := &backend.ExternalInterface{Iface: &net.Interface{Index: 2, MTU: 1500, Name: "eth0"},
		ExtAddr: netip.MustParseAddr("192.0.2.1"), ExtV6Addr: netip.MustParseAddr("2001:db8::1")}
	const (
		wg  = `{"name":"flannel-wg"}`
		wg6 = `{"name":"flannel-wg-v6"}`
	)
	ports := func(p int, v6 string) string {
		return `{"family":"ipv4","port":` + strconv.Itoa(p) + `,"setBy":"Backend.ListenPort` + v6 + `"},` +
			`{"family":"ipv6","port":` + strconv.Itoa(p) + `,"setBy":"Backend.ListenPort` + v6 + `"}`
	}
	tests := []struct {
		name, config, want string
	}{
		{"defaults", `{"Network":"10.5.0.0/16","Backend":{"Type":"wireguard"}}`,
			`{"devices":[` + wg + `],"ports":[` + ports(51820, "") + `]}`},
		{"dual stack, separate", `{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:1000::/56","Backend":{"Type":"wireguard","ListenPort":4000}}`,
			`{"devices":[` + wg + `,` + wg6 + `],"ports":[` + ports(4000, "") + `,` + ports(51821, "V6") + `]}`},
		{"dual stack, one device", `{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:1000::/56","Backend":{"Type":"wireguard","Mode":"auto"}}`,
			`{"devices":[` + wg + `],"ports":[` + ports(51820, "") + `]}`},
		{"IPv6 only", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:1000::/56","Backend":{"Type":"wireguard","ListenPortV6":5000}}`,
			`{"devices":[` + wg6 + `],"ports":[` + ports(5000, "V6") + `]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := subnet.ParseConfig(tt.config)
			if err != nil {
				t.Fatal(err)
			}
			b, err := newBackend(nil, Options{KeyFile: "/nonexistent/wgkey"}, ext, cfg)
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

// A second instance with the same device or a colliding port is refused: the claims
// conflict with a wireguard instance's, and with a vxlan instance on the listen port.
func TestClaimsConflict(t *testing.T) {
	ext := &backend.ExternalInterface{Iface: &net.Interface{Index: 2, MTU: 1500, Name: "eth0"},
		ExtAddr: netip.MustParseAddr("192.0.2.1")}
	claims := func(config string) claim.Set {
		cfg, err := subnet.ParseConfig(config)
		if err != nil {
			t.Fatal(err)
		}
		b, err := newBackend(nil, Options{KeyFile: "/nonexistent/wgkey"}, ext, cfg)
		if err != nil {
			t.Fatal(err)
		}
		return b.Claims()
	}
	ours := claims(`{"Network":"10.5.0.0/16","Backend":{"Type":"wireguard"}}`)
	theirs := claims(`{"Network":"10.6.0.0/16","Backend":{"Type":"wireguard","ListenPort":51830}}`)
	cs := claim.Conflicts(ours, theirs)
	if len(cs) != 1 || cs[0].String() != "device flannel-wg" || cs[0].Remedy() != "run only one of the two on this node" {
		t.Errorf("same device, other port: %v", cs)
	}
	vx := claim.Set{Ports: []claim.Port{{Family: claim.IPv6, Port: 51820, VNI: 1, SetBy: "Backend.Port"}}}
	cs = claim.Conflicts(ours, vx)
	if len(cs) != 1 || cs[0].Kind != claim.KindPort || cs[0].Remedy() != "set another Backend.ListenPort in this network's config" {
		t.Errorf("a vxlan device on our port: %v", cs)
	}
}
