package hostgw

import (
	"net"
	"net/netip"
	"reflect"
	"testing"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/kernelwatch"
	"github.com/flannel-go/flannel/subnet"
)

// host-gw watches the external link and the routes inside its networks.
func TestWatchFilter(t *testing.T) {
	cfg, err := subnet.ParseConfig(`{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"host-gw"}}`)
	if err != nil {
		t.Fatal(err)
	}
	a4, a6 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	ext := &backend.ExternalInterface{Iface: &net.Interface{Index: 2, MTU: 1500, Name: "eth0"},
		IfaceAddr: a4, IfaceV6Addr: a6, ExtAddr: a4, ExtV6Addr: a6}
	b, err := newBackend(nil, ext, cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := kernelwatch.Filter{
		Links:    []string{"eth0"},
		Networks: []netip.Prefix{netip.MustParsePrefix("10.5.0.0/16"), netip.MustParsePrefix("fd00:5::/48")},
	}
	if got := b.WatchFilter(); !reflect.DeepEqual(got, want) {
		t.Errorf("WatchFilter() = %+v, want %+v", got, want)
	}
}
