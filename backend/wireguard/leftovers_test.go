package wireguard

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flannel-go/flannel/pkg/netlinkx"
	"github.com/flannel-go/flannel/subnet"
)

func blackhole(dst string, metric int) netlink.Route {
	return netlink.Route{Dst: netlinkx.IPNet(netip.MustParsePrefix(dst)), Type: unix.RTN_BLACKHOLE, Priority: metric, Table: unix.RT_TABLE_MAIN}
}

func routeDsts(rs []netlink.Route) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Dst.String())
	}
	return out
}

// Only our blackholes (metric 1000000) beneath the network holding the previous lease's
// subnet are leftovers: another network's, another metric's and more specific ones stay.
func TestLeftoverBlackholes(t *testing.T) {
	unreachable := blackhole("10.5.0.0/16", blackholeMetric)
	unreachable.Type = unix.RTN_UNREACHABLE
	cases := []struct {
		name   string
		routes []netlink.Route
		subnet string
		want   []string
	}{
		{"the network's", []netlink.Route{blackhole("10.5.0.0/16", blackholeMetric)}, "10.5.3.0/24", []string{"10.5.0.0/16"}},
		{"another network's", []netlink.Route{blackhole("10.6.0.0/16", blackholeMetric)}, "10.5.3.0/24", nil},
		{"another metric", []netlink.Route{blackhole("10.5.0.0/16", 100)}, "10.5.3.0/24", nil},
		{"not a blackhole", []netlink.Route{unreachable}, "10.5.3.0/24", nil},
		{"inside the subnet", []netlink.Route{blackhole("10.5.3.128/25", blackholeMetric)}, "10.5.3.0/24", nil},
		{"a network as large as the subnet", []netlink.Route{blackhole("10.5.3.0/24", blackholeMetric)}, "10.5.3.0/24", []string{"10.5.3.0/24"}},
		{"IPv6", []netlink.Route{blackhole("2001:db8:1000::/56", blackholeMetric), blackhole("2001:db8:2000::/56", blackholeMetric)},
			"2001:db8:1000:3::/64", []string{"2001:db8:1000::/56"}},
		{"mixed", []netlink.Route{blackhole("10.0.0.0/8", 5), blackhole("10.5.0.0/16", blackholeMetric), blackhole("10.6.0.0/16", blackholeMetric)},
			"10.5.3.0/24", []string{"10.5.0.0/16"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := routeDsts(leftoverBlackholes(c.routes, netip.MustParsePrefix(c.subnet)))
			if !slices.Equal(got, c.want) {
				t.Errorf("leftovers %v, want %v", got, c.want)
			}
		})
	}
}

// leftoverHandle is a kernel with links and blackhole routes; it answers only the calls
// removeLeftovers makes.
type leftoverHandle struct {
	nlHandle
	links   []string
	routes  map[int][]netlink.Route // per family
	deleted []string
}

func (h *leftoverHandle) LinkByName(name string) (netlink.Link, error) {
	if !slices.Contains(h.links, name) {
		return nil, netlink.LinkNotFoundError{}
	}
	return &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name}}, nil
}

func (h *leftoverHandle) LinkDel(l netlink.Link) error {
	h.deleted = append(h.deleted, "link "+l.Attrs().Name)
	return nil
}

func (h *leftoverHandle) RouteListFiltered(fam int, _ *netlink.Route, _ uint64) ([]netlink.Route, error) {
	return h.routes[fam], nil
}

func (h *leftoverHandle) RouteDel(r *netlink.Route) error {
	h.deleted = append(h.deleted, "blackhole "+r.Dst.String())
	return nil
}

// The recorded devices (a missing one is no error) and, per family of the previous
// lease, the blackhole beneath its network go; nothing else does.
func TestRemoveLeftovers(t *testing.T) {
	routes := map[int][]netlink.Route{
		unix.AF_INET:  {blackhole("10.5.0.0/16", blackholeMetric), blackhole("10.6.0.0/16", blackholeMetric)},
		unix.AF_INET6: {blackhole("2001:db8:1000::/56", blackholeMetric)},
	}
	cases := []struct {
		name string
		prev *subnet.Lease
		want []string
	}{
		{"dual stack", &subnet.Lease{EnableIPv4: true, Subnet: netip.MustParsePrefix("10.5.3.0/24"), EnableIPv6: true, IPv6Subnet: netip.MustParsePrefix("2001:db8:1000:3::/64")},
			[]string{"link flannel-wg", "blackhole 10.5.0.0/16", "blackhole 2001:db8:1000::/56"}},
		{"IPv4 only", &subnet.Lease{EnableIPv4: true, Subnet: netip.MustParsePrefix("10.5.3.0/24")},
			[]string{"link flannel-wg", "blackhole 10.5.0.0/16"}},
		{"no subnet known", &subnet.Lease{}, []string{"link flannel-wg"}},
		{"no lease", nil, []string{"link flannel-wg"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := &leftoverHandle{links: []string{"flannel-wg"}, routes: routes}
			if err := removeLeftovers(h, c.prev, []string{"flannel-wg", "flannel-wg-v6"}); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(h.deleted, c.want) {
				t.Errorf("deleted %q, want %q", h.deleted, c.want)
			}
		})
	}
}
