package main

import (
	"slices"
	"strings"

	"github.com/spf13/pflag"

	"github.com/flannel-go/flannel/pkg/configkeys"
	"github.com/flannel-go/flannel/pkg/logwarn"
)

// unknownVariable is a FLANNELD_* variable that names no flag, with its likely intended name.
type unknownVariable struct {
	Name, Suggest string
}

// unknownVariables returns environ's FLANNELD_* variables that fill no flag (VERSION is known).
func unknownVariables(environ []string) []unknownVariable {
	var r rawOptions
	var known []string
	newFlagSet(&r).VisitAll(func(f *pflag.Flag) { known = append(known, envName(f.Name)) })
	var out []unknownVariable
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, envPrefix+"_") || slices.Contains(known, name) {
			continue
		}
		out = append(out, unknownVariable{Name: name, Suggest: closest(name, known)})
	}
	slices.SortFunc(out, func(a, b unknownVariable) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func warnUnknownVariables(environ []string) {
	for _, u := range unknownVariables(environ) {
		kv := []any{"variable", u.Name}
		if u.Suggest != "" {
			kv = append(kv, "didYouMean", u.Suggest)
		}
		logwarn.S("Ignoring an environment variable that fills no flag", kv...)
	}
}

// closest is the known name that name probably misspells, by flag part; "" if none is close.
func closest(name string, known []string) string {
	part := strings.TrimPrefix(name, envPrefix+"_")
	if part == "" {
		return ""
	}
	parts := make([]string, len(known))
	for i, k := range known {
		parts[i] = strings.TrimPrefix(k, envPrefix+"_")
	}
	if s := configkeys.Suggest(part, parts); s != "" {
		return envPrefix + "_" + s
	}
	return ""
}
