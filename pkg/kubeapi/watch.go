package kubeapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Watch event types.
const (
	Added    = "ADDED"
	Modified = "MODIFIED"
	Deleted  = "DELETED"
	Bookmark = "BOOKMARK" // only the object's metadata.resourceVersion is meaningful
	Error    = "ERROR"    // the object is a Status; Next returns it as a *StatusError
)

// Event is one watch event: its type and the object, undecoded.
type Event struct {
	Type   string          `json:"type"`
	Object json.RawMessage `json:"object"`
}

// WatchDecoder reads the events of a JSON watch stream (one JSON object per event).
type WatchDecoder struct {
	dec *json.Decoder
}

// NewWatchDecoder reads events from r.
func NewWatchDecoder(r io.Reader) *WatchDecoder {
	return &WatchDecoder{dec: json.NewDecoder(r)}
}

// Next returns the next event. It returns io.EOF when the stream ends cleanly (the
// server closes a watch after its timeout), a *StatusError for an ERROR event (IsGone:
// the resource version is too old, list again), and any other error for a broken
// stream or an event that is not one.
func (d *WatchDecoder) Next() (Event, error) {
	var ev Event
	if err := d.dec.Decode(&ev); err != nil {
		if errors.Is(err, io.EOF) {
			return Event{}, io.EOF
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return Event{}, fmt.Errorf("watch stream cut: %w", err)
		}
		return Event{}, fmt.Errorf("decode watch event: %w", err)
	}
	if len(ev.Object) == 0 || ev.Object[0] != '{' {
		return Event{}, fmt.Errorf("watch event %q without an object", ev.Type)
	}
	switch ev.Type {
	case Added, Modified, Deleted, Bookmark:
		return ev, nil
	case Error:
		var s status
		if err := json.Unmarshal(ev.Object, &s); err != nil {
			return Event{}, fmt.Errorf("decode watch error: %w", err)
		}
		return Event{}, &StatusError{Code: s.Code, Reason: s.Reason, Message: s.Message}
	default:
		return Event{}, fmt.Errorf("unknown watch event type %q", ev.Type)
	}
}
