package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"time"

	"k8s.io/klog/v2"
)

// MarshalLog implements logr.Marshaler: Options log as LogSafe returns them, durations as "1h0m0s".
func (o Options) MarshalLog() any { return loggedOptions(o.LogSafe()) }

// loggedOptions are Options as logged: encoding/json's object, but durations as String().
type loggedOptions Options

// MarshalJSON implements json.Marshaler.
func (o loggedOptions) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	if err := o.encode(&b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// WriteText writes the JSON unescaped (klog's JSON path would escape "<redacted>").
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
