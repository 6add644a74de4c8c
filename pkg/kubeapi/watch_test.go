package kubeapi

import (
	"errors"
	"io"
	"strings"
	"testing"
)

func TestWatchDecoder(t *testing.T) {
	type want struct {
		typ    string
		object string // substring
		err    string // substring; "EOF" for io.EOF
		gone   bool
	}
	tests := []struct {
		name   string
		stream string
		want   []want
	}{
		{"events", `{"type":"ADDED","object":{"metadata":{"name":"a","resourceVersion":"5"}}}
{"type":"MODIFIED","object":{"metadata":{"name":"a"}}}{"type":"DELETED","object":{"kind":"Node"}}
 {"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"9"}}}`,
			[]want{{typ: Added, object: `"resourceVersion":"5"`}, {typ: Modified, object: `"a"`}, {typ: Deleted, object: "Node"}, {typ: Bookmark, object: `"9"`}, {err: "EOF"}}},
		{"empty", "", []want{{err: "EOF"}}},
		{"expired", `{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","status":"Failure","message":"too old resource version: 5 (10)","reason":"Expired","code":410}}`,
			[]want{{err: "too old resource version", gone: true}}},
		{"other error", `{"type":"ERROR","object":{"kind":"Status","status":"Failure","message":"internal error","reason":"InternalError","code":500}}`,
			[]want{{err: "internal error"}}},
		{"cut", `{"type":"ADDED","object":{"metadata":{"na`, []want{{err: "watch stream cut"}}},
		{"garbage", `<html>`, []want{{err: "decode watch event"}}},
		{"unknown type", `{"type":"SYNC","object":{}}`, []want{{err: `unknown watch event type "SYNC"`}}},
		{"no object", `{"type":"ADDED"}`, []want{{err: "without an object"}}},
		{"null object", `{"type":"ADDED","object":null}`, []want{{err: "without an object"}}},
		{"array object", `{"type":"ADDED","object":[1]}`, []want{{err: "without an object"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewWatchDecoder(strings.NewReader(tt.stream))
			for i, w := range tt.want {
				ev, err := d.Next()
				switch {
				case w.err == "EOF":
					if !errors.Is(err, io.EOF) {
						t.Fatalf("event %d: %v %v, want EOF", i, ev, err)
					}
				case w.err != "":
					if err == nil || !strings.Contains(err.Error(), w.err) || IsGone(err) != w.gone {
						t.Fatalf("event %d: err %v (gone %v), want %q (gone %v)", i, err, IsGone(err), w.err, w.gone)
					}
				default:
					if err != nil || ev.Type != w.typ || !strings.Contains(string(ev.Object), w.object) {
						t.Fatalf("event %d: %s %s %v, want %s with %s", i, ev.Type, ev.Object, err, w.typ, w.object)
					}
				}
			}
		})
	}
}

func FuzzWatchDecoder(f *testing.F) {
	f.Add([]byte(`{"type":"ADDED","object":{"metadata":{"name":"a"}}}{"type":"BOOKMARK","object":{}}`))
	f.Add([]byte(`{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired"}}`))
	f.Add([]byte(`{"type":"ADDED","object":`))
	f.Fuzz(func(t *testing.T, data []byte) {
		d := NewWatchDecoder(strings.NewReader(string(data)))
		for range 1000 {
			ev, err := d.Next()
			if err != nil {
				return
			}
			switch ev.Type {
			case Added, Modified, Deleted, Bookmark:
			default:
				t.Fatalf("event of type %q returned", ev.Type)
			}
			if len(ev.Object) == 0 || ev.Object[0] != '{' {
				t.Fatalf("event without an object: %s", ev.Object)
			}
		}
	})
}
