package main

import (
	"encoding/json"
	"os"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/backend/hostgw"
	"github.com/flannel-go/flannel/backend/udp"
	"github.com/flannel-go/flannel/backend/vxlan"
	"github.com/flannel-go/flannel/backend/wireguard"
	"github.com/flannel-go/flannel/subnet"
)

// backendRegistry is every backend flanneld knows, by type, for daemon, admission and diagnose.
type backendRegistry struct {
	Constructors map[string]backend.Constructor
	CheckConfig  map[string]backend.ConfigChecker
	// BackendData checks a type's lease data; BackendKey is what no two peers may share.
	BackendData map[string]func(json.RawMessage) error
	BackendKey  map[string]func(*subnet.Lease) (string, bool)
	// Leftovers removes what a type leaves beside its devices after the node switched type.
	Leftovers map[string]backend.LeftoverRemover
}

// backends wires the backends for opts without touching the node; wireguard's private key
// file is $WIREGUARD_KEY_FILE, else wgkey beside the subnet file.
func backends(opts Options) backendRegistry {
	return backendRegistry{
		Constructors: map[string]backend.Constructor{
			vxlan.BackendType:     vxlan.New,
			hostgw.BackendType:    hostgw.New,
			udp.BackendType:       udp.New,
			wireguard.BackendType: wireguard.Constructor(wireguard.Options{KeyFile: wireguard.KeyFile(opts.SubnetFile, os.LookupEnv)}),
		},
		CheckConfig: map[string]backend.ConfigChecker{
			vxlan.BackendType:     vxlan.CheckConfig,
			hostgw.BackendType:    hostgw.CheckConfig,
			udp.BackendType:       udp.CheckConfig,
			wireguard.BackendType: wireguard.CheckConfig,
		},
		BackendData: map[string]func(json.RawMessage) error{
			vxlan.BackendType:     vxlan.CheckBackendData,
			hostgw.BackendType:    hostgw.CheckBackendData,
			wireguard.BackendType: wireguard.CheckBackendData,
		},
		BackendKey: map[string]func(*subnet.Lease) (string, bool){
			wireguard.BackendType: wireguard.PublicKey,
		},
		Leftovers: map[string]backend.LeftoverRemover{
			wireguard.BackendType: wireguard.RemoveLeftovers,
		},
	}
}
