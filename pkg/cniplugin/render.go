package cniplugin

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/flannel-go/flannel/pkg/subnetenv"
)

// DelegateConfig renders the delegate config byte for byte as upstream's plugin does
// (bridge with host-local by default, the node's subnets and cluster routes).
func DelegateConfig(nc *NetConf, env subnetenv.Contents) ([]byte, error) {
	if err := nc.CheckDelegate(); err != nil {
		return nil, err
	}
	d := maps.Clone(nc.Delegate)
	if d == nil {
		d = map[string]any{}
	}
	d["name"] = nc.Name
	d["type"] = nc.DelegateType()
	if _, ok := d["ipMasq"]; !ok {
		d["ipMasq"] = !env.IPMasq
	}
	if _, ok := d["mtu"]; !ok {
		d["mtu"] = env.MTU
	}
	if d["type"] == "bridge" {
		if _, ok := d["isGateway"]; !ok {
			d["isGateway"] = true
		}
	}
	if nc.CNIVersion != "" {
		d["cniVersion"] = nc.CNIVersion
	}
	if nc.RuntimeConfig != nil {
		d["runtimeConfig"] = nc.RuntimeConfig
	}
	ipam, err := delegateIPAM(nc, env)
	if err != nil {
		return nil, fmt.Errorf("failed to assemble Delegate IPAM: %w", err)
	}
	d["ipam"] = ipam
	out, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("failed to encode the delegate config: %w", err)
	}
	return out, nil
}

func delegateIPAM(nc *NetConf, env subnetenv.Contents) (map[string]any, error) {
	ipam := maps.Clone(nc.IPAM)
	if ipam == nil {
		ipam = map[string]any{}
	}
	if _, ok := ipam["type"]; !ok {
		ipam["type"] = "host-local"
	}
	var ranges [][]map[string]any
	for _, sn := range []netip.Prefix{env.Subnet, env.IPv6Subnet} {
		if sn.IsValid() {
			ranges = append(ranges, []map[string]any{{"subnet": sn.String()}})
		}
	}
	ipam["ranges"] = ranges

	routes := []types.Route{}
	if v, ok := nc.IPAM["routes"]; ok {
		buf, err := json.Marshal(v)
		if err == nil {
			err = json.Unmarshal(buf, &routes)
		}
		if err != nil {
			return nil, fmt.Errorf("failed to read IPAM routes: failed to parse ipam.routes: %w", describeJSONError(err))
		}
	}
	for _, nw := range append(append([]netip.Prefix{}, env.Networks...), env.IPv6Networks...) {
		routes = append(routes, types.Route{Dst: ipNet(nw)})
	}
	ipam["routes"] = routes
	return ipam, nil
}

func ipNet(p netip.Prefix) net.IPNet {
	return net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
