// Package cniplugin is the flannel CNI meta-plugin: it renders a delegate config from the
// subnet file, saves it per container in upstream's layout and runs the delegate. CHECK,
// STATUS and GC go beyond upstream (Documentation/differences-from-upstream.md).
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

	SubnetFile    string         `json:"subnetFile"`    // default DefaultSubnetFile
	DataDir       string         `json:"dataDir"`       // default DefaultDataDir
	Delegate      map[string]any `json:"delegate"`      // a partial delegate config
	IPAM          map[string]any `json:"ipam"`          // merged into the delegate's
	RuntimeConfig map[string]any `json:"runtimeConfig"` // copied into the delegate's

	PrevResult json.RawMessage `json:"prevResult"`
	// ValidAttachments is GC's list; LegacyAttachments reads the early name of the key.
	ValidAttachments  *[]types.GCAttachment `json:"cni.dev/valid-attachments"`
	LegacyAttachments *[]types.GCAttachment `json:"cni.dev/attachments"`
}

// ParseNetConf decodes and defaults the config; a wrong JSON type names its key.
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

// Attachments returns GC's valid attachments; false when there is no list (not empty).
func (nc *NetConf) Attachments() ([]types.GCAttachment, bool) {
	switch {
	case nc.ValidAttachments != nil:
		return *nc.ValidAttachments, true
	case nc.LegacyAttachments != nil:
		return *nc.LegacyAttachments, true
	}
	return nil, false
}

// DelegateType is delegate.type, default "bridge", once CheckDelegate passed.
func (nc *NetConf) DelegateType() string {
	if s, ok := nc.Delegate["type"].(string); ok {
		return s
	}
	return "bridge"
}

// CheckDelegate refuses a delegate with a bad type, flannel's own keys (name, ipam), or
// flannel itself.
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
