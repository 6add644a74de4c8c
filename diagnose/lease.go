package diagnose

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"strings"
	"time"

	"github.com/flannel-go/flannel/pkg/ip"
	"github.com/flannel-go/flannel/pkg/subnetenv"
	"github.com/flannel-go/flannel/subnet"
)

func (s *State) readLeases(ctx context.Context) error {
	cctx, cancel := withTimeout(ctx, s.Opts.DatastoreTimeout)
	defer cancel()
	var ls []Lease
	var err error
	if s.Opts.Kube {
		ls, err = s.Deps.Kube.Leases(cctx, s.cfg)
	} else {
		ls, err = s.Deps.Etcd.Leases(cctx)
	}
	if err != nil {
		return err
	}
	own := -1
	if s.Opts.Kube {
		for i := range ls {
			if ls[i].Name == s.nodeName {
				own = i
			}
		}
	} else {
		own = s.findOwnEtcd(ls)
	}
	var ownLease *subnet.Lease
	if own >= 0 {
		ls[own].Own = true
		ownLease = &ls[own].Lease
	}
	s.judge(ownLease, ls)
	s.leases, s.leasesOK = ls, true
	for i := range ls {
		if ls[i].Own {
			s.own = &ls[i]
		}
	}
	return nil
}

// findOwnEtcd finds this node's lease by its public address, else by the daemon's lease
// or the subnet file's; -1 when none matches.
func (s *State) findOwnEtcd(ls []Lease) int {
	if s.ext != nil {
		for i, l := range ls {
			if l.Origin.Defect != nil {
				continue
			}
			if s.cfg.EnableIPv4 && s.ext.Public.IsValid() && l.Lease.Attrs.PublicIP == s.ext.Public ||
				!s.cfg.EnableIPv4 && s.ext.Public6.IsValid() && l.Lease.Attrs.PublicIPv6 == s.ext.Public6 {
				return i
			}
		}
	}
	key := ""
	if s.daemon != nil && s.daemon.Lease != nil {
		key = s.daemon.Lease.Key
	} else if c, err := s.subnetFile(); err == nil {
		key = subnet.MakeSubnetKey(c.Subnet, c.IPv6Subnet)
	}
	for i, l := range ls {
		if key != "" && l.Name == key {
			return i
		}
	}
	return -1
}

func (s *State) subnetFile() (subnetenv.Contents, error) {
	if s.Deps.ReadFile == nil {
		return subnetenv.Contents{}, errors.New("no file access")
	}
	data, err := s.Deps.ReadFile(s.Opts.SubnetFile)
	if err != nil {
		return subnetenv.Contents{}, err
	}
	c, err := subnetenv.ParseContents(data)
	var ie *subnetenv.IncompleteError
	if errors.As(err, &ie) {
		ie.Path = s.Opts.SubnetFile
	}
	return c, err
}

func (s *State) lookupIface() (*Iface, error) {
	if s.ext != nil || s.extErr != nil {
		return s.ext, s.extErr
	}
	if s.Deps.Iface == nil {
		s.extErr = errors.New("no interface lookup")
		return nil, s.extErr
	}
	v4, v6 := s.Opts.PublicIP, s.Opts.PublicIPv6
	if s.node != nil {
		// The node-public-ip annotations replace --public-ip, as in the daemon.
		if s.node.NodePublicIP.IsValid() {
			v4 = s.node.NodePublicIP.String()
		}
		if s.node.NodePublicIPv6.IsValid() {
			v6 = s.node.NodePublicIPv6.String()
		}
	}
	s.ext, s.extErr = s.Deps.Iface(s.cfg, v4, v6)
	return s.ext, s.extErr
}

func (s *State) loadBackend() (Backend, error) {
	if s.backend != nil || s.backendErr != nil {
		return s.backend, s.backendErr
	}
	switch {
	case s.cfg == nil:
		s.backendErr = errors.New("no valid network config")
	case s.Deps.Backend == nil:
		s.backendErr = errors.New("no backends")
	default:
		var ext *Iface
		if ext, s.backendErr = s.lookupIface(); s.backendErr == nil {
			s.backend, s.backendErr = s.Deps.Backend(s.cfg, ext)
		}
	}
	return s.backend, s.backendErr
}

