package etcd

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-go/flannel/subnet"
)

// With a 3 s TTL and 1 s margin the key outlives its TTL; deletion ends KeepLease with
// ErrLeaseRevoked.
func TestKeepLeaseRenewsAndRevoked(t *testing.T) {
	cli, p := setup(t, `{"Network":"10.5.0.0/16"}`)
	m := newManager(t, Config{Endpoints: []string{p.Endpoint()}, LeaseTTL: 6 * time.Second, RenewMargin: 3 * time.Second})
	l := acquire(t, m, attrsFor("198.51.100.1"))
	key := DefaultPrefix + "/subnets/" + l.Key()
	firstLease := getKV(t, cli, key).Kvs[0].Lease

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.KeepLease(ctx, l) }()

	// 12 s: twice the TTL, so the key survives only if renewed.
	for i := 0; i < 4; i++ {
		time.Sleep(3 * time.Second)
		resp := getKV(t, cli, key)
		if len(resp.Kvs) != 1 {
			t.Fatalf("key expired after %d s despite renewal", 3*(i+1))
		}
	}
	kv := getKV(t, cli, key).Kvs[0]
	if kv.Lease == firstLease {
		t.Fatal("lease was never renewed")
	}
	ttl, err := cli.TimeToLive(tctx(t, 5*time.Second), clientv3.LeaseID(kv.Lease))
	if err != nil || ttl.GrantedTTL != 6 || ttl.TTL <= 0 {
		t.Fatalf("TimeToLive %+v %v", ttl, err)
	}
	select {
	case err := <-done:
		t.Fatalf("KeepLease returned early: %v", err)
	default:
	}

	if _, err := cli.Delete(tctx(t, 5*time.Second), key); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, subnet.ErrLeaseRevoked) {
			t.Fatalf("KeepLease = %v, want ErrLeaseRevoked", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("KeepLease did not notice the deletion")
	}
	// Not resurrected by a late renewal.
	time.Sleep(2500 * time.Millisecond)
	if n := len(getKV(t, cli, key).Kvs); n != 0 {
		t.Fatal("deleted key came back")
	}
}

// The key expiring (its etcd lease revoked) is revocation too.
func TestKeepLeaseExpiryIsRevocation(t *testing.T) {
	cli, p := setup(t, `{"Network":"10.5.0.0/16"}`)
	m := newManager(t, Config{Endpoints: []string{p.Endpoint()}})
	l := acquire(t, m, attrsFor("198.51.100.1"))
	kv := getKV(t, cli, DefaultPrefix+"/subnets/"+l.Key()).Kvs[0]
	done := make(chan error, 1)
	go func() { done <- m.KeepLease(tctx(t, 30*time.Second), l) }()
	time.Sleep(500 * time.Millisecond)
	if _, err := cli.Revoke(tctx(t, 5*time.Second), clientv3.LeaseID(kv.Lease)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, subnet.ErrLeaseRevoked) {
			t.Fatalf("KeepLease = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("KeepLease did not notice the expiry")
	}
}

// A rewrite with a long etcd lease is adopted instead of renewing on the old schedule.
func TestKeepLeaseAdoptsRewrite(t *testing.T) {
	cli, p := setup(t, `{"Network":"10.5.0.0/16"}`)
	m := newManager(t, Config{Endpoints: []string{p.Endpoint()}, LeaseTTL: 4 * time.Second, RenewMargin: time.Second})
	l := acquire(t, m, attrsFor("198.51.100.1"))
	key := DefaultPrefix + "/subnets/" + l.Key()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.KeepLease(ctx, l) }()
	time.Sleep(500 * time.Millisecond)

	g, err := cli.Grant(tctx(t, 5*time.Second), 120)
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, cli, key, `{"PublicIP":"198.51.100.1","PublicIPv6":null}`, clientv3.WithLease(g.ID))
	time.Sleep(6 * time.Second)
	kv := getKV(t, cli, key).Kvs[0]
	if clientv3.LeaseID(kv.Lease) != g.ID {
		t.Fatalf("key moved to lease %x; the rewritten lease %x was not adopted", kv.Lease, g.ID)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("KeepLease after cancel = %v, want nil", err)
	}
}

// etcd is away longer than a renewal period; the key is renewed after it returns.
func TestKeepLeaseSurvivesOutage(t *testing.T) {
	cli, p := setup(t, `{"Network":"10.5.0.0/16"}`)
	m := newManager(t, Config{Endpoints: []string{p.Endpoint()}, LeaseTTL: 4 * time.Second, RenewMargin: 2 * time.Second})
	l := acquire(t, m, attrsFor("198.51.100.1"))
	key := DefaultPrefix + "/subnets/" + l.Key()
	done := make(chan error, 1)
	go func() { done <- m.KeepLease(tctx(t, 60*time.Second), l) }()
	time.Sleep(500 * time.Millisecond)
	p.Kill()
	time.Sleep(3 * time.Second) // the renewal (due ~2 s after acquisition) fails meanwhile
	if err := p.Restart(tctx(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	renewed := false
	for time.Now().Before(deadline) && !renewed {
		time.Sleep(500 * time.Millisecond)
		resp, err := cli.Get(tctx(t, 5*time.Second), key)
		if err != nil {
			continue
		}
		if len(resp.Kvs) == 0 {
			t.Fatal("key lost during the outage")
		}
		ttl, err := cli.TimeToLive(tctx(t, 5*time.Second), clientv3.LeaseID(resp.Kvs[0].Lease))
		renewed = err == nil && ttl.GrantedTTL == 4 && resp.Kvs[0].ModRevision > 0 && resp.Kvs[0].Version > 1
	}
	if !renewed {
		t.Fatal("lease not renewed after etcd came back")
	}
	select {
	case err := <-done:
		t.Fatalf("KeepLease returned: %v", err)
	default:
	}
}
