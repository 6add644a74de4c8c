package vxlan

import (
	"net"
	"net/netip"
	"reflect"
	"testing"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/kernelwatch"
	"github.com/flannel-go/flannel/subnet"
)

// The watch filter names both devices, the underlay link and both networks.
func TestWatchFilter(t *testing.T) {
	cfg, err := subnet.ParseConfig(`{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"vxlan","VNI":4}}`)
	if err != nil {
		t.Fatal(err)
	}
	ext := &backend.ExternalInterface{Iface: &net.Interface{Index: 2, MTU: 1500, Name: "eth0"},
		ExtAddr: netip.MustParseAddr("192.0.2.1"), ExtV6Addr: netip.MustParseAddr("2001:db8::1")}
	be, err := New(ext, cfg) // opens a netlink socket, changes nothing
	if err != nil {
		t.Fatal(err)
	}
	b := be.(*Backend)
	want := kernelwatch.Filter{
		Devices:  []string{"flannel.4", "flannel-v6.4"},
		Links:    []string{"eth0"},
		Networks: []netip.Prefix{netip.MustParsePrefix("10.5.0.0/16"), netip.MustParsePrefix("fd00:5::/48")},
		Feed:     b.c.Feed(), // the one the kernel cache reads: one notification path
	}
	if want.Feed == nil {
		t.Fatal("the backend's connection has no change feed")
	}
	if got := b.WatchFilter(); !reflect.DeepEqual(got, want) {
		t.Errorf("WatchFilter() = %+v, want %+v", got, want)
	}
}
