package etcd

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func revision(t *testing.T, cli *clientv3.Client) int64 {
	t.Helper()
	return getKV(t, cli, "/any").Header.Revision
}

// Inspection writes nothing: the revision stays.
func TestInspectReadsOnly(t *testing.T) {
	// The own lease is picked at random: below the subnets written by hand.
	cli, p := setup(t, `{"Network":"10.5.0.0/16","SubnetMax":"10.5.90.0","Backend":{"Type":"vxlan"}}`)
	owner := newManager(t, Config{Endpoints: []string{p.Endpoint()}})
	own := acquire(t, owner, attrsFor("192.0.2.11"))
	mustPut(t, cli, DefaultPrefix+"/subnets/10.5.99.0-24", `{"PublicIP":"192.0.2.99","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:00:00:00:00:99"}}`)
	mustPut(t, cli, DefaultPrefix+"/subnets/10.5.98.0-24", `not json`)

	m := newManager(t, Config{Endpoints: []string{p.Endpoint()}})
	before := revision(t, cli)
	ctx := tctx(t, 30*time.Second)

	st, err := m.Status(ctx, p.Endpoint())
	if err != nil || st.Version == "" || st.Leader == 0 {
		t.Errorf("Status: %+v, %v", st, err)
	}
	text, found, err := m.ConfigText(ctx)
	if err != nil || !found || !strings.Contains(text, "10.5.0.0/16") {
		t.Errorf("ConfigText: %q %v %v", text, found, err)
	}
	ls, err := m.List(ctx)
	if err != nil || len(ls) != 3 {
		t.Fatalf("List: %+v %v", ls, err)
	}
	byName := map[string]Listed{}
	for _, l := range ls {
		byName[l.Name] = l
	}
	if l := byName[own.Key()]; l.Lease.Subnet != own.Subnet || l.Lease.Attrs.PublicIP != own.Attrs.PublicIP || l.Reservation || l.Origin.Seniority == 0 {
		t.Errorf("own lease listed as %+v", l)
	}
	if l := byName["10.5.99.0-24"]; !l.Reservation || l.Origin.Defect != nil {
		t.Errorf("reservation listed as %+v", l)
	}
	if l := byName["10.5.98.0-24"]; l.Origin.Defect == nil {
		t.Errorf("garbage listed as %+v", l)
	}
	exp, err := m.Expiration(ctx, own.Key())
	if err != nil || exp.Before(time.Now().Add(23*time.Hour)) {
		t.Errorf("Expiration: %v %v", exp, err)
	}
	if exp, err := m.Expiration(ctx, "10.5.99.0-24"); err != nil || !exp.IsZero() {
		t.Errorf("a reservation's expiration: %v %v", exp, err)
	}
	if _, _, err := m.V2ConfigText(ctx); !errors.Is(err, ErrNoV2) {
		t.Errorf("V2ConfigText without v2: %v", err)
	}
	if after := revision(t, cli); after != before {
		t.Errorf("the revision moved from %d to %d", before, after)
	}
}

// A config written with the v2 API is found there, and only there.
func TestInspectV2Config(t *testing.T) {
	etcdctl, err := exec.LookPath("etcdctl")
	if err != nil {
		t.Skip("etcdctl not installed")
	}
	p := startEtcd(t, "--enable-v2=true")
	m := newManager(t, Config{Endpoints: []string{p.Endpoint()}})
	ctx := tctx(t, 30*time.Second)
	if _, found, err := m.V2ConfigText(ctx); err != nil || found {
		t.Fatalf("before: %v %v", found, err)
	}
	const conf = `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`
	cmd := exec.Command(etcdctl, "--endpoints", p.Endpoint(), "set", DefaultPrefix+"/config", conf)
	cmd.Env = append(cmd.Environ(), "ETCDCTL_API=2")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("etcdctl set: %v\n%s", err, out)
	}
	text, found, err := m.V2ConfigText(ctx)
	if err != nil || !found || text != conf {
		t.Errorf("V2ConfigText: %q %v %v", text, found, err)
	}
	if _, found, err := m.ConfigText(ctx); err != nil || found {
		t.Errorf("the v3 API sees it: %v %v", found, err)
	}
}

// An unanswering endpoint is an error within the caller's deadline naming it and why.
func TestInspectStatusDown(t *testing.T) {
	ep, other := closedPort(t), silentServer(t)
	m := newManager(t, Config{Endpoints: []string{ep, other}})
	start := time.Now()
	_, err := m.Status(tctx(t, 2*time.Second), ep)
	if want := ep + ": connection refused (nothing listens on that address and port)"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Status of an endpoint nothing listens on: %v, want it to say %q", err, want)
	}
	if strings.Contains(err.Error(), other) {
		t.Errorf("Status of %s names another endpoint: %v", ep, err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("Status took %v", d)
	}
	if _, _, err := m.V2ConfigText(tctx(t, 2*time.Second)); err == nil || !strings.Contains(err.Error(), ep+": connection refused") {
		t.Errorf("V2ConfigText with nothing listening: %v", err)
	}
}
