package kernelwatch

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

func objs(os ...Object) map[Object]struct{} {
	m := make(map[Object]struct{}, len(os))
	for _, o := range os {
		m[o] = struct{}{}
	}
	return m
}

func TestDamper(t *testing.T) {
	cfg := Backoff{Window: time.Second, Threshold: 2, Base: 100 * time.Millisecond, Max: 400 * time.Millisecond, LargeBatch: 3}
	route := Object{Kind: KindRoute, Prefix: netip.MustParsePrefix("10.5.3.0/24"), Device: "flannel.1"}
	neigh := Object{Kind: KindNeigh, IP: netip.MustParseAddr("10.5.3.0"), Device: "flannel.1"}
	a, b, c := Object{Kind: KindLink, Device: "a"}, Object{Kind: KindLink, Device: "b"}, Object{Kind: KindLink, Device: "c"}
	t0 := time.Unix(1000, 0)
	type step struct {
		at       time.Duration
		batch    map[Object]struct{}
		wait     time.Duration
		newlyHot string
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"a fought object backs off exponentially and is logged once", []step{
			{0, objs(route), 0, ""},
			{100 * time.Millisecond, objs(route), 0, ""},
			{200 * time.Millisecond, objs(route), 100 * time.Millisecond, "route 10.5.3.0/24 dev flannel.1"},
			{300 * time.Millisecond, objs(route), 200 * time.Millisecond, ""},
			{400 * time.Millisecond, objs(route), 400 * time.Millisecond, ""},
			{500 * time.Millisecond, objs(route), 400 * time.Millisecond, ""},
		}},
		{"a cold object in the batch repairs at once", []step{
			{0, objs(route), 0, ""},
			{100 * time.Millisecond, objs(route), 0, ""},
			{200 * time.Millisecond, objs(route, neigh), 0, "route 10.5.3.0/24 dev flannel.1"},
		}},
		{"quiet for a window cools down", []step{
			{0, objs(route), 0, ""},
			{100 * time.Millisecond, objs(route), 0, ""},
			{200 * time.Millisecond, objs(route), 100 * time.Millisecond, "route 10.5.3.0/24 dev flannel.1"},
			{1300 * time.Millisecond, objs(route), 0, ""},
			{1400 * time.Millisecond, objs(route), 0, ""},
			{1500 * time.Millisecond, objs(route), 100 * time.Millisecond, "route 10.5.3.0/24 dev flannel.1"},
		}},
		{"large batches are mass changes, not counted", []step{
			{0, objs(a, b, c, route), 0, ""},
			{100 * time.Millisecond, objs(a, b, c, route), 0, ""},
			{200 * time.Millisecond, objs(a, b, c, route), 0, ""},
			{300 * time.Millisecond, objs(route), 0, ""},
			{400 * time.Millisecond, objs(route), 0, ""},
		}},
		{"empty batch", []step{{0, objs(), 0, ""}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDamper(cfg)
			for i, s := range tc.steps {
				wait, hot := d.batch(t0.Add(s.at), s.batch)
				got := ""
				for _, h := range hot {
					got += h.Obj.String()
				}
				if wait != s.wait || got != s.newlyHot {
					t.Fatalf("step %d: wait %v hot %q, want %v %q", i, wait, got, s.wait, s.newlyHot)
				}
			}
		})
	}
}

func TestDamperForgetsQuietObjects(t *testing.T) {
	d := newDamper(Backoff{Window: time.Second, Threshold: 2, Base: time.Millisecond, Max: time.Second, LargeBatch: 10})
	t0 := time.Unix(1000, 0)
	for i := range 5 {
		d.batch(t0, objs(Object{Kind: KindLink, Device: fmt.Sprint(i)}))
	}
	if len(d.heat) != 5 {
		t.Fatalf("%d objects tracked, want 5", len(d.heat))
	}
	d.batch(t0.Add(3*time.Second), objs(Object{Kind: KindLink, Device: "x"}))
	if len(d.heat) != 1 {
		t.Errorf("%d objects tracked after a quiet window, want 1", len(d.heat))
	}
}
