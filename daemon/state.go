package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/flannel-go/flannel/pkg/atomicfile"
	"github.com/flannel-go/flannel/subnet"
)

// state is what this instance records beside its subnet file for the next run: the devices
// it created (removed when unused) and its attributes (so the VTEP MAC survives).
type state struct {
	Key     string            `json:"key"`
	Attrs   subnet.LeaseAttrs `json:"attrs"`
	Devices []string          `json:"devices"`
}

// statePath is the subnet file's state file: subnet.env -> subnet.state.json.
func statePath(subnetFile string) string {
	dir, base := filepath.Split(subnetFile)
	base = strings.TrimSuffix(base, filepath.Ext(base))
	return filepath.Join(dir, base+stateSuffix)
}

const stateSuffix = ".state.json"

func readState(path string) (*state, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state file: %w", err)
	}
	st, err := parseState(data)
	if err != nil {
		return nil, fmt.Errorf("parse state file %s: %w", path, err)
	}
	return st, nil
}

// parseState decodes a state file, refusing devices that are no valid link names.
func parseState(data []byte) (*state, error) {
	var st state
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, err
	}
	for _, name := range st.Devices {
		if !validLinkName(name) {
			return nil, fmt.Errorf("device %q is no link name", name)
		}
	}
	return &st, nil
}

func validLinkName(name string) bool {
	if name == "" || len(name) > 15 || name == "." || name == ".." {
		return false
	}
	return !strings.ContainsFunc(name, func(r rune) bool {
		return r == '/' || r == ':' || r == ' ' || (r >= '\t' && r <= '\r')
	})
}

func writeState(path string, st *state) error {
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, append(data, '\n'), 0o644)
}

// previousLease turns the recorded state into the hint Backend.Prepare takes.
func (st *state) previousLease() *subnet.Lease {
	if st == nil {
		return nil
	}
	sn, sn6, err := subnet.ParseSubnetKey(st.Key)
	if err != nil {
		return &subnet.Lease{Attrs: st.Attrs}
	}
	return &subnet.Lease{Subnet: sn, IPv6Subnet: sn6, EnableIPv4: sn.IsValid(), EnableIPv6: sn6.IsValid(), Attrs: st.Attrs}
}
