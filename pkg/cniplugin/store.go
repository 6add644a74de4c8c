package cniplugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/utils"

	"github.com/flannel-go/flannel/pkg/atomicfile"
)

// Store is the plugin's data directory in upstream's layout (a file per container holding
// the delegate config), plus ifNameDir recording interface names for GC.
type Store struct {
	Dir string
}

const ifNameDir = ".ifnames"

func (s Store) path(containerID string) string { return filepath.Join(s.Dir, containerID) }

func (s Store) ifNamePath(containerID string) string {
	return filepath.Join(s.Dir, ifNameDir, containerID)
}

// Save writes the config durably (fsync, rename) and records ifName.
func (s Store) Save(containerID, ifName string, conf []byte) error {
	if err := os.MkdirAll(filepath.Join(s.Dir, ifNameDir), 0o700); err != nil {
		return fmt.Errorf("failed to create the data directory: %w", err)
	}
	if err := atomicfile.WriteFile(s.path(containerID), conf, 0o600); err != nil {
		return fmt.Errorf("failed to save the delegate config: %w", err)
	}
	if err := atomicfile.WriteFile(s.ifNamePath(containerID), []byte(ifName+"\n"), 0o600); err != nil {
		return fmt.Errorf("failed to save the interface name: %w", err)
	}
	return nil
}

// Load returns the saved config; errors.Is(err, fs.ErrNotExist) when there is none.
func (s Store) Load(containerID string) ([]byte, error) {
	return os.ReadFile(s.path(containerID))
}

// IfName returns the recorded interface name; false when none (upstream) or invalid.
func (s Store) IfName(containerID string) (string, bool) {
	data, err := os.ReadFile(s.ifNamePath(containerID))
	if err != nil {
		return "", false
	}
	name := strings.TrimSuffix(string(data), "\n")
	if utils.ValidateInterfaceName(name) != nil {
		return "", false
	}
	return name, true
}

// Remove deletes what is kept for containerID; absent files are not an error.
func (s Store) Remove(containerID string) error {
	var errs []error
	for _, p := range []string{s.path(containerID), s.ifNamePath(containerID)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// List returns the saved container IDs and those with only an ifname left.
func (s Store) List() (saved, orphans []string, err error) {
	ents, err := os.ReadDir(s.Dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, err
	}
	have := map[string]bool{}
	for _, e := range ents {
		if e.Type().IsRegular() && utils.ValidateContainerID(e.Name()) == nil {
			saved = append(saved, e.Name())
			have[e.Name()] = true
		}
	}
	names, err := os.ReadDir(filepath.Join(s.Dir, ifNameDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, err
	}
	for _, e := range names {
		if e.Type().IsRegular() && utils.ValidateContainerID(e.Name()) == nil && !have[e.Name()] {
			orphans = append(orphans, e.Name())
		}
	}
	return saved, orphans, nil
}

// ParseSaved returns the "type" of a saved delegate config.
func ParseSaved(data []byte) (string, error) {
	var conf struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(data, &conf); err != nil {
		return "", fmt.Errorf("saved delegate config is not a JSON object with a string 'type': %w", err)
	}
	if conf.Type == "" {
		return "", errors.New("saved delegate config has no 'type'")
	}
	return conf.Type, nil
}
