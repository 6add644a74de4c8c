package kernelwatch

import "time"

// Backoff slows the repair of objects fought over: an object is hot after more than Threshold
// appearances under Window apart (our repair's echo counts), and a batch of only hot objects
// waits Base, doubled per further appearance, up to Max. Quiet for Window, it cools.
type Backoff struct {
	Window    time.Duration
	Threshold int
	Base, Max time.Duration
	// LargeBatch: bigger batches are mass changes (a device recreated, a round's echo): no delay.
	LargeBatch int
}

// DefaultBackoff heats past 8 appearances under 10 s apart, then waits 0.5 s doubling to 30 s.
func DefaultBackoff() Backoff {
	return Backoff{Window: 10 * time.Second, Threshold: 8, Base: 500 * time.Millisecond,
		Max: 30 * time.Second, LargeBatch: 64}
}

type heat struct {
	last   time.Time
	n      int
	warned bool
}

// damper tracks how often each object changes; one goroutine uses it.
type damper struct {
	cfg       Backoff
	heat      map[Object]*heat
	lastPrune time.Time
}

func newDamper(cfg Backoff) *damper {
	return &damper{cfg: cfg, heat: make(map[Object]*heat)}
}

type hotObject struct {
	Obj     Object
	Changes int
	Wait    time.Duration
}

// batch records a batch of changed objects. wait is zero unless every object is hot (then
// the longest wait of them); newlyHot reports each object once until it cools.
func (d *damper) batch(now time.Time, objs map[Object]struct{}) (wait time.Duration, newlyHot []hotObject) {
	d.prune(now)
	if len(objs) == 0 || len(objs) > d.cfg.LargeBatch {
		return 0, nil
	}
	cold := false
	for o := range objs {
		h := d.heat[o]
		if h == nil {
			h = &heat{}
			d.heat[o] = h
		}
		if now.Sub(h.last) > d.cfg.Window {
			h.n, h.warned = 0, false
		}
		h.n++
		h.last = now
		over := h.n - d.cfg.Threshold
		if over <= 0 {
			cold = true
			continue
		}
		w := d.cfg.Base
		for i := 1; i < over && w < d.cfg.Max; i++ {
			w *= 2
		}
		w = min(w, d.cfg.Max)
		wait = max(wait, w)
		if !h.warned {
			h.warned = true
			newlyHot = append(newlyHot, hotObject{Obj: o, Changes: h.n, Wait: w})
		}
	}
	if cold {
		wait = 0
	}
	return wait, newlyHot
}

// prune forgets quiet objects, at most once per window.
func (d *damper) prune(now time.Time) {
	if now.Sub(d.lastPrune) < d.cfg.Window {
		return
	}
	d.lastPrune = now
	for o, h := range d.heat {
		if now.Sub(h.last) > d.cfg.Window {
			delete(d.heat, o)
		}
	}
}
