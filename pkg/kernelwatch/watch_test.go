package kernelwatch

import (
	"net/netip"
	"testing"
)

// A batch past LargeBatch keeps no objects and kicks at once; the next starts afresh.
func TestMassChangeKeepsNoObjects(t *testing.T) {
	for _, tc := range []struct {
		name       string
		n          int
		wantKept   int
		wantUrgent bool
	}{
		{"one", 1, 1, false},
		{"at the limit", 64, 64, false},
		{"past the limit", 65, 0, true},
		{"a round's echo", 20000, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &watcher{cfg: Config{Backoff: DefaultBackoff()}, pending: map[Object]struct{}{}, wake: make(chan struct{}, 1)}
			for i := range tc.n {
				w.add(Object{Kind: KindRoute, Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)})
			}
			batch, urgent := w.take()
			if len(batch) != tc.wantKept || urgent != tc.wantUrgent {
				t.Fatalf("take() = %d objects, urgent %v; want %d, %v", len(batch), urgent, tc.wantKept, tc.wantUrgent)
			}
			w.add(Object{Kind: KindLink, Device: "fl0"})
			if batch, urgent := w.take(); len(batch) != 1 || urgent {
				t.Fatalf("next batch = %d objects, urgent %v; want 1, false", len(batch), urgent)
			}
		})
	}
}

// take hands out each batch whole until the next take; a reused batch starts empty.
func TestTakeKeepsBatchUntilNextTake(t *testing.T) {
	w := &watcher{cfg: Config{Backoff: DefaultBackoff()}, pending: map[Object]struct{}{}, wake: make(chan struct{}, 1)}
	obj := func(i int) Object {
		return Object{Kind: KindRoute, Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 32)}
	}
	for round := range 4 {
		w.add(obj(round))
		w.add(obj(100 + round))
		batch, _ := w.take()
		w.add(obj(200 + round)) // arrives while dispatch reads batch
		if len(batch) != 2 {
			t.Fatalf("round %d: batch of %d objects, want 2", round, len(batch))
		}
		for _, o := range []Object{obj(round), obj(100 + round)} {
			if _, ok := batch[o]; !ok {
				t.Fatalf("round %d: batch lacks %v", round, o)
			}
		}
		if next, _ := w.take(); len(next) != 1 {
			t.Fatalf("round %d: the change after the take: %d objects, want 1", round, len(next))
		}
	}
}
