package trafficrules

import (
	"context"
	"slices"
	"testing"

	"github.com/flannel-go/flannel/pkg/observe"
)

type ruleObserver struct {
	observe.Nop
	repairs, other int
}

func (o *ruleObserver) KernelObjects(kind observe.Kind, op observe.Op, n int) {
	if kind == "rule" && op == "repair" {
		o.repairs += n
	} else {
		o.other += n
	}
}

// TestCheckReportsRepairs: restored rules are reported as repairs, intact ones not.
func TestCheckReportsRepairs(t *testing.T) {
	ctx := context.Background()
	ipt := newFakeIPT()
	s := &iptSet{ipt: ipt, cur: fam4, masq: true, fwd: true, randomFully: true}
	if _, err := s.ensure(ctx); err != nil {
		t.Fatal(err)
	}
	obs := &ruleObserver{}
	m := New(Options{Masquerade: true})
	m.sets = []ruleSet{s}
	m.SetObserver(obs)
	if n, err := m.Check(ctx); n != 0 || err != nil || obs.repairs != 0 {
		t.Fatalf("intact: %d %v, reported %d", n, err, obs.repairs)
	}
	ipt.chains["nat/"+MasqChain] = slices.Delete(ipt.chains["nat/"+MasqChain], 0, 2)
	if n, err := m.Check(ctx); n != 2 || err != nil {
		t.Fatalf("repair: %d %v", n, err)
	}
	if obs.repairs != 2 || obs.other != 0 {
		t.Fatalf("reported %d repairs, %d other changes; want 2, 0", obs.repairs, obs.other)
	}
}
