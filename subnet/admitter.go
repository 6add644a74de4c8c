package subnet

import (
	"cmp"
	"net/netip"
	"slices"
	"sort"
	"sync"

	"k8s.io/klog/v2"
)

// Admitter is the admission stage between a subnet manager and a backend, and the
// daemon's lease set. It applies the admission rule to the leases a manager delivers
// (Apply), keeps the admitted ones in compact form ordered by key, as the peers a
// backend reconciles to (Peers), and keeps the rejected ones with their reasons
// (Rejected).
//
// A lease is admitted when it passes the Rule's per-lease checks, overlaps none of the
// node's own subnets and overlaps no other admitted lease. Of peers that overlap, the
// admitted ones are those a greedy pass in seniority order (Origin.Seniority, then the
// name) admits: the same on every node whatever the order in which the leases arrive; a
// loser is admitted as soon as its winner goes away. A batch in which nothing overlaps
// costs no more than folding it into the set.
//
// A rejected lease is dropped, never fatal: logged once per name and version, with the
// reason and the name, and reported to onReject at the same time. The node's own lease
// is not delivered by the managers.
//
// Apply, Refresh and Peers are for one goroutine (the daemon's reconcile loop);
// Rejected and Admitted may be called from any goroutine.
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
}

// ident names a lease: by its key when that is its name (etcd, canonical keys: a
// snapshot then carries no name strings), else by its name.
type ident struct {
	name string
	key  leaseKey
}

// String is the name.
func (id ident) String() string {
	if id.name != "" {
		return id.name
	}
	return id.key.String()
}

// held is a rejected lease. The lease itself is kept only when it may be admitted
// later without a new delivery: when it lost to an overlapping peer (admitted when that
// one goes away) or names a local address (admitted when the address goes away).
type held struct {
	rej     *Rejection
	version int64
	cand    *Candidate
}

func keepsLease(r Reason) bool { return r == OverlapsPeer || r == LocalPublicIP }

// sub6 is an admitted IPv6 subnet with the IPv4 subnet of its lease (which locates the
// lease in the list).
type sub6 struct{ six, four pfxKey }

func (s sub6) compare(o sub6) int {
	if c := s.six.compare(o.six); c != 0 {
		return c
	}
	return s.four.compare(o.four)
}

// NewAdmitter makes the admission stage for a rule and the node's own lease. onReject
// (may be nil) hears each rejection when it is logged.
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

// Peers is the admitted peer set, ordered by key: a view of the Admitter's storage,
// valid until the next Apply or Refresh.
func (a *Admitter) Peers() Peers { return a.list.Peers() }

// RejectedLease is a rejected lease as Rejected lists it.
type RejectedLease struct {
	Name   string // the key (etcd) or node name (Kubernetes)
	Reason Reason
	Detail string
	// Lease is the lease when it is kept (it lost to an overlapping peer, or names one of
	// this node's addresses: it may be admitted later), else nil. It is a copy.
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
	out := make([]string, a.list.Len())
	for i := range out {
		out[i] = a.identAt(i).String()
	}
	return out
}

// Apply folds one watch result in and reports whether the admitted peer set changed.
// It keeps nothing of r but compact copies and, for rejected leases that may be
// admitted later, the leases themselves.
func (a *Admitter) Apply(r WatchResult) (changed bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if r.IsSnapshot() {
		return a.applySnapshot(r.Snapshot)
	}
	return a.applyEvents(r.Events)
}

// Refresh reads the node's addresses again; when they changed, every lease is judged
// again. It reports whether the admitted peer set changed.
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
	return a.finish(b)
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

