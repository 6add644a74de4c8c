package main

import (
	"slices"
	"testing"
)

func TestUnknownVariables(t *testing.T) {
	environ := []string{
		"PATH=/usr/bin",
		"FLANNELD_ETCD_ENDPOINTS=http://192.0.2.254:2379", // known
		"FLANNELD_V=2",           // a klog flag
		"FLANNELD_VERSION=true",  // names a flag, which it does not set
		"FLANNEL_ETCD_PREFIX=/x", // not ours: the unit's older name
		"FLANNELD_ETCD_ENDPOINT=http://192.0.2.254:2379",
		"FLANNELD_IP_MAQS=true",
		"FLANNELD_IFACES=eth0",
		"FLANNELD_SUBNET_LEASE_RENEW_MARGIN_MINUTES=30",
		"FLANNELD_DEBUG=1",
		"FLANNELD_=x",
	}
	got := unknownVariables(environ)
	want := []unknownVariable{
		{Name: "FLANNELD_"},
		{Name: "FLANNELD_DEBUG"},
		{Name: "FLANNELD_ETCD_ENDPOINT", Suggest: "FLANNELD_ETCD_ENDPOINTS"},
		{Name: "FLANNELD_IFACES", Suggest: "FLANNELD_IFACE"},
		{Name: "FLANNELD_IP_MAQS", Suggest: "FLANNELD_IP_MASQ"},
		{Name: "FLANNELD_SUBNET_LEASE_RENEW_MARGIN_MINUTES"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("unknownVariables:\n got %+v\nwant %+v", got, want)
	}
}
