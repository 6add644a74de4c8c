package kubeapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// StatusError is an API server's refusal: the HTTP status and, when the body is a Status
// object (always, from a real API server), its reason and message.
type StatusError struct {
	Code    int    // HTTP status code (or the Status object's code)
	Reason  string // the Status reason, e.g. "Forbidden", "Expired"; "" when unknown
	Message string // the Status message, e.g. `nodes "a" is forbidden: User ...`
}

// Error is the Status message, as client-go's errors print.
func (e *StatusError) Error() string {
	if e.Message != "" {
		return e.Message
	}
	return fmt.Sprintf("the server responded with status %d %s", e.Code, http.StatusText(e.Code))
}

// status is the Status object (meta/v1) as far as it is read.
type status struct {
	Kind    string `json:"kind"`
	Status  string `json:"status"`
	Message string `json:"message"`
	Reason  string `json:"reason"`
	Code    int    `json:"code"`
}

// statusError builds the error for an HTTP response with status code and body: a Status
// object in JSON or, when the request asked for protobuf, in the API server's protobuf
// envelope.
func statusError(code int, body []byte) *StatusError {
	var s status
	ok := false
	if bytes.HasPrefix(body, []byte(ProtobufMagic)) {
		s, ok = protoStatus(body[len(ProtobufMagic):])
	} else {
		ok = json.Unmarshal(body, &s) == nil && s.Kind == "Status"
	}
	if ok {
		if s.Code == 0 {
			s.Code = code
		}
		return &StatusError{Code: s.Code, Reason: s.Reason, Message: s.Message}
	}
	e := &StatusError{Code: code}
	if text := strings.TrimSpace(string(body)); text != "" && len(text) < 512 && utf8.ValidString(text) && !bytes.HasPrefix(body, []byte(ProtobufMagic)) {
		e.Message = fmt.Sprintf("the server responded with status %d %s: %s", code, http.StatusText(code), text)
	}
	return e
}

// protoStatus decodes a Status from the protobuf envelope (after protoMagic): a
// runtime.Unknown whose typeMeta (field 1) names the kind (field 2 in it) and whose raw
// (field 2) is the Status: message 3, reason 4, code 6; the rest is skipped.
func protoStatus(b []byte) (status, bool) {
	var (
		s         status
		raw       []byte
		kind      string
		sawStatus bool
	)
	err := ProtoFields(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		switch {
		case num == 1 && typ == protowire.BytesType:
			return ProtoFields(v, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
				if num == 2 && typ == protowire.BytesType {
					kind = string(v)
				}
				return nil
			})
		case num == 2 && typ == protowire.BytesType:
			raw, sawStatus = v, true
		}
		return nil
	})
	if err != nil || kind != "Status" || !sawStatus {
		return status{}, false
	}
	s.Kind = kind
	err = ProtoFields(raw, func(num protowire.Number, typ protowire.Type, v []byte, n uint64) error {
		switch {
		case num == 2 && typ == protowire.BytesType:
			s.Status = string(v)
		case num == 3 && typ == protowire.BytesType:
			s.Message = string(v)
		case num == 4 && typ == protowire.BytesType:
			s.Reason = string(v)
		case num == 6 && typ == protowire.VarintType:
			s.Code = int(int32(n)) //nolint:gosec // int32 in the schema
		}
		return nil
	})
	if err != nil {
		return status{}, false
	}
	return s, true
}

// statusOf returns the StatusError in err's chain.
func statusOf(err error) (*StatusError, bool) {
	var se *StatusError
	ok := errors.As(err, &se)
	return se, ok
}

// IsForbidden reports a refusal by authorization (403, reason Forbidden).
func IsForbidden(err error) bool {
	se, ok := statusOf(err)
	return ok && (se.Reason == "Forbidden" || se.Code == http.StatusForbidden)
}

// IsUnauthorized reports refused credentials (401, reason Unauthorized).
func IsUnauthorized(err error) bool {
	se, ok := statusOf(err)
	return ok && (se.Reason == "Unauthorized" || se.Code == http.StatusUnauthorized)
}

// IsNotFound reports a missing object (404, reason NotFound).
func IsNotFound(err error) bool {
	se, ok := statusOf(err)
	return ok && (se.Reason == "NotFound" || se.Code == http.StatusNotFound)
}

// IsGone reports a resource version too old to watch or list from (410, reasons Expired
// and Gone): the client must list again.
func IsGone(err error) bool {
	se, ok := statusOf(err)
	return ok && (se.Reason == "Expired" || se.Reason == "Gone" || se.Code == http.StatusGone)
}
