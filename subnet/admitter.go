package subnet

import (
	"cmp"
	"net/netip"
	"slices"
	"sort"
	"sync"

	"k8s.io/klog/v2"
)

// Admitter applies the admission rule to the leases a manager delivers and keeps the
// admitted ones, ordered by key, as a backend's peers, and the rejected ones with reasons.
// A lease is admitted when it passes the Rule and overlaps neither the node's subnets nor
// another admitted lease. Of overlapping peers, or peers sharing a backend key, the senior
// one wins whatever the arrival order, and a loser is admitted once its winner goes.
// Rejections are logged once per name and version, never fatal. Apply, Refresh, Peers and
// Synced are for one goroutine; Rejected and Admitted may be called from any.
type Admitter struct {
	rule       *Rule
	own4, own6 netip.Prefix
	onReject   func(Reason)

	mu     sync.Mutex
	list   PeerList // admitted, ordered by key, one lease per key
	sen    []int64  // Origin.Seniority of list[i]
	names  []string // Origin.Name of list[i] in Kubernetes mode; nil in etcd mode (the key is the name)
	n4     [33]int32
	n6     [129]int32 // admitted subnets per prefix length
	idx6   []sub6     // admitted IPv6 subnets, ordered (IPv6 enabled only)
	held   map[ident]*held
	synced bool
	// keyLost are the ascending positions of backend-key losers; view is the list without them.
	keyLost []int
	view    PeerList
}

// ident names a lease by its key when that is its name (no name strings kept), else by name.
type ident struct {
	name string
	key  leaseKey
}

func (id ident) String() string {
	if id.name != "" {
		return id.name
	}
	return id.key.String()
}

// held is a rejected lease, kept whole only if it may be admitted without a new delivery.
type held struct {
	rej     *Rejection
	version int64
	cand    *Candidate
}

func keepsLease(r Reason) bool { return r == OverlapsPeer || r == LocalPublicIP || r == DuplicateKey }

// sub6 is an admitted IPv6 subnet with its lease's IPv4 subnet, which locates the lease.
type sub6 struct{ six, four pfxKey }

func (s sub6) compare(o sub6) int {
	if c := s.six.compare(o.six); c != 0 {
		return c
	}
	return s.four.compare(o.four)
}

// NewAdmitter makes the admission stage; onReject (may be nil) hears each logged rejection.
func NewAdmitter(rule *Rule, own *Lease, onReject func(Reason)) *Admitter {
	a := &Admitter{rule: rule, onReject: onReject, held: map[ident]*held{}}
	if own != nil {
		has4, has6 := rule.families(own)
		if has4 {
			a.own4 = own.Subnet.Masked()
		}
		if has6 {
			a.own6 = own.IPv6Subnet.Masked()
		}
	}
	if !rule.keys {
		a.names = []string{}
	}
	return a
}

// Synced reports whether a snapshot has been applied.
func (a *Admitter) Synced() bool { return a.synced }

// Peers is the admitted set ordered by key, a view valid until the next Apply or Refresh.
func (a *Admitter) Peers() Peers {
	if len(a.keyLost) > 0 {
		return a.view.Peers()
	}
	return a.list.Peers()
}

// RejectedLease is a rejected lease as Rejected lists it.
type RejectedLease struct {
	Name   string // the key (etcd) or node name (Kubernetes)
	Reason Reason
	Detail string
	// Lease is a copy when the lease may be admitted later, else nil.
	Lease *Lease
}

// Rejected lists the rejected leases, ordered by name.
func (a *Admitter) Rejected() []RejectedLease {
	a.mu.Lock()
	out := make([]RejectedLease, 0, len(a.held))
	for id, h := range a.held {
		r := RejectedLease{Name: id.String(), Reason: h.rej.Reason}
		if h.rej.Err != nil {
			r.Detail = h.rej.Err.Error()
		}
		if h.cand != nil {
			l := h.cand.Lease
			l.Attrs.BackendData, l.Attrs.BackendV6Data = cloneRaw(l.Attrs.BackendData), cloneRaw(l.Attrs.BackendV6Data)
			r.Lease = &l
		}
		out = append(out, r)
	}
	a.mu.Unlock()
	slices.SortFunc(out, func(x, y RejectedLease) int { return cmp.Compare(x.Name, y.Name) })
	return out
}

// Admitted lists the names of the admitted leases, ordered by key.
func (a *Admitter) Admitted() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]string, 0, a.list.Len()-len(a.keyLost))
	for i := range a.list.Len() {
		if !a.keyLoser(i) {
			out = append(out, a.identAt(i).String())
		}
	}
	return out
}

