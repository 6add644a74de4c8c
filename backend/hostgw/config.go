package hostgw

import (
	"bytes"
	"encoding/json"

	"github.com/flannel-go/flannel/backend"
	"github.com/flannel-go/flannel/pkg/configkeys"
)

var _ backend.ConfigChecker = CheckConfig

// CheckConfig is the host-gw backend.ConfigChecker: every key besides Type has no effect.
func CheckConfig(raw json.RawMessage) ([]configkeys.Warning, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, nil
	}
	var typ string
	obj := configkeys.Object{Path: "Backend", Prefix: "host-gw: ",
		Fields: []configkeys.Field{{Name: "Type", Into: &typ}}}
	return obj.Decode(raw)
}
