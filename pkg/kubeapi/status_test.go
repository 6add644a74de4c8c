package kubeapi

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// protoStatusBody is a Status in the API server's protobuf envelope; kind is the
// envelope's kind, extra is appended to the Status message (unknown fields).
func protoStatusBody(kind, message, reason string, code int32, extra []byte) []byte {
	var st []byte
	st = protowire.AppendTag(st, 1, protowire.BytesType) // metadata
	st = protowire.AppendBytes(st, nil)
	st = protowire.AppendTag(st, 2, protowire.BytesType)
	st = protowire.AppendString(st, "Failure")
	st = protowire.AppendTag(st, 3, protowire.BytesType)
	st = protowire.AppendString(st, message)
	st = protowire.AppendTag(st, 4, protowire.BytesType)
	st = protowire.AppendString(st, reason)
	var details []byte
	details = protowire.AppendTag(details, 1, protowire.BytesType)
	details = protowire.AppendString(details, "nodes")
	st = protowire.AppendTag(st, 5, protowire.BytesType)
	st = protowire.AppendBytes(st, details)
	st = protowire.AppendTag(st, 6, protowire.VarintType)
	st = protowire.AppendVarint(st, uint64(code)) //nolint:gosec // int32 as protobuf encodes it
	st = append(st, extra...)

	var tm []byte
	tm = protowire.AppendTag(tm, 1, protowire.BytesType)
	tm = protowire.AppendString(tm, "v1")
	tm = protowire.AppendTag(tm, 2, protowire.BytesType)
	tm = protowire.AppendString(tm, kind)
	b := []byte(ProtobufMagic)
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendBytes(b, tm)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, st)
	b = protowire.AppendTag(b, 4, protowire.BytesType)
	b = protowire.AppendString(b, "application/vnd.kubernetes.protobuf")
	return b
}

func TestProtoStatusError(t *testing.T) {
	fixed32 := protowire.AppendFixed32(protowire.AppendTag(nil, 9, protowire.Fixed32Type), 7)
	tests := []struct {
		name                          string
		code                          int
		body                          []byte
		msg, reason                   string
		forbidden, unauthorized, gone bool
	}{
		{"forbidden", 403, protoStatusBody("Status", `nodes is forbidden: User "system:serviceaccount:default:nobody" cannot list resource "nodes"`, "Forbidden", 403, nil),
			`nodes is forbidden: User "system:serviceaccount:default:nobody" cannot list resource "nodes"`, "Forbidden", true, false, false},
		{"unauthorized", 401, protoStatusBody("Status", "Unauthorized", "Unauthorized", 401, nil), "Unauthorized", "Unauthorized", false, true, false},
		{"expired", 410, protoStatusBody("Status", "too old resource version: 5 (9)", "Expired", 410, fixed32), "too old resource version: 5 (9)", "Expired", false, false, true},
		{"code from HTTP", 410, protoStatusBody("Status", "gone", "", 0, nil), "gone", "", false, false, true},
		{"not a Status", 401, protoStatusBody("Node", "x", "Forbidden", 403, nil), "the server responded with status 401 Unauthorized", "", false, true, false},
		{"truncated", 403, protoStatusBody("Status", "nodes is forbidden", "Forbidden", 403, nil)[:30], "the server responded with status 403 Forbidden", "", true, false, false},
		{"magic only", 500, []byte(ProtobufMagic), "the server responded with status 500 Internal Server Error", "", false, false, false},
	}
	for _, tt := range tests {
		err := statusError(tt.code, tt.body)
		if err.Error() != tt.msg || err.Reason != tt.reason || IsForbidden(err) != tt.forbidden || IsUnauthorized(err) != tt.unauthorized || IsGone(err) != tt.gone {
			t.Errorf("%s: %q reason %q forbidden=%v unauthorized=%v gone=%v", tt.name, err, err.Reason, IsForbidden(err), IsUnauthorized(err), IsGone(err))
		}
	}
}

// FuzzStatusError: any body gives an error with a message; a Status encoded in protobuf
// (with arbitrary trailing fields) decodes to its message, reason and code.
func FuzzStatusError(f *testing.F) {
	f.Add(403, "nodes is forbidden", "Forbidden", int32(403), []byte{}, []byte(`{"kind":"Status","message":"m","code":403}`))
	f.Add(410, "too old", "Expired", int32(0), []byte{0x48, 0x01}, protoStatusBody("Status", "x", "y", 1, nil))
	f.Add(500, "", "", int32(-1), []byte{0xff}, []byte("k8s\x00\x12\x05"))
	f.Fuzz(func(t *testing.T, code int, message, reason string, stCode int32, extra, body []byte) {
		if code < 100 || code > 999 {
			code = 500
		}
		if e := statusError(code, body); e.Error() == "" {
			t.Fatalf("empty message for %q", body)
		}
		// Trailing bytes that are not whole fields make the Status unreadable; trailing
		// fields may repeat the known ones (the last one wins).
		repeats := false
		if ProtoFields(extra, func(num protowire.Number, _ protowire.Type, _ []byte, _ uint64) error {
			repeats = repeats || num == 3 || num == 4 || num == 6
			return nil
		}) != nil {
			return
		}
		enc := protoStatusBody("Status", message, reason, stCode, extra)
		s, ok := protoStatus(enc[len(ProtobufMagic):])
		if !ok {
			t.Fatalf("Status not decoded: %x", enc)
		}
		if !repeats && (s.Message != message || s.Reason != reason || s.Code != int(stCode)) {
			t.Fatalf("decoded %+v, want %q %q %d", s, message, reason, stCode)
		}
	})
}