// Apply folds one watch result in, keeping no reference to r; changed: the admitted set did.
func (a *Admitter) Apply(r WatchResult) (changed bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if r.IsSnapshot() {
		changed = a.applySnapshot(r.Snapshot)
	} else {
		changed = a.applyEvents(r.Events)
	}
	if changed {
		a.settleKeys()
	}
	return changed
}

// Refresh re-reads the node's addresses, re-judging every lease if they changed, as Apply.
func (a *Admitter) Refresh() (changed bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.rule.RefreshLocal() {
		return false
	}
	b := a.newBatch()
	for i := range a.list.Len() {
		c := a.candidateAt(i)
		if rej := a.judge(&c); rej != nil {
			b.remove(i, a)
			a.reject(a.identAt(i), &c, rej, b.prev)
		}
	}
	local := map[ident]*held{}
	for id, h := range a.held {
		if h.rej.Reason == LocalPublicIP {
			local[id] = h
		}
	}
	for id, h := range local {
		b.release(id, h, a)
	}
	changed = a.finish(b)
	if changed {
		a.settleKeys()
	}
	return changed
}

// judge applies the per-lease checks and the check against the node's own subnets.
func (a *Admitter) judge(c *Candidate) *Rejection {
	if rej := a.rule.Check(c); rej != nil {
		return rej
	}
	has4, has6 := a.rule.families(&c.Lease)
	if has4 && a.own4.IsValid() && a.own4.Overlaps(c.Lease.Subnet.Masked()) {
		return Reject(OverlapsOwn, "subnet %s overlaps this node's %s", c.Lease.Subnet, a.own4)
	}
	if has6 && a.own6.IsValid() && a.own6.Overlaps(c.Lease.IPv6Subnet.Masked()) {
		return Reject(OverlapsOwn, "subnet %s overlaps this node's %s", c.Lease.IPv6Subnet, a.own6)
	}
	return nil
}

func (a *Admitter) identOf(c *Candidate) ident { return a.identOfLease(c.Origin.Name, &c.Lease) }

// identOfLease is the ident of lease l delivered under name (empty: its key).
func (a *Admitter) identOfLease(name string, l *Lease) ident {
	if name != "" && (!a.rule.keys || !IsSubnetKey(name, l.Subnet, l.IPv6Subnet)) {
		return ident{name: name}
	}
	return ident{key: keyOf(l)}
}

func (id ident) compare(o ident) int {
	if c := cmp.Compare(id.name, o.name); c != 0 {
		return c
	}
	return id.key.compare(o.key)
}

func (a *Admitter) keyAt(i int) leaseKey {
	return keyOfSubnets(a.list.subnet4(i), a.list.subnet6(i))
}

func (a *Admitter) identAt(i int) ident {
	if a.names != nil && a.names[i] != "" {
		return ident{name: a.names[i]}
	}
	return ident{key: a.keyAt(i)}
}

func (a *Admitter) candidateAt(i int) Candidate {
	c := Candidate{Lease: a.list.At(i), Origin: Origin{Seniority: a.sen[i]}}
	if a.names != nil {
		c.Origin.Name = a.names[i]
	}
	return c
}

// find returns the position of the admitted lease with key k, or where it would go.
func (a *Admitter) find(k leaseKey) (int, bool) {
	n := a.list.Len()
	i := sort.Search(n, func(i int) bool { return a.list.compareKeyAt(i, k) >= 0 })
	return i, i < n && a.list.compareKeyAt(i, k) == 0
}

// reject records c's rejection under id, logging and reporting it unless prev (the entries
// this round took out) holds the same rejection of the same version.
func (a *Admitter) reject(id ident, c *Candidate, rej *Rejection, prev map[ident]*held) {
	h := &held{rej: rej, version: c.Origin.Version}
	if keepsLease(rej.Reason) {
		cc := *c
		h.cand = &cc
	}
	old := a.held[id]
	if old == nil {
		old = prev[id]
	}
	a.held[id] = h
	if old != nil && old.rej.Reason == rej.Reason && (old.version == h.version || old.version == 0) {
		return // logged already (a demoted lease's version is not known: 0)
	}
	klog.InfoS("Rejected peer lease", "lease", id.String(), "reason", rej.Reason, "detail", rej.Err, "version", c.Origin.Version)
	if a.onReject != nil {
		a.onReject(rej.Reason)
	}
}

