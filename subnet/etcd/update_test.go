package etcd

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/flannel-go/flannel/subnet"
)

// UpdateLeaseAttrs keeps the etcd lease; a reservation stays one; a deleted key is
// ErrLeaseRevoked, not recreated; KeepLease renews with the new value.
func TestUpdateLeaseAttrs(t *testing.T) {
	cli, p := setup(t, `{"Network":"10.5.0.0/16"}`)
	m := newManager(t, Config{Endpoints: []string{p.Endpoint()}, LeaseTTL: 4 * time.Second, RenewMargin: 2 * time.Second})
	l := acquire(t, m, attrsFor("198.51.100.1"))
	key := DefaultPrefix + "/subnets/" + l.Key()
	before := getKV(t, cli, key).Kvs[0]

	next := *attrsFor("198.51.100.1")
	next.BackendType, next.BackendData = "wireguard", []byte(`{"PublicKey":"AAAA","Port":51820}`)
	cfg, _ := subnet.ParseConfig(`{"Network":"10.5.0.0/16"}`)
	nl, err := m.UpdateLeaseAttrs(tctx(t, 10*time.Second), cfg, l, &next)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"PublicIP":"198.51.100.1","PublicIPv6":null,"BackendType":"wireguard","BackendData":{"PublicKey":"AAAA","Port":51820}}`
	after := getKV(t, cli, key).Kvs[0]
	if string(after.Value) != want || after.Lease != before.Lease {
		t.Fatalf("value %s lease %x, want %s on lease %x", after.Value, after.Lease, want, before.Lease)
	}
	if nl.Key() != l.Key() || !nl.Expiration.Equal(l.Expiration) || nl.Attrs.BackendType != "wireguard" {
		t.Fatalf("returned lease %+v", nl)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.KeepLease(ctx, nl) }()
	time.Sleep(5 * time.Second)
	kv := getKV(t, cli, key).Kvs[0]
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if kv.Lease == before.Lease || string(kv.Value) != want {
		t.Fatalf("after a renewal: value %s lease %x (first %x)", kv.Value, kv.Lease, before.Lease)
	}

	if _, err := cli.Delete(tctx(t, 5*time.Second), key); err != nil {
		t.Fatal(err)
	}
	if _, err := m.UpdateLeaseAttrs(tctx(t, 10*time.Second), cfg, nl, &next); !errors.Is(err, subnet.ErrLeaseRevoked) {
		t.Fatalf("update of a deleted lease: %v, want ErrLeaseRevoked", err)
	}
	if n := len(getKV(t, cli, key).Kvs); n != 0 {
		t.Fatal("the update recreated the deleted key")
	}

	const rkey = DefaultPrefix + "/subnets/10.5.200.0-24"
	mustPut(t, cli, rkey, `{"PublicIP":"198.51.100.2","PublicIPv6":null}`)
	m2 := newManager(t, Config{Endpoints: []string{p.Endpoint()}})
	r := acquire(t, m2, attrsFor("198.51.100.2"))
	if _, err := m2.UpdateLeaseAttrs(tctx(t, 10*time.Second), cfg, r, &next); err != nil {
		t.Fatal(err)
	}
	if kv := getKV(t, cli, rkey).Kvs[0]; kv.Lease != 0 || string(kv.Value) != want {
		t.Fatalf("reservation after update: %s lease %x", kv.Value, kv.Lease)
	}
}
