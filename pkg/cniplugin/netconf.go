// Package cniplugin is the flannel CNI meta-plugin: it reads the node's subnet file,
// renders the config of a delegate plugin (bridge with host-local IPAM by default), keeps
// that config per container in a data directory and runs the delegate. The data directory
// layout and the saved config (the delegate's own JSON, nothing around it) are the ones
// upstream's plugin uses, so either plugin deletes pods the other added.
//
// Beyond upstream, CHECK runs the delegate's CHECK, STATUS reports whether the subnet
// file is usable and GC drops what attachments the runtime no longer has left behind.
package cniplugin

import (
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"

	"github.com/containernetworking/cni/pkg/types"
)

// Defaults of the plugin's own keys.
const (
	DefaultSubnetFile = "/run/flannel/subnet.env"
	DefaultDataDir    = "/var/lib/cni/flannel"
)

// NetConf is the plugin's network config: the standard keys it uses plus its own.
type NetConf struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Type       string `json:"type"`

	// SubnetFile is the file flanneld writes (DefaultSubnetFile when absent or empty).
	SubnetFile string `json:"subnetFile"`
	// DataDir keeps the rendered delegate config per container (DefaultDataDir when
	// absent or empty).
	DataDir string `json:"dataDir"`
	// Delegate is a partial config of the delegate plugin; nil when absent.
	Delegate map[string]any `json:"delegate"`
	// IPAM is a partial IPAM config merged into the delegate's; nil when absent.
	IPAM map[string]any `json:"ipam"`
	// RuntimeConfig is copied into the delegate's config (portMappings and the like).
	RuntimeConfig map[string]any `json:"runtimeConfig"`

	// PrevResult is the runtime's previous result (CHECK), raw; nil when absent.
	PrevResult json.RawMessage `json:"prevResult"`
	// ValidAttachments is the runtime's list for GC; nil when absent. The CNI 1.1 spec
	// text first named the key cni.dev/attachments, which LegacyAttachments reads.
	ValidAttachments  *[]types.GCAttachment `json:"cni.dev/valid-attachments"`
	LegacyAttachments *[]types.GCAttachment `json:"cni.dev/attachments"`
}

// ParseNetConf decodes the plugin's network config and applies the defaults. A value of
// the wrong JSON type is an error naming its key.
func ParseNetConf(data []byte) (*NetConf, error) {
	var nc NetConf
	if err := json.Unmarshal(data, &nc); err != nil {
		return nil, fmt.Errorf("failed to load netconf: %w", describeJSONError(err))
	}
	if nc.SubnetFile == "" {
		nc.SubnetFile = DefaultSubnetFile
	}
	if nc.DataDir == "" {
		nc.DataDir = DefaultDataDir
	}
	if string(nc.PrevResult) == "null" {
		nc.PrevResult = nil
	}
	return &nc, nil
}

// Attachments returns the runtime's valid attachments for GC, and false when the config
// carries no list at all (which is not the same as an empty list).
func (nc *NetConf) Attachments() ([]types.GCAttachment, bool) {
	switch {
	case nc.ValidAttachments != nil:
		return *nc.ValidAttachments, true
	case nc.LegacyAttachments != nil:
		return *nc.LegacyAttachments, true
	}
	return nil, false
}

// DelegateType is the delegate plugin's type: delegate.type, default "bridge". It is
// meaningful once CheckDelegate passed.
func (nc *NetConf) DelegateType() string {
	if s, ok := nc.Delegate["type"].(string); ok {
		return s
	}
	return "bridge"
}

// CheckDelegate refuses a delegate config that flannel cannot complete: a type that is
// not a non-empty string, one that sets the keys flannel owns (name, ipam), or flannel itself.
func (nc *NetConf) CheckDelegate() error {
	if v, ok := nc.Delegate["type"]; ok {
		s, isString := v.(string)
		if !isString || s == "" {
			return errors.New("'delegate' dictionary, if present, must have (string) 'type' field")
		}
		if s == "flannel" || (nc.Type != "" && s == nc.Type) {
			return fmt.Errorf("'delegate' dictionary must not have 'type' %q: the delegate cannot be flannel itself; use bridge (the default) or another plugin", s)
		}
	}
	if _, ok := nc.Delegate["name"]; ok {
		return errors.New("'delegate' dictionary must not have 'name' field, it'll be set by flannel")
	}
	if _, ok := nc.Delegate["ipam"]; ok {
		return errors.New("'delegate' dictionary must not have 'ipam' field, it'll be set by flannel")
	}
	return nil
}

// describeJSONError turns a JSON type error into one that names the key and the expected
// JSON type; other errors pass through.
func describeJSONError(err error) error {
	var te *json.UnmarshalTypeError
	if !errors.As(err, &te) || te.Field == "" {
		return err
	}
	return fmt.Errorf("field %q must be %s, not %s", te.Field, jsonKind(te.Type), article(te.Value))
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

func jsonKind(t reflect.Type) string {
	if t == nil {
		return "another type"
	}
	if reflect.PointerTo(t).Implements(textUnmarshaler) {
		return "a string" // net.IP and the like
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return "another type"
}

func article(jsonValue string) string {
	switch jsonValue {
	case "object", "array":
		return "an " + jsonValue
	case "":
		return "that"
	}
	return "a " + jsonValue
}
