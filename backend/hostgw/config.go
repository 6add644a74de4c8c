package hostgw

import (
	"bytes"
	"encoding/json"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/configkeys"
)

var _ backend.ConfigChecker = CheckConfig

// CheckConfig checks the host-gw backend's own keys (the Backend object): host-gw has
// none besides Type, so every other key comes back as a warning (with the key it
// probably misspells); the error is for a Backend that is not an object.
func CheckConfig(raw json.RawMessage) ([]configkeys.Warning, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, nil
	}
	var typ string
	obj := configkeys.Object{Path: "Backend", Prefix: "host-gw: ",
		Fields: []configkeys.Field{{Name: "Type", Into: &typ}}}
	return obj.Decode(raw)
}