// applySnapshot replaces everything known by the snapshot (ordered in place).
func (a *Admitter) applySnapshot(snap []Candidate) bool {
	prev := a.held
	a.held = make(map[ident]*held, len(prev))
	valid := snap[:0]
	for i := range snap {
		c := &snap[i]
		if rej := a.judge(c); rej != nil {
			a.reject(a.identOf(c), c, rej, prev)
			continue
		}
		valid = append(valid, *c)
	}
	clear(snap[len(valid):]) // drop references
	sortCandidates(valid)
	valid = a.dedupe(valid)

	ms := a.contested(valid)
	if len(ms) > 0 {
		a.resolve(ms)
		out := valid[:0]
		lost := make(map[int]bool)
		for _, m := range ms {
			if !m.win {
				lost[m.src] = true
				a.reject(m.id, &m.c, m.rej, prev)
			}
		}
		for i := range valid {
			if !lost[i] {
				out = append(out, valid[i])
			}
		}
		clear(valid[len(out):])
		valid = out
	}
	a.logAdmitted(prev, valid)
	if a.synced && a.same(valid) {
		return false
	}
	a.resetTo(valid)
	a.synced = true
	return true
}

// dedupe drops from sorted cs every candidate with the key and name of an earlier one.
func (a *Admitter) dedupe(cs []Candidate) []Candidate {
	out := cs[:0]
	run := 0 // start of the current run of equal keys in out
	for i := range cs {
		if len(out) > 0 && compareKeys(&out[len(out)-1].Lease, &cs[i].Lease) != 0 {
			run = len(out)
		}
		dup := false
		for j := run; j < len(out) && !dup; j++ {
			dup = a.identOf(&out[j]) == a.identOf(&cs[i])
		}
		if !dup {
			out = append(out, cs[i])
		}
	}
	clear(cs[len(out):])
	return out
}

// same reports whether the admitted set is exactly cs (in order).
func (a *Admitter) same(cs []Candidate) bool {
	if len(cs) != a.list.Len() {
		return false
	}
	for i := range cs {
		if !SamePeer(a.list.At(i), cs[i].Lease) || a.sen[i] != cs[i].Origin.Seniority || a.identAt(i) != a.identOf(&cs[i]) {
			return false
		}
	}
	return true
}

// logAdmitted logs the leases of cs that were rejected before (prev).
func (a *Admitter) logAdmitted(prev map[ident]*held, cs []Candidate) {
	if len(prev) == 0 {
		return
	}
	for i := range cs {
		id := a.identOf(&cs[i])
		if h := prev[id]; h != nil && a.held[id] == nil {
			klog.InfoS("Admitted peer lease rejected before", "lease", id.String(), "was", h.rej.Reason)
		}
	}
}

// batch is one round of changes to the admitted set.
type batch struct {
	del     []int          // admitted positions to delete
	freed   []netip.Prefix // the judged subnets of deleted leases
	upd     []int          // admitted positions changed in place
	pending []Candidate    // leases that passed the per-lease checks, to admit unless contested
	prev    map[ident]*held
	changed bool
}

func (a *Admitter) newBatch() *batch { return &batch{prev: map[ident]*held{}} }

func (b *batch) remove(i int, a *Admitter) {
	l := a.list.At(i)
	for _, p := range a.subnetsOf(&l) {
		if p.IsValid() {
			b.freed = append(b.freed, p)
		}
	}
	b.del = append(b.del, i)
}

// release takes a held lease out of the record to be judged again this round.
func (b *batch) release(id ident, h *held, a *Admitter) {
	delete(a.held, id)
	b.prev[id] = h
	c := *h.cand
	if rej := a.judge(&c); rej != nil {
		a.reject(id, &c, rej, b.prev)
		return
	}
	b.pending = append(b.pending, c)
}

