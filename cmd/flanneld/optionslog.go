package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"time"

	"k8s.io/klog/v2"
)

// MarshalLog implements logr.Marshaler: wherever Options are logged they appear as
// LogSafe returns them (no secret), with durations in Go's notation ("1h0m0s", "5s")
// instead of nanoseconds.
func (o Options) MarshalLog() any { return loggedOptions(o.LogSafe()) }

// loggedOptions are Options as the log shows them: a JSON object of the fields in their
// declaration order, as encoding/json would write it, except that a time.Duration is its
// String().
type loggedOptions Options

// MarshalJSON implements json.Marshaler.
func (o loggedOptions) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	if err := o.encode(&b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// WriteText writes the object as it is (klog calls it for a value that has it; its JSON
// path would escape the '<' and '>' of "<redacted>").
func (o loggedOptions) WriteText(b *bytes.Buffer) {
	if err := o.encode(b); err != nil {
		fmt.Fprintf(b, "%q", "<options: "+err.Error()+">")
	}
}

func (o loggedOptions) encode(b *bytes.Buffer) error {
	v := reflect.ValueOf(o)
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	b.WriteByte('{')
	for i := range v.NumField() {
		if i > 0 {
			b.WriteByte(',')
		}
		f := v.Field(i).Interface()
		if d, ok := f.(time.Duration); ok {
			f = d.String()
		}
		for _, x := range []any{v.Type().Field(i).Name, f} {
			if err := enc.Encode(x); err != nil {
				return err
			}
			b.Truncate(b.Len() - 1) // Encode ends with a newline
			b.WriteByte(':')
		}
		b.Truncate(b.Len() - 1)
	}
	b.WriteByte('}')
	return nil
}

// logStart writes the first line of the log: the version and the options in effect.
func logStart(version string, opts Options, gcPercent int) {
	klog.InfoSDepth(1, "Starting flanneld", "version", version, "options", loggedOptions(opts.LogSafe()), "gcPercent", gcPercent)
}
