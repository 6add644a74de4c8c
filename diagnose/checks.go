package diagnose

// Check names, as the report shows them.
const (
	CheckDaemon          = "daemon"
	CheckEtcdEndpoints   = "etcd-endpoints"
	CheckKubeAPI         = "kube-api"
	CheckNetworkConfig   = "network-config"
	CheckEtcdV2Config    = "etcd-v2-config"
	CheckKubeNode        = "kube-node"
	CheckKubePodCIDR     = "kube-pod-cidr"
	CheckKubePermissions = "kube-permissions"
	CheckLease           = "lease"
	CheckSubnetFile      = "subnet-file"
	CheckPublicIP        = "public-ip"
	CheckDevice          = "device"
	CheckPeerObjects     = "peer-objects"
	CheckTrafficRules    = "traffic-rules"
	CheckIPForward       = "ip-forward"
	CheckChecksumOffload = "checksum-offload"
	CheckInstances       = "instances"
	CheckBridgeAddress   = "bridge-address"
	CheckBridgeMTU       = "bridge-mtu"
	CheckCNIConfig       = "cni-config"
	CheckPeerUnderlay    = "peer-underlay"
	CheckPeerOverlay     = "peer-overlay"
	CheckPeerMTU         = "peer-mtu"
	CheckWGImpl          = "wireguard-implementation"
	CheckWGHandshakes    = "wireguard-handshakes"
)

const wireguardType = "wireguard"

// Checks are the checks of a datastore mode in the order they run.
func Checks(kube bool) []Check {
	cs := []Check{{Group: GroupDaemon, Name: CheckDaemon, Run: checkDaemon}}
	if kube {
		cs = append(cs,
			Check{Group: GroupDatastore, Name: CheckKubeAPI, Run: checkKubeAPI},
			Check{Group: GroupDatastore, Name: CheckNetworkConfig, Run: checkNetworkConfig},
			Check{Group: GroupDatastore, Name: CheckKubeNode, Run: checkKubeNode},
			Check{Group: GroupDatastore, Name: CheckKubePodCIDR, Run: checkKubePodCIDR},
			Check{Group: GroupDatastore, Name: CheckKubePermissions, Run: checkKubePermissions},
		)
	} else {
		cs = append(cs,
			Check{Group: GroupDatastore, Name: CheckEtcdEndpoints, Run: checkEtcdEndpoints},
			Check{Group: GroupDatastore, Name: CheckNetworkConfig, Run: checkNetworkConfig},
			Check{Group: GroupDatastore, Name: CheckEtcdV2Config, Run: checkEtcdV2Config},
		)
	}
	return append(cs,
		Check{Group: GroupLease, Name: CheckLease, Run: checkLease},
		Check{Group: GroupLease, Name: CheckSubnetFile, Run: checkSubnetFile},
		Check{Group: GroupLease, Name: CheckPublicIP, Run: checkPublicIP},
		Check{Group: GroupKernel, Name: CheckDevice, Run: checkDevice},
		Check{Group: GroupKernel, Name: CheckWGImpl, Run: checkWGImplementation, Backend: wireguardType},
		Check{Group: GroupKernel, Name: CheckPeerObjects, Run: checkPeerObjects},
		Check{Group: GroupKernel, Name: CheckTrafficRules, Run: checkTrafficRules},
		Check{Group: GroupKernel, Name: CheckIPForward, Run: checkIPForward},
		Check{Group: GroupKernel, Name: CheckChecksumOffload, Run: checkChecksumOffload},
		Check{Group: GroupKernel, Name: CheckInstances, Run: checkInstances},
		Check{Group: GroupPlumbing, Name: CheckBridgeAddress, Run: checkBridgeAddress},
		Check{Group: GroupPlumbing, Name: CheckBridgeMTU, Run: checkBridgeMTU},
		Check{Group: GroupPlumbing, Name: CheckCNIConfig, Run: checkCNIConfig},
		Check{Group: GroupPeers, Name: CheckPeerUnderlay, Run: checkPeerUnderlay},
		Check{Group: GroupPeers, Name: CheckPeerOverlay, Run: checkPeerOverlay},
		Check{Group: GroupPeers, Name: CheckWGHandshakes, Run: checkWGHandshakes, Backend: wireguardType},
		Check{Group: GroupPeers, Name: CheckPeerMTU, Run: checkPeerMTU},
	)
}