func checkLease(ctx context.Context, s *State) Result {
	switch {
	case s.cfg == nil:
		return skipAfter(CheckNetworkConfig)
	case s.Opts.Kube && s.node == nil:
		return skipAfter(CheckKubeNode)
	}
	_, _ = s.lookupIface() // the lease is found by the address it advertises
	if err := s.readLeases(ctx); err != nil {
		return fail("listing the leases: "+oneLine(err), "check the datastore (above) and the credentials' read permission", s.leaseDir())
	}
	if s.own == nil {
		return s.noOwnLease()
	}
	l := s.own
	ev := fmt.Sprintf("%s %s, advertising %s", s.leaseWord(), l.Name, describeAttrs(l.Lease))
	if l.Origin.Defect != nil {
		return fail(ev+": its value is unreadable: "+l.defect(), "stop flanneld, delete the key, and start it again to write a fresh lease", l.Name)
	}
	if s.daemon != nil && s.daemon.Lease != nil && s.daemon.Lease.Key != l.Lease.Key() {
		return fail(fmt.Sprintf("%s, but the running daemon holds %s", ev, s.daemon.Lease.Key),
			"restart flanneld: the datastore and the daemon disagree about this node's lease", l.Name, s.daemon.Lease.Key)
	}
	if s.Opts.Kube || l.Reservation {
		if l.Reservation {
			ev += ", a reservation (never expires)"
		}
		return pass("%s", ev)
	}
	exp := l.Lease.Expiration
	if exp.IsZero() {
		cctx, cancel := withTimeout(ctx, s.Opts.DatastoreTimeout)
		var err error
		exp, err = s.Deps.Etcd.Expiration(cctx, l.Name)
		cancel()
		if err != nil {
			return fail(ev+"; reading its expiry: "+oneLine(err), "check the datastore", l.Name)
		}
		l.Lease.Expiration = exp
	}
	left := exp.Sub(s.Deps.Now()).Round(time.Second)
	ev += fmt.Sprintf(", expires in %s", left)
	// The daemon renews RenewMargin before expiry; a minute of slack covers a retry.
	if left < s.Opts.RenewMargin-time.Minute {
		why := "the running daemon has not renewed it"
		if s.daemon == nil {
			why = "no daemon renews it"
		}
		return fail(ev+": "+why+" (it renews "+s.Opts.RenewMargin.String()+" before expiry)",
			"start flanneld, or see in its log why renewing fails (etcd write permission on "+s.Opts.EtcdPrefix+"/subnets/)", l.Name)
	}
	return pass("%s", ev)
}

func (s *State) noOwnLease() Result {
	if s.Opts.Kube {
		n := s.node
		switch {
		case len(n.PodCIDRs) == 0:
			return skipAfter(CheckKubePodCIDR)
		}
		return fail(fmt.Sprintf("node %s carries no flannel lease (no %s annotations)", n.Name, "kube-subnet-manager"),
			"start flanneld on this node: it annotates the node once it runs ("+daemonHelp+")", "node/"+n.Name)
	}
	pub := "this node's public address"
	if s.ext != nil {
		pub = s.ext.Public.String()
		if !s.cfg.EnableIPv4 {
			pub = s.ext.Public6.String()
		}
	}
	return fail(fmt.Sprintf("no lease below %s advertises %s (%d leases)", s.leaseDir(), pub, len(s.leases)),
		"start flanneld: it takes a lease at start ("+daemonHelp+"); if it runs, check --public-ip and --iface", s.leaseDir())
}

func (s *State) leaseDir() string {
	if s.Opts.Kube {
		return "nodes"
	}
	return s.Opts.EtcdPrefix + "/subnets/"
}

func (s *State) leaseWord() string {
	if s.Opts.Kube {
		return "node"
	}
	return "lease"
}

// describeAttrs is "10.5.1.0/24 from 192.0.2.11, vxlan" for a lease.
func describeAttrs(l subnet.Lease) string {
	var parts []string
	if l.Subnet.IsValid() {
		parts = append(parts, l.Subnet.String()+" from "+addrOrNone(l.Attrs.PublicIP))
	}
	if l.IPv6Subnet.IsValid() {
		parts = append(parts, l.IPv6Subnet.String()+" from "+addrOrNone(l.Attrs.PublicIPv6))
	}
	bt := l.Attrs.BackendType
	if bt == "" {
		bt = "udp"
	}
	return strings.Join(parts, " and ") + ", " + bt
}

func addrOrNone(a netip.Addr) string {
	if !a.IsValid() {
		return "no address"
	}
	return a.String()
}

