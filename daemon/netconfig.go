package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/configkeys"
	"github.com/flannel-go/flannel/pkg/healthz"
	"github.com/flannel-go/flannel/pkg/logwarn"
	"github.com/flannel-go/flannel/pkg/observe"
	"github.com/flannel-go/flannel/subnet"
)

// checkNetworkConfig is the readiness check failing with the config's problems meanwhile.
const checkNetworkConfig = "network-config"

// configRepeat is how often an unchanged config problem is logged again.
const configRepeat = time.Minute

// configReport is what a look at the config found: problems, backend problems, ineffective keys.
type configReport struct {
	cfg      *subnet.Config // the config when it has no problem, else nil
	problems []string
	warnings []configkeys.Warning
}

// judgeConfig adds the backend type's and backend's own problems to the manager's verdict.
func judgeConfig(cfg *subnet.Config, err error, backends map[string]backend.Constructor, checkers map[string]backend.ConfigChecker) configReport {
	var r configReport
	var bt string
	var raw json.RawMessage
	if err != nil {
		r.problems = append(r.problems, err.Error())
		var ce *subnet.ConfigError
		if errors.As(err, &ce) {
			r.warnings, bt, raw = ce.Warnings, ce.BackendType, ce.Backend
		}
	} else {
		r.warnings, bt, raw = cfg.Warnings, cfg.BackendType, cfg.Backend
	}
	if bt != "" {
		if _, ok := backends[bt]; !ok {
			r.problems = append(r.problems, unknownBackend(bt, backends))
		} else if check := checkers[bt]; check != nil {
			w, err := check(raw)
			r.warnings = append(r.warnings, w...)
			r.problems = append(r.problems, messages(err)...)
		}
	}
	if len(r.problems) == 0 {
		r.cfg = cfg
	}
	return r
}

// unknownBackend is upstream's message for a backend type this build lacks, with hints.
func unknownBackend(bt string, backends map[string]backend.Constructor) string {
	have := slices.Sorted(maps.Keys(backends))
	msg := "unknown backend type: " + bt + " ("
	if s := configkeys.Suggest(bt, have); s != "" {
		msg += "did you mean " + s + "? "
	}
	return msg + "this build has: " + strings.Join(have, ", ") + ")"
}

func messages(err error) []string {
	if err == nil {
		return nil
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	out := make([]string, 0, len(errs))
	for _, e := range errs {
		out = append(out, e.Error())
	}
	return out
}

func logWarnings(warns []configkeys.Warning) {
	for _, w := range warns {
		switch {
		case w.Repeats != "":
			logwarn.S("Key written twice in the network config; the last one counts", "key", w.Key, "first", w.Repeats)
		case w.Ignored != "":
			logwarn.S("Key of the network config ignored", "key", w.Key, "reason", w.Ignored)
		case w.Suggest != "":
			logwarn.S("Unknown key in the network config; ignored", "key", w.Key, "didYouMean", w.Suggest)
		default:
			logwarn.S("Unknown key in the network config; ignored", "key", w.Key)
		}
	}
}

func warningsText(warns []configkeys.Warning) string {
	s := make([]string, len(warns))
	for i, w := range warns {
		s[i] = w.String()
	}
	return strings.Join(s, "\n")
}

// setupBackend waits for a usable network config and builds its backend. Every problem of
// config, backend and constructor is logged together (again when changed, and every
// configRepeat) and retried without touching the kernel; only a missing interface is an error.
func setupBackend(ctx context.Context, deps Deps, obs observe.Observer, ready *healthz.Readiness, period time.Duration) (*subnet.Config, backend.Backend, error) {
	var logged, warned string // the problems and the warnings last logged
	var loggedAt time.Time
	for {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		cfg, err := deps.Manager.GetNetworkConfig(actx)
		var ce *subnet.ConfigError
		fetchErr := err != nil && !errors.As(err, &ce)
		if fetchErr && ctx.Err() == nil { // timeouts of the attempt included
			obs.DatastoreError(observe.GetConfig, err)
		}
		cancel()
		if ctx.Err() != nil {
			return nil, nil, ctx.Err() // stopped, not a datastore problem
		}
		if fetchErr {
			klog.ErrorS(err, "Couldn't fetch network config; retrying", "retryIn", period)
			ready.Set(checkNetworkConfig, fmt.Errorf("not read yet: %w", err))
			logged = ""
		} else {
			r := judgeConfig(cfg, err, deps.Backends, deps.CheckBackendConfig)
			if w := warningsText(r.warnings); w != warned {
				logWarnings(r.warnings)
				warned = w
			}
			if r.cfg != nil {
				ext, err := deps.LookupExtIface(r.cfg)
				if err != nil {
					return nil, nil, fmt.Errorf("failed to find any valid interface to use: %w", err)
				}
				be, err := deps.Backends[r.cfg.BackendType](ext, r.cfg)
				if err == nil {
					ready.Set(checkNetworkConfig, nil)
					return r.cfg, be, nil
				}
				r.problems = messages(err)
			}
			text := strings.Join(r.problems, "; ")
			if text != logged || time.Since(loggedAt) >= configRepeat {
				klog.ErrorS(errors.New(text), "Cannot use the network config; retrying until it is fixed", "retryIn", period)
				logged, loggedAt = text, time.Now()
			}
			ready.Set(checkNetworkConfig, errors.New(text))
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(period):
		}
	}
}

// followConfig warns of each change of the datastore's config until ctx ends; a restart applies it.
func followConfig(ctx context.Context, w subnet.ConfigWatcher, running *subnet.Config, deps Deps) {
	last, reported := running.Raw, false
	err := w.WatchConfig(ctx, func(text string) {
		if text == last {
			return
		}
		last = text
		if strings.TrimSpace(text) == "" {
			logwarn.S("The network config was deleted; the running config stays (a restart would wait until one is written)")
			reported = true
			return
		}
		changes := subnet.ChangedKeys(running.Raw, text)
		if len(changes) == 0 {
			if reported {
				klog.InfoS("The network config is the running one again; nothing to apply")
				reported = false
			}
			return
		}
		shown := make([]string, len(changes))
		for i, c := range changes {
			shown[i] = c.String()
		}
		cfg, err := subnet.ParseConfig(text)
		var ce *subnet.ConfigError
		if err != nil && !errors.As(err, &ce) {
			err = &subnet.ConfigError{Problems: []error{err}}
		}
		r := judgeConfig(cfg, err, deps.Backends, deps.CheckBackendConfig)
		kv := []any{"changes", shown}
		if len(r.warnings) > 0 {
			kv = append(kv, "warnings", strings.Split(warningsText(r.warnings), "\n"))
		}
		if len(r.problems) > 0 {
			kv = append(kv, "problems", strings.Join(r.problems, "; "))
			logwarn.S("The network config changed and cannot be used; the running config stays (a restart would wait until it is fixed)", kv...)
		} else {
			logwarn.S("The network config changed; restart flanneld to apply it (the running config stays until then)", kv...)
		}
		reported = true
	})
	if err != nil && ctx.Err() == nil {
		klog.ErrorS(err, "Stopped following the network config; its changes are not reported")
	}
}
