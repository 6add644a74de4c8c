package diagnose

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
)

// Pod bridges: the CNI bridge plugin's default, and Docker's.
const (
	cniBridge    = "cni0"
	dockerBridge = "docker0"
)

func (s *State) bridge() (Link, bool, error) {
	links, err := s.links()
	if err != nil {
		return Link{}, false, err
	}
	for _, name := range []string{cniBridge, dockerBridge} {
		if l, ok := findLink(links, name); ok {
			return l, true, nil
		}
	}
	return Link{}, false, nil
}

func bridgeFix(name string) string {
	if name == dockerBridge {
		return "restart Docker after flanneld, so that it reads the subnet file (dist/docker.service.d/flannel.conf passes --bip and --mtu; Documentation/running.md, Docker hosts)"
	}
	return "delete the bridge (ip link del " + name + "): the CNI plugin recreates it from the subnet file with the next pod; recreate the pods that were on it"
}

func checkBridgeAddress(_ context.Context, s *State) Result {
	if s.own == nil {
		return skipAfter(CheckLease)
	}
	br, ok, err := s.bridge()
	switch {
	case err != nil:
		return skip("listing the links: %s", oneLine(err))
	case !ok:
		return skip("no %s or %s bridge on this node yet (the CNI plugin creates %s with the first pod)", cniBridge, dockerBridge, cniBridge)
	}
	l := s.own.Lease
	var inside, outside []string
	for _, a := range br.Addrs {
		sn := l.Subnet
		if a.Addr().Is6() {
			sn = l.IPv6Subnet
			if a.Addr().IsLinkLocalUnicast() {
				continue
			}
		}
		if sn.IsValid() && sn.Contains(a.Addr()) && a.Bits() >= sn.Bits() {
			inside = append(inside, a.String())
		} else {
			outside = append(outside, a.String())
		}
	}
	sub := describeSubnets(l.Subnet, l.IPv6Subnet)
	if len(outside) > 0 {
		why := ""
		if br.Name == dockerBridge {
			why = " (Docker was not restarted after flanneld took its subnet)"
		}
		return fail(fmt.Sprintf("%s holds %s, outside this node's subnet %s%s", br.Name, strings.Join(outside, ", "), sub, why),
			bridgeFix(br.Name), br.Name)
	}
	if len(inside) == 0 {
		return fail(fmt.Sprintf("%s holds no address in this node's subnet %s", br.Name, sub), bridgeFix(br.Name), br.Name)
	}
	return pass("%s holds %s, inside %s", br.Name, strings.Join(inside, ", "), sub)
}

func describeSubnets(v4, v6 netip.Prefix) string {
	var out []string
	for _, p := range []netip.Prefix{v4, v6} {
		if p.IsValid() {
			out = append(out, p.String())
		}
	}
	return strings.Join(out, " and ")
}

func (s *State) flannelMTU() (int, bool) {
	if s.mtu > 0 {
		return s.mtu, true
	}
	if b, err := s.loadBackend(); err == nil {
		return b.MTU(), true
	}
	return 0, false
}

func checkBridgeMTU(_ context.Context, s *State) Result {
	br, ok, err := s.bridge()
	switch {
	case err != nil:
		return skip("listing the links: %s", oneLine(err))
	case !ok:
		return skip("no %s or %s bridge on this node yet", cniBridge, dockerBridge)
	}
	mtu, ok := s.flannelMTU()
	if !ok {
		return skipAfter(CheckSubnetFile)
	}
	if br.MTU > mtu {
		return fail(fmt.Sprintf("%s has MTU %d, larger than FLANNEL_MTU %d: pods send packets the overlay cannot carry", br.Name, br.MTU, mtu),
			bridgeFix(br.Name), br.Name)
	}
	return pass("%s MTU %d, FLANNEL_MTU %d", br.Name, br.MTU, mtu)
}

// cniConfExts are the files a container runtime reads as CNI network configs.
var cniConfExts = []string{".conf", ".conflist", ".json"}

func checkCNIConfig(_ context.Context, s *State) Result {
	dir := s.Opts.CNIConfDir
	if dir == "" || s.Deps.ReadDir == nil {
		return skip("no --cni-conf-dir")
	}
	entries, err := s.Deps.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return skip("%s does not exist: no CNI runtime on this node (a Docker host), or give --cni-conf-dir", dir)
	case err != nil:
		return skip("reading %s: %s", dir, oneLine(err))
	}
	var files []string
	for _, e := range entries {
		if !e.IsDir() && slices.Contains(cniConfExts, filepath.Ext(e.Name())) {
			files = append(files, e.Name())
		}
	}
	slices.Sort(files) // the runtime takes the first in lexical order
	var flannel []string
	var unreadable []string
	for _, f := range files {
		data, err := s.Deps.ReadFile(filepath.Join(dir, f))
		if err != nil {
			unreadable = append(unreadable, f+": "+oneLine(err))
			continue
		}
		if hasFlannelPlugin(data) {
			flannel = append(flannel, f)
		}
	}
	switch {
	case len(flannel) == 0 && len(unreadable) > 0:
		return skip("cannot read %s", strings.Join(unreadable, "; "))
	case len(flannel) == 0:
		return fail(fmt.Sprintf("no CNI config in %s uses the flannel plugin (%d files: %s)", dir, len(files), strings.Join(files, ", ")),
			"install it: the DaemonSet's install-cni init container copies 10-flannel.conflist there (dist/kube-flannel.yml)", dir)
	case files[0] != flannel[0]:
		return fail(fmt.Sprintf("the runtime uses %s, which sorts before flannel's %s in %s", files[0], flannel[0], dir),
			"remove "+files[0]+" (or rename flannel's config to sort first) and restart the container runtime", filepath.Join(dir, files[0]))
	}
	return pass("%s uses the flannel plugin and is the first config in %s", flannel[0], dir)
}

// hasFlannelPlugin reports whether a .conflist or .conf runs the flannel plugin.
func hasFlannelPlugin(data []byte) bool {
	var c struct {
		Type    string `json:"type"`
		Plugins []struct {
			Type string `json:"type"`
		} `json:"plugins"`
	}
	if json.Unmarshal(data, &c) != nil {
		return false
	}
	if c.Type == "flannel" {
		return true
	}
	for _, p := range c.Plugins {
		if p.Type == "flannel" {
			return true
		}
	}
	return false
}
