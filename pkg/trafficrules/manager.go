package trafficrules

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"time"

	"github.com/coreos/go-iptables/iptables"
	"github.com/vishvananda/netlink"
	"k8s.io/klog/v2"
	"sigs.k8s.io/knftables"

	"github.com/flannel-go/flannel/pkg/observe"
)

// Options are the traffic-rule flags and what the previous run left in the subnet file.
type Options struct {
	Masquerade         bool          // --ip-masq
	RandomFullyDisable bool          // --ip-masq-fully-random-disable
	Forward            bool          // --iptables-forward-rules
	Blackhole          bool          // --ip-blackhole-route
	Resync             time.Duration // --iptables-resync: period of the full safety-net check

	// The previous run's networks and subnets (zero: unknown): rules of them are stale.
	PrevNetwork, PrevSubnet         netip.Prefix
	PrevIPv6Network, PrevIPv6Subnet netip.Prefix
}

// Manager keeps one instance's traffic rules, in the namespace of Setup's and Run's goroutine.
type Manager struct {
	opts Options

	// tests replace these (e.g. a host without nf_tables)
	newIPT func(v6 bool) (iptablesAPI, bool, error) // API, whether nf_tables-backed (change events)
	newNFT func(family knftables.Family, table string) (knftables.Interface, error)

	debounce time.Duration // wait after a change event before checking
	poll     time.Duration // check period when change events are not available
	retry    time.Duration // retry after a failed check

	nftables   bool
	sets       []ruleSet
	blackholes []netip.Prefix
	nl         *netlink.Handle
	events     bool // all rule sets produce nf_tables change events

	obs observe.Observer // rule repairs are reported to it (observe.go); nil: none
}

// New returns a Manager for the flags.
func New(opts Options) *Manager {
	if opts.Resync <= 0 {
		opts.Resync = 5 * time.Second
	}
	return &Manager{
		opts:     opts,
		newIPT:   newIPTables,
		newNFT:   func(f knftables.Family, t string) (knftables.Interface, error) { return knftables.New(f, t) },
		debounce: 100 * time.Millisecond,
		poll:     500 * time.Millisecond,
		retry:    500 * time.Millisecond,
	}
}

func newIPTables(v6 bool) (iptablesAPI, bool, error) {
	proto := iptables.ProtocolIPv4
	bin := "iptables"
	if v6 {
		proto, bin = iptables.ProtocolIPv6, "ip6tables"
	}
	ipt, err := iptables.New(iptables.IPFamily(proto), iptables.Timeout(5))
	if err != nil {
		return nil, false, fmt.Errorf("%s is not usable: %w", bin, err)
	}
	// go-iptables hides its backend: iptables-nft changes are announced, legacy ones polled.
	out, _ := exec.Command(bin, "--version").Output()
	return ipt, strings.Contains(string(out), "nf_tables"), nil
}

// Mode names the selected mode ("iptables" or "nftables") after Setup.
func (m *Manager) Mode() string {
	if m.nftables {
		return "nftables"
	}
	return "iptables"
}

// Networks are the flannel networks, the lease subnets per family (zero: off) and EnableNFTables.
type Networks struct {
	NFTables                bool
	Network, Subnet         netip.Prefix
	IPv6Network, IPv6Subnet netip.Prefix
}

// Setup selects the mode, removes our rules of the other mode and stale ones, and installs ours.
func (m *Manager) Setup(ctx context.Context, n Networks) error {
	m.nftables = n.NFTables
	m.sets, m.blackholes = nil, nil
	type fam struct {
		v6              bool
		cur             family
		prevNet, prevSn netip.Prefix
	}
	var fams []fam
	if f, ok := familyOf(false, n.Network, n.Subnet); ok {
		fams = append(fams, fam{false, f, m.opts.PrevNetwork, m.opts.PrevSubnet})
	}
	if f, ok := familyOf(true, n.IPv6Network, n.IPv6Subnet); ok {
		fams = append(fams, fam{true, f, m.opts.PrevIPv6Network, m.opts.PrevIPv6Subnet})
	}
	m.events = true
	for _, f := range fams {
		var prev []family
		var prevNets []netip.Prefix
		if pf, ok := familyOf(f.v6, f.prevNet, f.prevSn); ok && pf != f.cur {
			prev = append(prev, pf)
			klog.InfoS("Network or subnet changed since the last run: removing the old traffic rules",
				"oldNetwork", pf.network, "oldSubnet", pf.subnet, "network", f.cur.network, "subnet", f.cur.subnet)
		}
		if f.prevNet.IsValid() && f.prevNet.Masked() != f.cur.network {
			prevNets = append(prevNets, f.prevNet.Masked())
		}
		ipt, ipsNFT, iptErr := m.newIPT(f.v6)
		fam, table := nftTableFor(f.v6)
		nft, nftErr := m.newNFT(fam, table)
		var ipts *iptSet
		if iptErr == nil {
			ipts = &iptSet{ipt: ipt, v6: f.v6, cur: f.cur, prev: prev, masq: m.opts.Masquerade, fwd: m.opts.Forward}
		}
		var nfts *nftSet
		if nftErr == nil {
			nfts = &nftSet{nft: nft, v6: f.v6, table: table, cur: f.cur, prevNets: prevNets, masq: m.opts.Masquerade, fwd: m.opts.Forward}
		}
		if m.nftables {
			if nftErr != nil {
				return fmt.Errorf("EnableNFTables is true but nftables is not usable on this host (is the nf_tables kernel module available and the nft command installed?): %w", nftErr)
			}
			if ipts != nil {
				cleanUp(ctx, ipts, "nftables")
			} else {
				klog.V(2).InfoS("No iptables to clean up", "err", iptErr)
			}
			nfts.randomFully = !m.opts.RandomFullyDisable && nftHasFullyRandom(ctx, nft)
			if m.opts.Masquerade || m.opts.Forward {
				m.sets = append(m.sets, nfts)
			}
		} else {
			if iptErr != nil {
				if m.opts.Masquerade || m.opts.Forward {
					return fmt.Errorf("traffic rules: %w", iptErr)
				}
			} else {
				if ipt, ok := ipt.(*iptables.IPTables); ok {
					ipts.randomFully = !m.opts.RandomFullyDisable && ipt.HasRandomFully()
				} else {
					ipts.randomFully = !m.opts.RandomFullyDisable
				}
				if m.opts.Masquerade || m.opts.Forward {
					m.sets = append(m.sets, ipts)
					m.events = m.events && ipsNFT
				}
			}
			if nfts != nil {
				cleanUp(ctx, nfts, "iptables")
			} else {
				klog.V(2).InfoS("No nftables to clean up", "err", nftErr)
			}
		}
		if m.opts.Blackhole {
			m.blackholes = append(m.blackholes, f.cur.subnet)
		}
	}
	if len(m.blackholes) > 0 {
		h, err := netlink.NewHandle()
		if err != nil {
			return fmt.Errorf("blackhole route: netlink: %w", err)
		}
		m.nl = h
		if err := m.ensureBlackholes(); err != nil {
			return err
		}
	}
	for _, s := range m.sets {
		n, err := s.ensure(ctx)
		if err != nil {
			return fmt.Errorf("install %s traffic rules: %w", s, err)
		}
		klog.InfoS("Traffic rules in place", "mode", s.String(), "changes", n,
			"masquerade", m.opts.Masquerade, "forward", m.opts.Forward)
	}
	return nil
}

