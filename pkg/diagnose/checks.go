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
)

// Checks are the checks of a datastore mode in the order they run: the daemon, then
// the datastore, the lease, the kernel, the local plumbing and the peers. A backend with
// checks of its own adds them to this list where they belong.
func Checks(kube bool) []Check {
	cs := []Check{{GroupDaemon, CheckDaemon, checkDaemon}}
	if kube {
		cs = append(cs,
			Check{GroupDatastore, CheckKubeAPI, checkKubeAPI},
			Check{GroupDatastore, CheckNetworkConfig, checkNetworkConfig},
			Check{GroupDatastore, CheckKubeNode, checkKubeNode},
			Check{GroupDatastore, CheckKubePodCIDR, checkKubePodCIDR},
			Check{GroupDatastore, CheckKubePermissions, checkKubePermissions},
		)
	} else {
		cs = append(cs,
			Check{GroupDatastore, CheckEtcdEndpoints, checkEtcdEndpoints},
			Check{GroupDatastore, CheckNetworkConfig, checkNetworkConfig},
			Check{GroupDatastore, CheckEtcdV2Config, checkEtcdV2Config},
		)
	}
	return append(cs,
		Check{GroupLease, CheckLease, checkLease},
		Check{GroupLease, CheckSubnetFile, checkSubnetFile},
		Check{GroupLease, CheckPublicIP, checkPublicIP},
		Check{GroupKernel, CheckDevice, checkDevice},
		Check{GroupKernel, CheckPeerObjects, checkPeerObjects},
		Check{GroupKernel, CheckTrafficRules, checkTrafficRules},
		Check{GroupKernel, CheckIPForward, checkIPForward},
		Check{GroupKernel, CheckChecksumOffload, checkChecksumOffload},
		Check{GroupKernel, CheckInstances, checkInstances},
		Check{GroupPlumbing, CheckBridgeAddress, checkBridgeAddress},
		Check{GroupPlumbing, CheckBridgeMTU, checkBridgeMTU},
		Check{GroupPlumbing, CheckCNIConfig, checkCNIConfig},
		Check{GroupPeers, CheckPeerUnderlay, checkPeerUnderlay},
		Check{GroupPeers, CheckPeerOverlay, checkPeerOverlay},
		Check{GroupPeers, CheckPeerMTU, checkPeerMTU},
	)
}