func checkSubnetFile(_ context.Context, s *State) Result {
	path := s.Opts.SubnetFile
	c, err := s.subnetFile()
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fail("no subnet file at "+path, "flanneld writes it once it holds a lease: start it, or check --subnet-file ("+daemonHelp+")", path)
	case errors.Is(err, fs.ErrPermission):
		return skip("cannot read %s: %s", path, oneLine(err))
	case err != nil:
		return fail(path+": "+oneLine(err), "restart flanneld to rewrite it", path)
	}
	s.mtu = int(c.MTU)
	if s.own == nil || s.cfg == nil {
		return skipAfter(CheckLease)
	}
	l := s.own.Lease
	var diffs []string
	want := func(key string, have, want any) {
		if fmt.Sprint(have) != fmt.Sprint(want) {
			diffs = append(diffs, fmt.Sprintf("%s=%v, the lease says %v", key, have, want))
		}
	}
	if s.cfg.EnableIPv4 {
		want("FLANNEL_NETWORK", prefixes(c.Networks), s.cfg.Network)
		want("FLANNEL_SUBNET", c.Subnet, l.Subnet)
	}
	if s.cfg.EnableIPv6 {
		want("FLANNEL_IPV6_NETWORK", prefixes(c.IPv6Networks), s.cfg.IPv6Network)
		want("FLANNEL_IPV6_SUBNET", c.IPv6Subnet, l.IPv6Subnet)
	}
	if b, err := s.loadBackend(); err == nil {
		want("FLANNEL_MTU", c.MTU, b.MTU())
	}
	want("FLANNEL_IPMASQ", c.IPMasq, s.Opts.IPMasq)
	if len(diffs) > 0 {
		for i, d := range diffs {
			diffs[i] = strings.Replace(d, "the lease says", "want", 1)
		}
		return fail(path+" disagrees with the lease: "+strings.Join(diffs, "; "),
			"restart flanneld to rewrite it, then restart what read it (Docker, or pods created since)", path)
	}
	first := ""
	if c.Subnet.IsValid() {
		first = "FLANNEL_SUBNET=" + ip.FirstHost(c.Subnet).String()
	} else {
		first = "FLANNEL_IPV6_SUBNET=" + ip.FirstHost(c.IPv6Subnet).String()
	}
	return pass("%s agrees with the lease: %s, FLANNEL_MTU=%d, FLANNEL_IPMASQ=%t", path, first, c.MTU, c.IPMasq)
}

func prefixes(ps []netip.Prefix) string {
	var out []string
	for _, p := range ps {
		out = append(out, p.String())
	}
	return strings.Join(out, ",")
}

func checkPublicIP(_ context.Context, s *State) Result {
	if s.cfg == nil {
		return skipAfter(CheckNetworkConfig)
	}
	ext, err := s.lookupIface()
	if err != nil {
		return fail("selecting the external interface as the daemon would: "+oneLine(err),
			"fix --iface, --iface-regex or --iface-can-reach (or the default route) so that they name this node's interface to the other nodes")
	}
	if s.own == nil {
		return skipAfter(CheckLease)
	}
	l := s.own.Lease
	type fam struct {
		on             bool
		have, pub, own netip.Addr
		flag, over     string
		overwrite      netip.Addr
	}
	fams := []fam{{s.cfg.EnableIPv4, l.Attrs.PublicIP, ext.Public, ext.Addr, "--public-ip", "public-ip-overwrite", netip.Addr{}},
		{s.cfg.EnableIPv6, l.Attrs.PublicIPv6, ext.Public6, ext.Addr6, "--public-ipv6", "public-ipv6-overwrite", netip.Addr{}}}
	if s.node != nil {
		fams[0].overwrite, fams[1].overwrite = s.node.PublicIPOverwrite, s.node.PublicIPv6Overwrite
	}
	var evs []string
	for _, f := range fams {
		if !f.on {
			continue
		}
		want, from := f.pub, "the address of "+ext.Name
		if f.pub != f.own {
			from = f.flag
		}
		if f.overwrite.IsValid() {
			want, from = f.overwrite, "the node's "+f.over+" annotation"
		}
		if f.have != want {
			return fail(fmt.Sprintf("the lease advertises %s, but %s is %s", addrOrNone(f.have), from, want),
				"restart flanneld so that it advertises "+want.String()+"; if "+addrOrNone(f.have)+" is another node's, that node's lease was taken over: check its --public-ip", s.own.Name)
		}
		evs = append(evs, fmt.Sprintf("%s (%s)", want, from))
	}
	return pass("the lease advertises %s", strings.Join(evs, " and "))
}
