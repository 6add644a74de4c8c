// Package diagnose answers "why can't my pods talk?" for one node: it reads the datastore,
// the daemon's control socket, the kernel and files, probes sampled peers, and reports each
// check with one line of evidence and, on failure, one line of fix. It changes nothing, and
// every datastore call has a timeout; what it cannot read is skipped with the reason.
package diagnose

import (
	"context"
	"fmt"
	"time"
)

// SchemaVersion of the JSON report changes only when a field changes meaning or goes away.
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
	Group    string   `json:"group"`
	Name     string   `json:"name"`
	Outcome  Outcome  `json:"outcome"`
	Evidence string   `json:"evidence"`          // what was found, or why it was skipped
	Fix      string   `json:"fix,omitempty"`     // on failure only
	Objects  []string `json:"objects,omitempty"` // what a failure blames
}

// Summary counts the outcomes.
type Summary struct {
	Passed  int `json:"passed"`
	Failed  int `json:"failed"`
	Skipped int `json:"skipped"`
}

// Report is the whole answer.
type Report struct {
	SchemaVersion int      `json:"schemaVersion"`
	Datastore     string   `json:"datastore"` // "etcd" or "kube"
	Network       string   `json:"network"`   // the etcd prefix, or "kube-subnet-mgr"
	Checks        []Result `json:"checks"`
	Summary       Summary  `json:"summary"`
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

// Check is one check: Run reads through the State's Deps and records there what later
// checks need; the caller fills in Group and Name.
type Check struct {
	Group, Name string
	Run         func(ctx context.Context, s *State) Result
	// Backend, when set, leaves the check out unless the config names that backend type.
	Backend string
}

// Run runs the checks in order; a panic is a bug, not a finding, so it is not caught.
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

func fail(evidence, fix string, objects ...string) Result {
	return Result{Outcome: Failed, Evidence: evidence, Fix: fix, Objects: objects}
}

func skipAfter(check string) Result {
	return skip("needs what the %s check could not establish", check)
}

func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d)
}
