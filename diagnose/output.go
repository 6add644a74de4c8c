package diagnose

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// WriteJSON writes the report as one indented JSON document.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

var groupTitles = map[string]string{
	GroupDaemon:    "Daemon",
	GroupDatastore: "Datastore",
	GroupLease:     "Lease",
	GroupKernel:    "Kernel",
	GroupPlumbing:  "Local plumbing",
	GroupPeers:     "Peers",
}

var marks = map[Outcome]string{Passed: "ok  ", Failed: "FAIL", Skipped: "skip"}

// WriteText writes the checks grouped, one line each, with a "fix:" line under failures.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "flanneld diagnose: %s mode, %s\n", r.Datastore, r.Network)
	width := 0
	for _, c := range r.Checks {
		width = max(width, len(c.Name))
	}
	group := ""
	for _, c := range r.Checks {
		if c.Group != group {
			group = c.Group
			title := groupTitles[group]
			if title == "" {
				title = group
			}
			fmt.Fprintf(&b, "\n%s\n", title)
		}
		fmt.Fprintf(&b, "  %s  %-*s  %s\n", marks[c.Outcome], width, c.Name, c.Evidence)
		if c.Outcome == Failed && c.Fix != "" {
			fmt.Fprintf(&b, "  %s  %-*s  fix: %s\n", "    ", width, "", c.Fix)
		}
	}
	s := r.Summary
	fmt.Fprintf(&b, "\n%d passed, %d failed, %d skipped\n", s.Passed, s.Failed, s.Skipped)
	_, err := io.WriteString(w, b.String())
	return err
}
