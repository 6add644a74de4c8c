package etcd

import (
	"testing"
	"time"
)

// WatchConfig delivers the config at start, each put and delete, across an etcd restart.
func TestWatchConfig(t *testing.T) {
	const v1, v2, v3 = `{"Network":"10.5.0.0/16"}`, `{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}`, `{"Network":"10.6.0.0/16"}`
	cli, p := setup(t, v1)
	m := newManager(t, Config{Endpoints: []string{p.Endpoint()}})
	texts := make(chan string, 16)
	ctx := tctx(t, 2*time.Minute)
	done := make(chan error, 1)
	go func() { done <- m.WatchConfig(ctx, func(s string) { texts <- s }) }()
	next := func(want string) {
		t.Helper()
		select {
		case got := <-texts:
			if got != want {
				t.Fatalf("got %q, want %q", got, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("no delivery of %q", want)
		}
	}
	next(v1)
	mustPut(t, cli, DefaultPrefix+"/config", v2)
	next(v2)
	if _, err := cli.Delete(tctx(t, 10*time.Second), DefaultPrefix+"/config"); err != nil {
		t.Fatal(err)
	}
	next("")
	mustPut(t, cli, DefaultPrefix+"/config", v1)
	next(v1)

	// etcd restarted: a later change is delivered (perhaps after the current value again).
	p.Kill()
	time.Sleep(time.Second)
	if err := p.Restart(tctx(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	mustPut(t, rawClient(t, p.Endpoint(), nil), DefaultPrefix+"/config", v3)
	deadline := time.After(60 * time.Second)
	for got := ""; got != v3; {
		select {
		case got = <-texts:
			if got != v1 && got != v3 {
				t.Fatalf("unexpected delivery %q", got)
			}
		case <-deadline:
			t.Fatal("the change made across the outage was not delivered")
		}
	}
	select {
	case err := <-done:
		t.Fatalf("WatchConfig returned: %v", err)
	default:
	}
}