// identOf names a candidate.
func (a *Admitter) identOf(c *Candidate) ident {
	l := &c.Lease
	if n := c.Origin.Name; n != "" && (!a.rule.keys || !IsSubnetKey(n, l.Subnet, l.IPv6Subnet)) {
		return ident{name: n}
	}
	return ident{key: keyOf(l)}
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

// candidateAt materialises the i-th admitted lease with what is known of its origin.
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

// reject records a rejected candidate under id, logging and reporting it unless the
// same rejection of the same version was recorded before (prev holds the entries this
// round took out of the record).
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

// ---- snapshots

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

// dedupe drops from sorted candidates every one with the same key and name as an
// earlier one (a snapshot holds a name once; the first wins).
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

// ---- the admitted storage

func (a *Admitter) resetTo(cs []Candidate) {
	a.list.resetWith(len(cs), func(i int) *Lease { return &cs[i].Lease })
	a.sen = resize(a.sen, len(cs))
	for i := range cs {
		a.sen[i] = cs[i].Origin.Seniority
	}
	if a.names != nil {
		a.names = resize(a.names, len(cs))
		for i := range cs {
			a.names[i] = a.identOf(&cs[i]).name
		}
	}
	a.n4, a.n6 = [33]int32{}, [129]int32{}
	a.idx6 = a.idx6[:0]
	for i := range cs {
		a.count(&cs[i].Lease, 1)
	}
	slices.SortFunc(a.idx6, sub6.compare)
}

// resize returns s with length n, reusing its storage unless it is more than twice as
// large as needed.
func resize[T any](s []T, n int) []T {
	if c := cap(s); c < n || (c > 2*n && c > 1024) {
		return make([]T, n)
	}
	clear(s[n:cap(s)])
	return s[:n]
}

// count adds d to the length counts of the lease's judged subnets, and appends an
// added IPv6 subnet to idx6 (unordered: the caller orders it).
func (a *Admitter) count(l *Lease, d int32) {
	has4, has6 := a.rule.families(l)
	if has4 {
		a.n4[l.Subnet.Bits()] += d
	}
	if has6 {
		a.n6[l.IPv6Subnet.Bits()] += d
		if d > 0 {
			k := keyOf(l)
			a.idx6 = append(a.idx6, sub6{six: k.sn6, four: k.sn})
		}
	}
}

// deleteAt removes the admitted leases at the given positions (ascending, distinct).
func (a *Admitter) deleteAt(at []int) {
	if len(at) == 0 {
		return
	}
	var gone6 []sub6
	for _, i := range at {
		l := a.list.At(i)
		a.count(&l, -1)
		if _, has6 := a.rule.families(&l); has6 {
			k := keyOf(&l)
			gone6 = append(gone6, sub6{six: k.sn6, four: k.sn})
		}
	}
	a.list.Delete(at)
	a.sen = deletePositions(a.sen, at)
	if a.names != nil {
		a.names = deletePositions(a.names, at)
	}
	if len(gone6) > 0 {
		slices.SortFunc(gone6, sub6.compare)
		a.idx6 = deleteSorted(a.idx6, gone6, sub6.compare)
	}
}

// insert adds candidates (ordered by key, keys not admitted yet).
func (a *Admitter) insert(cs []Candidate) {
	if len(cs) == 0 {
		return
	}
	at := make([]int, len(cs))
	for j := range cs {
		at[j], _ = a.find(keyOf(&cs[j].Lease)) // ascending, as cs is ordered
	}
	a.list.insertWith(at, func(j int) *Lease { return &cs[j].Lease })
	sen := make([]int64, len(cs))
	var names []string
	if a.names != nil {
		names = make([]string, len(cs))
	}
	n6 := len(a.idx6)
	for j := range cs {
		sen[j] = cs[j].Origin.Seniority
		if names != nil {
			names[j] = a.identOf(&cs[j]).name
		}
		a.count(&cs[j].Lease, 1)
	}
	a.sen = insertPositions(a.sen, at, sen)
	if a.names != nil {
		a.names = insertPositions(a.names, at, names)
	}
	if len(a.idx6) > n6 {
		added := slices.Clone(a.idx6[n6:])
		slices.SortFunc(added, sub6.compare)
		a.idx6 = mergeSorted(a.idx6[:n6], added, sub6.compare)
	}
}

// deletePositions removes s[i] for every i in at (ascending, distinct).
func deletePositions[T any](s []T, at []int) []T {
	w, g := at[0], 0
	for i := at[0]; i < len(s); i++ {
		if g < len(at) && at[g] == i {
			g++
			continue
		}
		s[w] = s[i]
		w++
	}
	clear(s[w:])
	return s[:w]
}

// insertPositions inserts vs[j] before s[at[j]] (at ascending), as PeerList.Insert.
func insertPositions[T any](s []T, at []int, vs []T) []T {
	n := len(s)
	s = slices.Grow(s, len(vs))[:n+len(vs)]
	i, j := n-1, len(vs)-1
	for w := len(s) - 1; j >= 0; w-- {
		if i >= at[j] {
			s[w] = s[i]
			i--
		} else {
			s[w] = vs[j]
			j--
		}
	}
	return s
}

// deleteSorted removes from the ordered s one element equal to each of the ordered rm.
func deleteSorted[T any](s, rm []T, compare func(T, T) int) []T {
	out, j := s[:0], 0
	for _, x := range s {
		for j < len(rm) && compare(rm[j], x) < 0 {
			j++
		}
		if j < len(rm) && compare(rm[j], x) == 0 {
			j++
			continue
		}
		out = append(out, x)
	}
	return out
}

// mergeSorted merges the ordered add into the ordered s.
func mergeSorted[T any](s, add []T, compare func(T, T) int) []T {
	n := len(s)
	s = slices.Grow(s, len(add))[:n+len(add)]
	i, j := n-1, len(add)-1
	for w := len(s) - 1; j >= 0; w-- {
		if i >= 0 && compare(s[i], add[j]) > 0 {
			s[w] = s[i]
			i--
		} else {
			s[w] = add[j]
			j--
		}
	}
	return s
}

// ---- overlap queries

// admittedOverlapping calls f with the position of every admitted lease whose subnet of
// p's family overlaps p.
func (a *Admitter) admittedOverlapping(p netip.Prefix, f func(pos int)) {
	if !p.IsValid() {
		return
	}
	p = p.Masked()
	if p.Addr().Is4() {
		a.overlapping4(p, f)
	} else {
		a.overlapping6(p, f)
	}
}

func (a *Admitter) overlapping4(p netip.Prefix, f func(pos int)) {
	n := a.list.Len()
	lb := pfxKeyOf(netip.PrefixFrom(p.Addr(), 0))
	// Those that start inside p: p itself, its descendants, and ancestors at p's address.
	for i := sort.Search(n, func(i int) bool { return a.list.compareV4At(i, lb) >= 0 }); i < n; i++ {
		q := a.list.subnet4(i)
		if !q.IsValid() || q.Bits() == 0 || !p.Contains(q.Addr()) {
			break
		}
		f(i)
	}
	// Ancestors that start before p: one probe per length present.
	for bits := 1; bits < p.Bits(); bits++ {
		if a.n4[bits] == 0 {
			continue
		}
		q := netip.PrefixFrom(p.Addr(), bits).Masked()
		if q.Addr() == p.Addr() {
			continue
		}
		k := pfxKeyOf(q)
		if i := sort.Search(n, func(i int) bool { return a.list.compareV4At(i, k) >= 0 }); i < n && a.list.compareV4At(i, k) == 0 {
			f(i)
		}
	}
}

func (a *Admitter) overlapping6(p netip.Prefix, f func(pos int)) {
	n := len(a.idx6)
	owner := func(e sub6) {
		if i, ok := a.find(leaseKey{sn: e.four, sn6: e.six}); ok {
			f(i)
		}
	}
	lb := pfxKeyOf(netip.PrefixFrom(p.Addr(), 0))
	for i := sort.Search(n, func(i int) bool { return a.idx6[i].six.compare(lb) >= 0 }); i < n; i++ {
		if !p.Contains(a.idx6[i].six.prefix().Addr()) {
			break
		}
		owner(a.idx6[i])
	}
	for bits := 1; bits < p.Bits(); bits++ {
		if a.n6[bits] == 0 {
			continue
		}
		q := netip.PrefixFrom(p.Addr(), bits).Masked()
		if q.Addr() == p.Addr() {
			continue
		}
		k := pfxKeyOf(q)
		i := sort.Search(n, func(i int) bool { return a.idx6[i].six.compare(k) >= 0 })
		for ; i < n && a.idx6[i].six == k; i++ {
			owner(a.idx6[i])
		}
	}
}

// subnetsOf are the judged subnets of a lease (at most one per family).
func (a *Admitter) subnetsOf(l *Lease) (out [2]netip.Prefix) {
	has4, has6 := a.rule.families(l)
	if has4 {
		out[0] = l.Subnet.Masked()
	}
	if has6 {
		out[1] = l.IPv6Subnet.Masked()
	}
	return out
}

// overlaps reports whether two leases' judged subnets overlap.
func (a *Admitter) overlaps(x, y *Lease) bool {
	sx, sy := a.subnetsOf(x), a.subnetsOf(y)
	for f := range sx {
		if sx[f].IsValid() && sy[f].IsValid() && sx[f].Overlaps(sy[f]) {
			return true
		}
	}
	return false
}

// sweep calls pair(i, j) for every two of n prefixes, ordered by key (the zero prefix
// first), that overlap: each is compared with the chain of earlier prefixes containing
// its address.
func sweep(n int, at func(i int) netip.Prefix, pair func(i, j int)) {
	type link struct {
		i int
		p netip.Prefix
	}
	var chain []link
	for i := range n {
		p := at(i)
		if !p.IsValid() {
			continue
		}
		for len(chain) > 0 && !chain[len(chain)-1].p.Contains(p.Addr()) {
			chain = chain[:len(chain)-1]
		}
		for _, l := range chain {
			pair(l.i, i)
		}
		chain = append(chain, link{i, p})
	}
}

// ---- contested sets

// member is a lease of a contested set: leases that overlap one another.
type member struct {
	c   Candidate
	id  ident
	src int   // index in the candidates it came from; -1 for others
	pos int   // position in the admitted list when admitted now, else -1
	adj []int // members it overlaps
	win bool
	rej *Rejection // why it lost
}

// contested returns the candidates (ordered by key) that overlap another one, with
// their overlaps; nil when none does.
func (a *Admitter) contested(cs []Candidate) []member {
	var ms []member
	idx := map[int]int{} // candidate -> member
	get := func(i int) int {
		if m, ok := idx[i]; ok {
			return m
		}
		idx[i] = len(ms)
		ms = append(ms, member{c: cs[i], id: a.identOf(&cs[i]), src: i, pos: -1})
		return len(ms) - 1
	}
	pair := func(i, j int) {
		mi, mj := get(i), get(j)
		ms[mi].adj = append(ms[mi].adj, mj)
		ms[mj].adj = append(ms[mj].adj, mi)
	}
	sub := func(i int) [2]netip.Prefix { return a.subnetsOf(&cs[i].Lease) }
	sweep(len(cs), func(i int) netip.Prefix { return sub(i)[0] }, pair)
	if a.rule.v6 {
		perm := make([]int, len(cs))
		six := make([]pfxKey, len(cs))
		for i := range perm {
			perm[i], six[i] = i, pfxKeyOf(sub(i)[1])
		}
		slices.SortFunc(perm, func(x, y int) int { return six[x].compare(six[y]) })
		sweep(len(cs), func(i int) netip.Prefix { return six[perm[i]].prefix() }, func(i, j int) { pair(perm[i], perm[j]) })
	}
	return ms
}

// resolve decides a contested set: in seniority order (then name, then key), a member
// wins unless it overlaps a member that won before it.
func (a *Admitter) resolve(ms []member) {
	order := make([]int, len(ms))
	names := make([]string, len(ms))
	for i := range ms {
		order[i], names[i] = i, ms[i].id.String()
	}
	slices.SortFunc(order, func(x, y int) int {
		if c := cmp.Compare(ms[x].c.Origin.Seniority, ms[y].c.Origin.Seniority); c != 0 {
			return c
		}
		if c := cmp.Compare(names[x], names[y]); c != 0 {
			return c
		}
		return keyOf(&ms[x].c.Lease).compare(keyOf(&ms[y].c.Lease))
	})
	decided := make([]bool, len(ms))
	for _, i := range order {
		m := &ms[i]
		m.win = true
		for _, j := range m.adj {
			if decided[j] && ms[j].win {
				m.win = false
				m.rej = Reject(OverlapsPeer, "it overlaps the older lease %s", names[j])
				break
			}
		}
		decided[i] = true
	}
}

// ---- event batches

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

// remove deletes the i-th admitted lease this round.
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
	type group struct {
		last int
		gone []leaseKey
	}
	groups := make(map[ident]*group, len(evs))
	var order []ident
	for i := range evs {
		c := Candidate{Lease: evs[i].Lease, Origin: evs[i].Origin}
		id := a.identOf(&c)
		g := groups[id]
		if g == nil {
			g = &group{}
			groups[id] = g
			order = append(order, id)
		}
		g.last = i
		if evs[i].Type == EventRemoved {
			g.gone = append(g.gone, keyOf(&evs[i].Lease))
		}
	}
	b := a.newBatch()
	type update struct {
		pos int
		c   Candidate
	}
	var upds []update
	for _, id := range order {
		g := groups[id]
		ev := &evs[g.last]
		if h := a.held[id]; h != nil {
			delete(a.held, id)
			b.prev[id] = h
		}
		addKey := keyOf(&ev.Lease)
		added := ev.Type == EventAdded
		for _, k := range g.gone {
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

// releaseLosers takes the held losers that overlap a subnet freed this round out of
// the record, to be judged again: one sweep over both, ordered by subnet.
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
	// Items: the freed subnets, then each loser's subnets.
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

// hasLosers reports whether a held lease lost to an overlapping peer.
func (a *Admitter) hasLosers() bool {
	for _, h := range a.held {
		if h.rej.Reason == OverlapsPeer {
			return true
		}
	}
	return false
}

// finish applies the round: the deletions, the losers they free, and the pending
// leases, contested or not.
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

// admit admits pending leases (ordered by key, none admitted under its name): at once
// those that overlap nothing, admitted or held; the others together with every admitted
// lease and held loser they overlap, directly or through one another, by resolve's
// greedy pass. It reports whether the admitted set changed.
func (a *Admitter) admit(pending []Candidate, prev map[ident]*held) (changed bool) {
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
	np := len(pending)
	subs := make([][2]netip.Prefix, np+len(losers))
	for i := range pending {
		subs[i] = a.subnetsOf(&pending[i].Lease)
	}
	for i, l := range losers {
		subs[np+i] = a.subnetsOf(&l.h.cand.Lease)
	}
	// Overlaps among the pending leases and with the losers: one sweep per family over
	// both, ordered by subnet.
	type pair struct{ i, j int }
	var pairs []pair
	conflict := make([]bool, np)
	perm := make([]int, len(subs))
	keys := make([]pfxKey, len(subs))
	for f := range 2 {
		for i := range subs {
			perm[i], keys[i] = i, pfxKeyOf(subs[i][f])
		}
		slices.SortFunc(perm, func(x, y int) int { return keys[x].compare(keys[y]) })
		sweep(len(perm), func(k int) netip.Prefix { return subs[perm[k]][f] }, func(x, y int) {
			i, j := perm[x], perm[y]
			if i >= np && j >= np {
				return // two losers
			}
			pairs = append(pairs, pair{i, j})
			for _, k := range [2]int{i, j} {
				if k < np {
					conflict[k] = true
				}
			}
		})
	}
	for i := range pending {
		for _, p := range subs[i] {
			if !conflict[i] {
				a.admittedOverlapping(p, func(int) { conflict[i] = true })
			}
		}
	}
	if !slices.Contains(conflict, true) {
		a.insert(pending)
		return true
	}

	// The contested set: the conflicting pending leases, then what they reach.
	var ms []member
	byPending := map[int]int{}
	byPos := map[int]int{}
	byLoser := map[int]int{} // index in losers -> member
	link := func(i, j int) {
		ms[i].adj = append(ms[i].adj, j)
		ms[j].adj = append(ms[j].adj, i)
	}
	addLoser := func(k int) int {
		if m, ok := byLoser[k]; ok {
			return m
		}
		byLoser[k] = len(ms)
		ms = append(ms, member{c: *losers[k].h.cand, id: losers[k].id, src: -1, pos: -1})
		return len(ms) - 1
	}
	for i := range pending {
		if conflict[i] {
			byPending[i] = len(ms)
			ms = append(ms, member{c: pending[i], id: a.identOf(&pending[i]), src: i, pos: -1})
		}
	}
	for _, p := range pairs {
		mi, ok := byPending[p.i]
		if p.i >= np {
			mi, ok = addLoser(p.i-np), true
		}
		mj, ok2 := byPending[p.j]
		if p.j >= np {
			mj, ok2 = addLoser(p.j-np), true
		}
		if ok && ok2 {
			link(mi, mj)
		}
	}
	for q := 0; q < len(ms); q++ {
		cur, curPos := ms[q].c.Lease, ms[q].pos
		sub := a.subnetsOf(&cur)
		for _, p := range sub {
			a.admittedOverlapping(p, func(pos int) {
				if pos == curPos {
					return
				}
				j, ok := byPos[pos]
				if !ok {
					j = len(ms)
					byPos[pos] = j
					ms = append(ms, member{c: a.candidateAt(pos), id: a.identAt(pos), src: -1, pos: pos})
				}
				link(q, j)
			})
		}
		if ms[q].src >= 0 {
			continue // its losers came from the sweep
		}
		for k, l := range losers {
			if l.id == ms[q].id {
				continue
			}
			ls := subs[np+k]
			if sub[0].IsValid() && ls[0].IsValid() && sub[0].Overlaps(ls[0]) || sub[1].IsValid() && ls[1].IsValid() && sub[1].Overlaps(ls[1]) {
				if j, ok := byLoser[k]; !ok || !slices.Contains(ms[q].adj, j) {
					link(q, addLoser(k))
				}
			}
		}
	}
	a.resolve(ms)

	var del []int
	add := make([]Candidate, 0, len(pending))
	for i := range pending {
		if !conflict[i] {
			add = append(add, pending[i])
		}
	}
	for i := range ms {
		m := &ms[i]
		switch {
		case m.pos >= 0 && !m.win: // demoted
			del = append(del, m.pos)
			a.reject(m.id, &m.c, m.rej, prev)
		case m.pos < 0 && m.win:
			if h := a.held[m.id]; h != nil {
				delete(a.held, m.id)
				klog.InfoS("Admitted peer lease rejected before", "lease", m.id.String(), "was", h.rej.Reason)
			}
			add = append(add, m.c)
		case m.pos < 0 && !m.win:
			a.reject(m.id, &m.c, m.rej, prev)
		}
	}
	if len(del) > 0 {
		slices.Sort(del)
		a.deleteAt(del)
	}
	sortCandidates(add)
	a.insert(add)
	return len(del) > 0 || len(add) > 0
}
