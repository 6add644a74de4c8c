package trafficrules

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// fakeIPT is an in-memory iptables counting writes.
type fakeIPT struct {
	chains map[string][]string // "table/chain" -> lines
	writes []string
}

func newFakeIPT() *fakeIPT {
	return &fakeIPT{chains: map[string][]string{"nat/POSTROUTING": nil, "filter/FORWARD": nil}}
}

func (f *fakeIPT) line(chain string, spec []string) string {
	return ipRule{chain: chain, spec: spec}.line()
}

func (f *fakeIPT) List(table, chain string) ([]string, error) {
	lines, ok := f.chains[table+"/"+chain]
	if !ok {
		return nil, fmt.Errorf("iptables: No chain/target/match by that name")
	}
	return append([]string{"-N " + chain}, lines...), nil
}

func (f *fakeIPT) ChainExists(table, chain string) (bool, error) {
	_, ok := f.chains[table+"/"+chain]
	return ok, nil
}

func (f *fakeIPT) NewChain(table, chain string) error {
	f.writes = append(f.writes, "new "+chain)
	f.chains[table+"/"+chain] = []string{}
	return nil
}

func (f *fakeIPT) DeleteChain(table, chain string) error {
	f.writes = append(f.writes, "delchain "+chain)
	if len(f.chains[table+"/"+chain]) > 0 {
		return fmt.Errorf("chain %s not empty", chain)
	}
	delete(f.chains, table+"/"+chain)
	return nil
}

func (f *fakeIPT) Insert(table, chain string, pos int, spec ...string) error {
	k := table + "/" + chain
	l := f.line(chain, spec)
	f.writes = append(f.writes, fmt.Sprintf("insert %d %s", pos, l))
	if pos < 1 || pos > len(f.chains[k])+1 {
		return fmt.Errorf("bad position %d", pos)
	}
	f.chains[k] = slices.Insert(f.chains[k], pos-1, l)
	return nil
}

func (f *fakeIPT) Delete(table, chain string, spec ...string) error {
	k := table + "/" + chain
	l := f.line(chain, spec)
	f.writes = append(f.writes, "delete "+l)
	i := slices.Index(f.chains[k], l)
	if i < 0 {
		return fmt.Errorf("Bad rule (does a matching rule exist in that chain?)")
	}
	f.chains[k] = slices.Delete(f.chains[k], i, i+1)
	return nil
}

func TestIPTSetEnsureOnFake(t *testing.T) {
	ctx := context.Background()
	ipt := newFakeIPT()
	ipt.chains["nat/POSTROUTING"] = []string{"-A POSTROUTING -j KUBE-POSTROUTING"}
	s := &iptSet{ipt: ipt, cur: fam4, masq: true, fwd: true, randomFully: true}
	n, err := s.ensure(ctx)
	if err != nil || n == 0 {
		t.Fatalf("first ensure: %d changes, %v", n, err)
	}
	wantMasq := []string{}
	for _, r := range iptMasqRules(fam4, true) {
		wantMasq = append(wantMasq, r.line())
	}
	if got := ipt.chains["nat/"+MasqChain]; !slices.Equal(got, wantMasq) {
		t.Fatalf("masq chain:\n%s", strings.Join(got, "\n"))
	}
	if got := ipt.chains["nat/POSTROUTING"]; !slices.Equal(got, []string{"-A POSTROUTING -j KUBE-POSTROUTING", iptMasqJump().line()}) {
		t.Fatalf("POSTROUTING: %q", got)
	}
	// Intact: no write at all.
	ipt.writes = nil
	if n, err := s.ensure(ctx); n != 0 || err != nil || len(ipt.writes) != 0 {
		t.Fatalf("second ensure: %d changes, %v, writes %q", n, err, ipt.writes)
	}
	// One rule deleted: exactly one insert, at its place.
	ipt.chains["nat/"+MasqChain] = slices.Delete(ipt.chains["nat/"+MasqChain], 2, 3)
	ipt.writes = nil
	if n, err := s.ensure(ctx); n != 1 || err != nil {
		t.Fatalf("repair: %d changes, %v", n, err)
	}
	if len(ipt.writes) != 1 || !strings.HasPrefix(ipt.writes[0], "insert 3 ") {
		t.Fatalf("repair writes %q", ipt.writes)
	}
	if got := ipt.chains["nat/"+MasqChain]; !slices.Equal(got, wantMasq) {
		t.Fatalf("masq chain after repair:\n%s", strings.Join(got, "\n"))
	}
}

func TestIPTSetStaleAndForeign(t *testing.T) {
	ctx := context.Background()
	ipt := newFakeIPT()
	old := family{network: pfx("10.5.0.0/16"), subnet: pfx("10.5.1.0/24")}
	other := family{network: pfx("10.9.0.0/16"), subnet: pfx("10.9.4.0/24")}
	for _, f := range []family{old, other} {
		s := &iptSet{ipt: ipt, cur: f, masq: true, fwd: true, randomFully: true}
		if _, err := s.ensure(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Restart with subnet 10.5.85.0/24, the old one known from subnet.env.
	s := &iptSet{ipt: ipt, cur: fam4, prev: []family{old}, masq: true, fwd: true, randomFully: true}
	if _, err := s.ensure(ctx); err != nil {
		t.Fatal(err)
	}
	text := strings.Join(ipt.chains["nat/"+MasqChain], "\n")
	if strings.Contains(text, "10.5.1.0/24") || !strings.Contains(text, "10.5.85.0/24") || !strings.Contains(text, "10.9.4.0/24") {
		t.Fatalf("after restart:\n%s", text)
	}
	// Clean-up (mode switch) removes ours only; the chain stays for the other instance.
	if n, err := s.cleanup(ctx); err != nil || n == 0 {
		t.Fatalf("cleanup: %d deleted, %v", n, err)
	}
	text = strings.Join(ipt.chains["nat/"+MasqChain], "\n")
	if strings.Contains(text, "10.5.") || !strings.Contains(text, "10.9.4.0/24") || !strings.Contains(text, "--mark") {
		t.Fatalf("after clean-up:\n%s", text)
	}
	if len(ipt.chains["nat/POSTROUTING"]) != 1 {
		t.Fatalf("the jump must stay while another instance uses the chain: %q", ipt.chains["nat/POSTROUTING"])
	}
	// The other instance cleans up too: nothing is left.
	o := &iptSet{ipt: ipt, cur: other, masq: true, fwd: true}
	if n, err := o.cleanup(ctx); err != nil || n == 0 {
		t.Fatalf("cleanup: %d deleted, %v", n, err)
	}
	for k, v := range ipt.chains {
		if strings.Contains(k, "FLANNEL") || len(v) != 0 {
			t.Errorf("left: %s %q", k, v)
		}
	}
	// Nothing left to remove: nothing deleted (and nothing for the caller to say).
	if n, err := o.cleanup(ctx); err != nil || n != 0 {
		t.Fatalf("cleanup of nothing: %d deleted, %v", n, err)
	}
}