// applyEvents applies a batch of events: of the events about one name the last
// decides, after the removals of other subnets under that name.
func (a *Admitter) applyEvents(evs []Event) bool {
	// The events grouped by name without a map (a churn of thousands of events would build
	// one of thousands of entries): positions ordered by name, then arrival; the groups are
	// taken in the order of their first event.
	ids := make([]ident, len(evs))
	byID := make([]int32, len(evs))
	removals := 0
	for i := range evs {
		ids[i] = a.identOfLease(evs[i].Origin.Name, &evs[i].Lease)
		byID[i] = int32(i)
		if evs[i].Type == EventRemoved {
			removals++
		}
	}
	slices.SortStableFunc(byID, func(x, y int32) int { return ids[x].compare(ids[y]) })
	type group struct{ first, from, to int32 } // byID[from:to] are its events
	groups := make([]group, 0, len(evs))
	for from := 0; from < len(byID); {
		to := from + 1
		for to < len(byID) && ids[byID[to]] == ids[byID[from]] {
			to++
		}
		groups = append(groups, group{first: byID[from], from: int32(from), to: int32(to)})
		from = to
	}
	slices.SortFunc(groups, func(x, y group) int { return cmp.Compare(x.first, y.first) })
	b := a.newBatch()
	b.del, b.freed = make([]int, 0, removals), make([]netip.Prefix, 0, removals)
	type update struct {
		pos int
		c   Candidate
	}
	var upds []update
	for _, g := range groups {
		id := ids[g.first]
		ev := &evs[byID[g.to-1]]
		if h := a.held[id]; h != nil {
			delete(a.held, id)
			b.prev[id] = h
		}
		addKey := keyOf(&ev.Lease)
		added := ev.Type == EventAdded
		for _, i := range byID[g.from:g.to] {
			if evs[i].Type != EventRemoved {
				continue
			}
			k := keyOf(&evs[i].Lease)
			if added && k == addKey {
				continue
			}
			if pos, ok := a.find(k); ok && a.identAt(pos) == id {
				b.remove(pos, a)
			}
		}
		if !added {
			continue
		}
		c := Candidate{Lease: ev.Lease, Origin: ev.Origin}
		pos, ok := a.find(addKey)
		mine := ok && a.identAt(pos) == id
		rej := a.judge(&c)
		switch {
		case mine && rej == nil:
			if a.sen[pos] != c.Origin.Seniority && a.hasLosers() {
				b.remove(pos, a) // its seniority changed: judged again against its losers
				b.pending = append(b.pending, c)
				continue
			}
			a.sen[pos] = c.Origin.Seniority
			upds = append(upds, update{pos, c})
		case mine:
			b.remove(pos, a)
			a.reject(id, &c, rej, b.prev)
		case rej != nil:
			a.reject(id, &c, rej, b.prev)
		default:
			b.pending = append(b.pending, c)
		}
	}
	for _, u := range upds {
		if !SamePeer(a.list.At(u.pos), u.c.Lease) {
			a.list.Set(u.pos, u.c.Lease)
			b.changed = true
		}
	}
	return a.finish(b)
}

// releaseLosers releases the held losers overlapping a subnet freed this round, in one sweep.
func (a *Admitter) releaseLosers(b *batch) {
	type loser struct {
		id ident
		h  *held
	}
	var losers []loser
	for id, h := range a.held {
		if h.rej.Reason == OverlapsPeer {
			losers = append(losers, loser{id, h})
		}
	}
	if len(losers) == 0 {
		return
	}
	var items []netip.Prefix
	var owner []int // loser of each item; -1 for a freed subnet
	for _, p := range b.freed {
		items, owner = append(items, p), append(owner, -1)
	}
	for k, l := range losers {
		for _, p := range a.subnetsOf(&l.h.cand.Lease) {
			if p.IsValid() {
				items, owner = append(items, p), append(owner, k)
			}
		}
	}
	perm := make([]int, len(items))
	keys := make([]pfxKey, len(items))
	for i := range items {
		perm[i], keys[i] = i, pfxKeyOf(items[i])
	}
	slices.SortFunc(perm, func(x, y int) int { return keys[x].compare(keys[y]) })
	freed := make([]bool, len(losers))
	sweep(len(perm), func(i int) netip.Prefix { return items[perm[i]] }, func(x, y int) {
		i, j := owner[perm[x]], owner[perm[y]]
		switch {
		case i < 0 && j >= 0:
			freed[j] = true
		case j < 0 && i >= 0:
			freed[i] = true
		}
	})
	for k, l := range losers {
		if freed[k] {
			b.release(l.id, l.h, a)
		}
	}
}

func (a *Admitter) hasLosers() bool {
	for _, h := range a.held {
		if h.rej.Reason == OverlapsPeer {
			return true
		}
	}
	return false
}

// finish applies the round: the deletions, the losers they free, then the pending leases.
func (a *Admitter) finish(b *batch) bool {
	if len(b.del) > 0 {
		slices.Sort(b.del)
		b.del = slices.Compact(b.del)
		a.deleteAt(b.del)
		b.changed = true
	}
	if len(b.freed) > 0 {
		a.releaseLosers(b)
	}
	if len(b.pending) > 0 {
		sortCandidates(b.pending)
		b.changed = a.admit(b.pending, b.prev) || b.changed
	}
	if len(b.prev) > 0 {
		for i := range b.pending {
			id := a.identOf(&b.pending[i])
			if h := b.prev[id]; h != nil && a.held[id] == nil {
				klog.InfoS("Admitted peer lease rejected before", "lease", id.String(), "was", h.rej.Reason)
			}
		}
	}
	return b.changed
}
