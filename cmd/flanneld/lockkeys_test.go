package main

import (
	"slices"
	"testing"
)

func TestInstanceLockKeys(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want []string
	}{
		{"defaults", Options{EtcdPrefix: "/coreos.com/network", SubnetFile: "/run/flannel/subnet.env"},
			[]string{"etcd-prefix:/coreos.com/network", "subnet-file:/run/flannel/subnet.env"}},
		{"prefix spellings agree", Options{EtcdPrefix: "coreos.com//network/", SubnetFile: "/run/flannel/../flannel/subnet.env"},
			[]string{"etcd-prefix:/coreos.com/network", "subnet-file:/run/flannel/subnet.env"}},
		{"kube", Options{KubeSubnetMgr: true, EtcdPrefix: "/coreos.com/network", SubnetFile: "/run/flannel/subnet.env"},
			[]string{"kube-subnet-mgr", "subnet-file:/run/flannel/subnet.env"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := instanceLockKeys(tt.opts); !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
