package wireguard

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/flannel-go/flannel/subnet"
)

// backendData is what a lease advertises per family; Port 0 (older upstream) means ours.
type backendData struct {
	PublicKey wgtypes.Key
	Port      int
}

// marshalBackendData writes {"PublicKey":"<base64>","Port":<port>} exactly as upstream.
func marshalBackendData(pub wgtypes.Key, port int) json.RawMessage {
	b := make([]byte, 0, 80)
	b = append(b, `{"PublicKey":"`...)
	b = append(b, pub.String()...)
	b = append(b, `","Port":`...)
	b = strconv.AppendInt(b, int64(port), 10)
	b = append(b, '}')
	return b
}

// parseBackendData reads a peer's BackendData or BackendV6Data, keys in any case as upstream.
func parseBackendData(raw []byte) (backendData, error) {
	if len(raw) == 0 {
		return backendData{}, errors.New("no backend data")
	}
	var in struct {
		PublicKey *string
		Port      *int64
	}
	if err := json.Unmarshal(raw, &in); err != nil {
		return backendData{}, fmt.Errorf("bad backend data: %s", describeDataError(err))
	}
	if in.PublicKey == nil {
		return backendData{}, errors.New("backend data has no PublicKey")
	}
	k, err := parsePublicKey(*in.PublicKey)
	if err != nil {
		return backendData{}, err
	}
	bd := backendData{PublicKey: k}
	if in.Port != nil {
		if *in.Port < 0 || *in.Port > 65535 {
			return backendData{}, fmt.Errorf("backend data Port %d out of range 0..65535", *in.Port)
		}
		bd.Port = int(*in.Port)
	}
	return bd, nil
}

// parsePublicKey accepts the strict base64 of 32 bytes, not all zeros.
func parsePublicKey(s string) (wgtypes.Key, error) {
	if len(s) != base64.StdEncoding.EncodedLen(wgtypes.KeyLen) {
		return wgtypes.Key{}, fmt.Errorf("malformed PublicKey: %d characters, want %d (base64 of 32 bytes)", len(s), base64.StdEncoding.EncodedLen(wgtypes.KeyLen))
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil || len(b) != wgtypes.KeyLen {
		return wgtypes.Key{}, fmt.Errorf("malformed PublicKey %q: not the base64 of 32 bytes", s)
	}
	k := wgtypes.Key(b)
	if k == (wgtypes.Key{}) {
		return wgtypes.Key{}, errors.New("malformed PublicKey: all zeros")
	}
	return k, nil
}

func describeDataError(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fmt.Sprintf("%s is a JSON %s", te.Field, te.Value)
	}
	return err.Error()
}

// CheckBackendData admits peer lease data parseBackendData accepts (subnet.RuleOptions).
func CheckBackendData(data json.RawMessage) error {
	_, err := parseBackendData(data)
	return err
}

// PublicKey returns the public key a lease advertises, IPv4 data's first, if ok.
func PublicKey(l *subnet.Lease) (key string, ok bool) {
	for _, raw := range [][]byte{l.Attrs.BackendData, l.Attrs.BackendV6Data} {
		if bd, err := parseBackendData(raw); err == nil {
			return bd.PublicKey.String(), true
		}
	}
	return "", false
}
