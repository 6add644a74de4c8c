package kernelwatch

import (
	"net/netip"
	"testing"
)

// Past LargeBatch objects a batch is a mass change: its objects are not kept and the
// kick is due at once; the next batch starts afresh.
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
