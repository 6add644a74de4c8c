// Package diagnose answers "why can't my pods talk?" for one node. It reads the
// datastore, the running daemon's view (its control socket), the kernel and the node's
// files, probes a sample of peers with ICMP, and reports each check as passed, failed or
// skipped, with one line of evidence and, on failure, one line that says what to do.
//
// It changes nothing: it starts no backend, takes no lock and writes nothing to the
// kernel, the datastore or the disk. Every datastore call it makes has a timeout. What
// it cannot read (as a user other than root, say) is skipped with the reason.
//
// The checks run in a fixed order (Checks), each reading what the earlier ones learnt
// (State); a check whose input is missing is skipped and names the check that failed.
package diagnose

import (
	"context"
	"fmt"
	"time"
)

// SchemaVersion is the version of the JSON report. It changes when a field changes
// meaning or goes away; fields and checks may be added without a change.
const SchemaVersion = 1

// Outcome is what became of one check.
type Outcome string

// The outcomes.
const (
	Passed  Outcome = "passed"
	Failed  Outcome = "failed"
	Skipped Outcome = "skipped"
)

// Groups of checks, in the order they run.
const (
	GroupDaemon    = "daemon"
	GroupDatastore = "datastore"
	GroupLease     = "lease"
	GroupKernel    = "kernel"
	GroupPlumbing  = "plumbing"
	GroupPeers     = "peers"
)

// Result is one check's outcome.
type Result struct {
	Group   string  `json:"group"`
	Name    string  `json:"name"`
	Outcome Outcome `json:"outcome"`
	// Evidence is one line: what was found (passed, failed) or why the check did not
	// run (skipped).
	Evidence string `json:"evidence"`
	// Fix is one line saying what to do; set on failure only.
	Fix string `json:"fix,omitempty"`
	// Objects names what a failed check blames: peers, kernel objects, files, keys.
	Objects []string `json:"objects,omitempty"`
}

// Summary counts the outcomes.
type Summary struct {
	Passed  int `json:"passed"`
	Failed  int `json:"failed"`
	Skipped int `json:"skipped"`
}

// Report is the whole answer.
type Report struct {
	SchemaVersion int `json:"schemaVersion"`
	// Datastore is "etcd" or "kube".
	Datastore string `json:"datastore"`
	// Network names what was diagnosed: the etcd prefix, or the node in kube mode.
	Network string   `json:"network"`
	Checks  []Result `json:"checks"`
	Summary Summary  `json:"summary"`
}

// Failed reports whether a check failed.
func (r *Report) Failed() bool { return r.Summary.Failed > 0 }

// Exit statuses of the command.
const (
	ExitOK     = 0 // every check passed or was skipped
	ExitFailed = 1 // a check failed
	ExitUsage  = 2 // bad flags
)

// ExitStatus is the command's exit status for the report.
func (r *Report) ExitStatus() int {
	if r.Failed() {
		return ExitFailed
	}
	return ExitOK
}

// Check is one check: Run reads the node and the datastore through the State's Deps,
// records what later checks need in the State, and returns its outcome (Group and Name
// are filled in by Run's caller).
type Check struct {
	Group, Name string
	Run         func(ctx context.Context, s *State) Result
	// Backend, when set, is the only backend type the check is for: it is left out of
	// the report unless the network config names that backend.
	Backend string
}

// Run runs the checks in order and returns the report. A check that panics is not
// caught: a panic is a bug, not a finding.
func Run(ctx context.Context, s *State, checks []Check) *Report {
	r := &Report{SchemaVersion: SchemaVersion, Datastore: s.datastore(), Network: s.network()}
	for _, c := range checks {
		if c.Backend != "" && (s.cfg == nil || s.cfg.BackendType != c.Backend) {
			continue
		}
		res := c.Run(ctx, s)
		res.Group, res.Name = c.Group, c.Name
		s.results[c.Name] = res.Outcome
		r.Checks = append(r.Checks, res)
		switch res.Outcome {
		case Passed:
			r.Summary.Passed++
		case Failed:
			r.Summary.Failed++
		default:
			r.Summary.Skipped++
		}
	}
	return r
}

func pass(format string, args ...any) Result {
	return Result{Outcome: Passed, Evidence: fmt.Sprintf(format, args...)}
}

func skip(format string, args ...any) Result {
	return Result{Outcome: Skipped, Evidence: fmt.Sprintf(format, args...)}
}

// fail is a failed check: evidence, what to do, and the objects it blames.
func fail(evidence, fix string, objects ...string) Result {
	return Result{Outcome: Failed, Evidence: evidence, Fix: fix, Objects: objects}
}

// skipAfter is the outcome of a check whose input an earlier check could not provide.
func skipAfter(check string) Result {
	return skip("needs what the %s check could not establish", check)
}

// withTimeout bounds one datastore or control-socket call.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d)
}
