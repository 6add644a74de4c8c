package kernelwatch

import "time"

// Backoff says when repairs of one object are slowed down. An object is hot when it
// appeared in more than Threshold batches of changes, each less than Window after the
// previous one; a batch made only of hot objects waits Base, doubled for every further
// appearance, up to Max. An object quiet for Window cools down.
//
// Every repair of ours is itself seen as a change (the echo of our write), so one
// removal by hand and its repair count as two appearances.
type Backoff struct {
	Window    time.Duration
	Threshold int
	Base, Max time.Duration
	// LargeBatch: batches with more objects than this are mass changes (a device
	// recreated, the echo of a lease-driven round, ...), not one object being fought
	// over; they are repaired at once and not counted.
	LargeBatch int
}

// DefaultBackoff: more than 8 appearances (about four removals and repairs) with gaps
// under 10 s make an object hot; its repairs then wait 0.5 s, 1 s, 2 s, ... up to 30 s.
func DefaultBackoff() Backoff {
	return Backoff{Window: 10 * time.Second, Threshold: 8, Base: 500 * time.Millisecond,
		Max: 30 * time.Second, LargeBatch: 64}
}

type heat struct {
	last   time.Time
	n      int
	warned bool
}

// damper tracks how often each object changes. It is used by one goroutine.
type damper struct {
	cfg       Backoff
	heat      map[Object]*heat
	lastPrune time.Time
}

func newDamper(cfg Backoff) *damper {
	return &damper{cfg: cfg, heat: make(map[Object]*heat)}
}

// hotObject is an object that just became hot, for logging.
type hotObject struct {
	Obj     Object
	Changes int
	Wait    time.Duration
}

// batch records one batch of changed objects seen at now. It returns how long the
// repair should wait (zero unless every object of the batch is hot: the longest wait
// of them) and the objects that became hot with this batch (each reported once until
// it cools down).
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

// prune forgets objects quiet for longer than the window, at most once per window.
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