// cleanUp removes our rules of the mode not selected, logging only when there were some.
func cleanUp(ctx context.Context, s ruleSet, selected string) {
	n, err := s.cleanup(ctx)
	if n > 0 {
		klog.InfoS("Removed this instance's traffic rules of the mode not selected", "rules", s.String(), "selected", selected, "deleted", n)
	}
	if err != nil {
		klog.ErrorS(err, "Failed to clean up traffic rules of the mode not selected", "rules", s.String(), "selected", selected)
	}
}

// Check makes every rule set true once and returns the changes made.
func (m *Manager) Check(ctx context.Context) (int, error) {
	total := 0
	var errs []error
	for _, s := range m.sets {
		n, err := s.ensure(ctx)
		total += n
		if n > 0 {
			klog.InfoS("Traffic rules were changed by someone else; restored", "mode", s.String(), "changes", n)
			observe.Count(m.obs, observe.Rule, observe.Repair, n)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return total, errors.Join(errs...)
}

// Run keeps the rules true until ctx ends: a check per burst of nf_tables announcements (a poll
// for iptables-legacy), once the watches are in place, and every Resync.
func (m *Manager) Run(ctx context.Context) error {
	if len(m.sets) == 0 && len(m.blackholes) == 0 {
		return nil
	}
	var changed <-chan struct{}
	var pollC <-chan time.Time
	if len(m.sets) > 0 {
		ch, err := watchNFTables(ctx)
		if err != nil || !m.events {
			if err != nil {
				klog.ErrorS(err, "Cannot watch nf_tables changes; polling the traffic rules instead", "period", m.poll)
			}
			t := time.NewTicker(m.poll)
			defer t.Stop()
			pollC = t.C
		} else {
			changed = ch
		}
	}
	var routeC <-chan netlink.RouteUpdate
	if len(m.blackholes) > 0 {
		ch := make(chan netlink.RouteUpdate, 16)
		done := make(chan struct{})
		defer close(done)
		if err := netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{
			ErrorCallback: func(err error) { klog.V(2).InfoS("Route watch", "err", err) },
		}); err != nil {
			klog.ErrorS(err, "Cannot watch routes; blackhole routes are checked every resync period")
		} else {
			routeC = ch
		}
	}
	safety := time.NewTicker(m.opts.Resync)
	defer safety.Stop()
	var debounceC, retryC <-chan time.Time
	check := func() {
		if _, err := m.Check(ctx); err != nil && ctx.Err() == nil {
			klog.ErrorS(err, "Failed to check traffic rules; retrying", "retryIn", m.retry)
			retryC = time.After(m.retry)
		}
	}
	// A change made between Setup and the subscriptions above announced nothing to us.
	check()
	m.logBlackholeErr(m.ensureBlackholes())
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-changed:
			if !ok {
				changed = nil
				klog.InfoS("nf_tables watch ended; polling the traffic rules instead", "period", m.poll)
				t := time.NewTicker(m.poll)
				defer t.Stop()
				pollC = t.C
				continue
			}
			if debounceC == nil {
				debounceC = time.After(m.debounce)
			}
		case <-debounceC:
			debounceC = nil
			check()
		case <-pollC:
			check()
		case <-retryC:
			retryC = nil
			check()
		case u, ok := <-routeC:
			if !ok {
				routeC = nil
				continue
			}
			if u.Type == unixRTMDelRoute {
				m.logBlackholeErr(m.ensureBlackholes())
			}
		case <-safety.C:
			check()
			m.logBlackholeErr(m.ensureBlackholes())
		}
	}
}

func (m *Manager) logBlackholeErr(err error) {
	if err != nil {
		klog.ErrorS(err, "Failed to keep blackhole routes")
	}
}
