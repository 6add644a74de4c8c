package diagnose

import (
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannel-go/flannel/pkg/forwarding"
	"github.com/flannel-go/flannel/pkg/netlinkx"
)

const dumpAttempts = 5 // tries of a dump interrupted by a concurrent change

// NetlinkKernel is the read-only Kernel of the calling thread's network namespace.
type NetlinkKernel struct{}

var _ Kernel = NetlinkKernel{}

// Links lists the links with their global addresses.
func (NetlinkKernel) Links() ([]Link, error) {
	var links []netlink.Link
	var addrs []netlink.Addr
	if err := netlinkx.Dump(dumpAttempts, "links", func() (err error) { links, err = netlink.LinkList(); return err }); err != nil {
		return nil, err
	}
	if err := netlinkx.Dump(dumpAttempts, "addresses", func() (err error) {
		addrs, err = netlink.AddrList(nil, unix.AF_UNSPEC)
		return err
	}); err != nil {
		return nil, err
	}
	byIndex := map[int][]netip.Prefix{}
	for _, a := range addrs {
		p, ok := netlinkx.Prefix(a.IPNet)
		if !ok || a.Scope == unix.RT_SCOPE_LINK || a.Scope == unix.RT_SCOPE_HOST {
			continue
		}
		byIndex[a.LinkIndex] = append(byIndex[a.LinkIndex], p)
	}
	out := make([]Link, 0, len(links))
	for _, l := range links {
		at := l.Attrs()
		k := Link{Name: at.Name, Index: at.Index, Type: l.Type(), MTU: at.MTU, Up: at.Flags&net.FlagUp != 0, Addrs: byIndex[at.Index]}
		if vx, ok := l.(*netlink.Vxlan); ok {
			k.VNI, k.Port = vx.VxlanId, vx.Port
			k.Local, _ = netlinkx.Addr(vx.SrcAddr)
		}
		out = append(out, k)
	}
	return out, nil
}

// Sysctl reads a kernel setting by its sysctl name.
func (NetlinkKernel) Sysctl(name string) (string, error) { return forwarding.Sysctl(name) }
