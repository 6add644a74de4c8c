package vxlan

import (
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/pkg/netlinkx"
)

// kernelCache lets a round skip the dumps after a round whose every request succeeded,
// until a change notification other than our own echo, a loss, a repair or Invalidate.
// DirectRouting rounds and Drift always read the kernel.
type kernelCache struct {
	on        bool   // the subscription works and the configuration allows caching
	pid       uint32 // port id of our request socket
	valid     bool   // every family's act is the kernel's state as the last round left it
	dirty     bool   // a notification not of our own making arrived
	applying  bool   // check notifications against the desired state being applied
	fdbEchoes int    // this round's successful FDB requests whose echo is unread
	reads     int    // rounds that read the kernel in full (tests)
}

// subscribe starts the change subscription; without it every round reads the kernel.
func (b *Backend) subscribe() {
	if b.vc.DirectRouting {
		return
	}
	if err := b.c.Subscribe(); err != nil {
		klog.InfoS("Cannot subscribe to kernel changes; every reconcile reads the kernel in full", "err", err)
		return
	}
	pid, err := b.c.PortID()
	if err != nil || pid == 0 {
		klog.InfoS("Cannot read the netlink port id; every reconcile reads the kernel in full", "err", err)
		return
	}
	b.kc.on, b.kc.pid = true, pid
	b.kc.dirty = true
}

// Invalidate makes the next Reconcile read the kernel and retry refused peers.
func (b *Backend) Invalidate() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.kc.valid = false
	b.retry = true
}

// Settled implements backend.Settler: the cache is valid, no foreign change is pending and
// no refused peer waits for a retry.
func (b *Backend) Settled() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.started || !b.kc.on || b.retry {
		return false
	}
	b.drainChanges()
	return b.kc.valid && !b.kc.dirty
}

// drainChanges reads pending notifications; any but our echo dirties the cache.
func (b *Backend) drainChanges() {
	if !b.kc.on {
		return
	}
	lost, err := b.c.Changes(b.noteChange)
	if lost || err != nil {
		klog.V(2).InfoS("Kernel change notifications lost; the next reconcile reads the kernel", "err", err)
		b.kc.dirty = true
	}
}

func (b *Backend) famByIndex(idx int) *family {
	for _, f := range b.fams {
		if f.index == idx && idx > 0 {
			return f
		}
	}
	return nil
}

func (b *Backend) noteChange(ch *netlinkx.Change) {
	if b.kc.dirty || ch.Pid == b.kc.pid {
		return // already dirty, or the echo of one of our requests
	}
	defer func() {
		if b.kc.dirty && klog.V(2).Enabled() {
			klog.InfoS("Kernel change not of our making; the next reconcile reads the kernel", "type", ch.Type, "pid", ch.Pid, "applying", b.kc.applying)
		}
	}()
	ext := b.ext.Iface.Index
	switch ch.Type {
	case unix.RTM_NEWLINK, unix.RTM_DELLINK, unix.RTM_NEWADDR, unix.RTM_DELADDR:
		if idx := netlinkx.ChangeIfindex(ch.Type, ch.Body); idx == ext || b.famByIndex(idx) != nil {
			b.kc.dirty = true
		}
	case unix.RTM_NEWROUTE, unix.RTM_DELROUTE:
		var r netlinkx.Route
		if netlinkx.ParseRoute(ch.Body, &r) != nil {
			b.kc.dirty = true
			return
		}
		if r.Table != unix.RT_TABLE_MAIN {
			return
		}
		if r.Oif != 0 && !r.Multipath && r.Oif != ext && b.famByIndex(r.Oif) == nil {
			return
		}
		b.kc.dirty = true
	case unix.RTM_NEWNEXTHOP, unix.RTM_DELNEXTHOP:
		var nh netlinkx.Nexthop
		if netlinkx.ParseNexthop(ch.Body, &nh) != nil {
			b.kc.dirty = true
			return
		}
		if nh.Oif != 0 && b.famByIndex(nh.Oif) == nil {
			return
		}
		b.kc.dirty = true
	case unix.RTM_NEWNEIGH, unix.RTM_DELNEIGH:
		var n netlinkx.Neigh
		if netlinkx.ParseNeigh(ch.Body, &n) != nil {
			b.kc.dirty = true
			return
		}
		f := b.famByIndex(n.Ifindex)
		if f == nil {
			return
		}
		static := n.State&staticNUD != 0
		if n.Family == unix.AF_BRIDGE {
			// vxlan FDB notifications carry no port id: during a round each successful
			// request raises one with exactly what we wrote; between rounds none is ours
			dst, owned := f.act.getFDB(n.MAC)
			if b.kc.applying {
				dst, owned = f.want.getFDB(n.MAC)
			}
			switch {
			case !static && !owned && n.HasMAC:
				// a learned entry for a MAC we do not program
			case !b.kc.applying || !n.HasMAC:
				b.kc.dirty = true
			case b.kc.fdbEchoes <= 0:
				b.kc.dirty = true // more notifications than our requests
			case ch.Type == unix.RTM_DELNEIGH && (!owned || dst != n.IP.Unmap()):
				b.kc.fdbEchoes-- // gone and not wanted
			case ch.Type == unix.RTM_NEWNEIGH && n.State == unix.NUD_PERMANENT && owned && dst == n.IP.Unmap():
				b.kc.fdbEchoes-- // what we wrote
			default:
				b.kc.dirty = true
			}
			return
		}
		if ch.Pid == 0 && (!static || n.IP.IsMulticast()) {
			// static entries change only by requests, which carry the requester's port id
			return
		}
		b.kc.dirty = true
	default:
		b.kc.dirty = true
	}
}

// promote makes f's actual state the desired one the round achieved, keeping the nexthops.
func (f *family) promote() {
	f.want, f.act = f.act, f.want
	switch act := f.act.(type) {
	case *keyedState[v4Key]:
		promoteKeyed(f.want.(*keyedState[v4Key]), act, &f.ops)
	case *keyedState[ipKey]:
		promoteKeyed(f.want.(*keyedState[ipKey]), act, &f.ops)
	}
}

// promoteKeyed: want and act have already swapped; o is the round's diff.
func promoteKeyed[K addrKey](want, act *keyedState[K], o *ops) {
	want.sized = max(want.sized, len(want.routes), len(want.neigh), len(want.fdb))
	want.nh, act.nh = act.nh, want.nh
	want.nhByID, act.nhByID = act.nhByID, want.nhByID
	want.nhSized, act.nhSized = act.nhSized, want.nhSized
	want.resetNexthops()
	nhGw, _ := o.nhGw.(map[K]struct{})
	for gw := range act.nh {
		if _, ok := nhGw[gw]; !ok {
			delete(act.nh, gw)
		}
	}
	act.extraNH = act.extraNH[:0]
	for dst, r := range act.routes {
		if r.flags&rtViaNH != 0 {
			r.nhID = act.nh[r.gw]
			act.routes[dst] = r
		}
	}
}
