package udp

import (
	"encoding/json"
	"net"
	"net/netip"
	"testing"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/subnet"
)

// The claim is the port, default or set, on the address Prepare binds; no device.
func TestClaims(t *testing.T) {
	ext := &backend.ExternalInterface{Iface: &net.Interface{Index: 2, MTU: 1500, Name: "eth0"},
		IfaceAddr: netip.MustParseAddr("192.0.2.11"), ExtAddr: netip.MustParseAddr("198.51.100.11")}
	for config, want := range map[string]string{
		`{"Network":"10.5.0.0/16"}`:                                      `{"ports":[{"family":"ipv4","port":8285,"addr":"192.0.2.11","setBy":"Backend.Port"}]}`,
		`{"Network":"10.5.0.0/16","Backend":{"Type":"udp","Port":9000}}`: `{"ports":[{"family":"ipv4","port":9000,"addr":"192.0.2.11","setBy":"Backend.Port"}]}`,
	} {
		cfg, err := subnet.ParseConfig(config)
		if err != nil {
			t.Fatal(err)
		}
		b, err := newBackend(nil, ext, cfg)
		if err != nil {
			t.Fatal(err)
		}
		got, err := json.Marshal(b.Claims())
		if err != nil || string(got) != want {
			t.Errorf("%s: Claims =\n %s %v\nwant\n %s", config, got, err, want)
		}
	}
}
