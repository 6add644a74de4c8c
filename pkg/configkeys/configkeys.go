// Package configkeys decodes the network config's JSON objects key by key, matching keys as
// encoding/json does, but reports every problem at once in the config's words and warns of
// unknown keys with the known key each probably misspells.
package configkeys

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Field is one key an object knows.
type Field struct {
	Name string // the canonical spelling
	// Into is *string, *int, **int, *bool, **bool (null sets those to nil) or *json.RawMessage.
	Into    any
	Ignored string // if set, the key is accepted undecoded with this reason in its warning
}

// Object describes one JSON object of the config.
type Object struct {
	Path   string // "" top level, "Backend"; prefixes warning keys
	Prefix string // starts every problem's message
	Fields []Field
}

// Warning is a key that has no effect: unknown, ignored, or repeated.
type Warning struct {
	Key     string // the key's path as written
	Suggest string // what an unknown key probably misspells, or ""
	Ignored string // Field.Ignored of an ignored key
	Repeats string // the earlier spelling of a repeated key; the last counts
}

// String says what is wrong with the key.
func (w Warning) String() string {
	switch {
	case w.Repeats != "":
		return fmt.Sprintf("key %q repeats %q; the last one counts", w.Key, w.Repeats)
	case w.Ignored != "":
		return fmt.Sprintf("key %q ignored: %s", w.Key, w.Ignored)
	case w.Suggest != "":
		return fmt.Sprintf("unknown key %q (did you mean %q?)", w.Key, w.Suggest)
	}
	return fmt.Sprintf("unknown key %q", w.Key)
}

// Decode reads one JSON object into the fields and returns the warnings in key order and
// every problem joined; a wrongly typed value leaves its field as it was.
func (o Object) Decode(data []byte) ([]Warning, error) {
	name := o.Path
	if name == "" {
		name = "network config"
	}
	notJSON := func(err error) error {
		// The stream decoder misplaces syntax errors after the first value.
		var v json.RawMessage
		if uerr := json.Unmarshal(data, &v); uerr != nil {
			err = uerr
		}
		return &unreadable{fmt.Errorf("%sinvalid %s JSON: %s", o.Prefix, name, syntaxText(err, data))}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // a top-level number too large for a float64 is no error of ours
	tok, err := dec.Token()
	if err != nil {
		return nil, notJSON(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		if o.Path == "" {
			name = "the network config"
		}
		return nil, &unreadable{fmt.Errorf("%s%s must be a JSON object, not %s", o.Prefix, name, describe(data))}
	}
	var warns []Warning
	var errs []error
	seen := make(map[int]string) // field index -> spelling of its first occurrence
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, notJSON(err)
		}
		key := tok.(string) // inside an object the decoder returns keys as strings
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, notJSON(err)
		}
		i := o.field(key)
		if i < 0 {
			warns = append(warns, Warning{Key: o.path(key), Suggest: Suggest(key, o.names())})
			continue
		}
		f := o.Fields[i]
		if first, dup := seen[i]; dup {
			warns = append(warns, Warning{Key: o.path(key), Repeats: o.path(first)})
		} else {
			seen[i] = key
			if f.Ignored != "" {
				warns = append(warns, Warning{Key: o.path(key), Ignored: f.Ignored})
			}
		}
		if f.Ignored != "" {
			continue
		}
		if err := assign(f.Into, raw); err != nil {
			errs = append(errs, &KeyError{Key: f.Name,
				msg: fmt.Sprintf("%s%s must be %s, not %s", o.Prefix, o.path(f.Name), err, describe(raw))})
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, notJSON(err)
	}
	switch _, err := dec.Token(); {
	case err == nil:
		return nil, notJSON(errors.New("text after the closing brace"))
	case err != io.EOF:
		return nil, notJSON(err)
	}
	return warns, errors.Join(errs...)
}

// KeyError is a value of the wrong type for a known key.
type KeyError struct {
	Key string
	msg string
}

func (e *KeyError) Error() string { return e.msg }

type unreadable struct{ error }

func (u *unreadable) Unwrap() error { return u.error }

// Unreadable reports whether Decode could not read the object at all.
func Unreadable(err error) bool {
	var u *unreadable
	return errors.As(err, &u)
}

func (o Object) field(key string) int {
	for i, f := range o.Fields {
		if f.Name == key {
			return i
		}
	}
	for i, f := range o.Fields {
		if strings.EqualFold(f.Name, key) {
			return i
		}
	}
	return -1
}

func (o Object) names() []string {
	out := make([]string, 0, len(o.Fields))
	for _, f := range o.Fields {
		out = append(out, f.Name)
	}
	return out
}

func (o Object) path(key string) string {
	if o.Path == "" {
		return key
	}
	return o.Path + "." + key
}

// assign decodes raw into dst; null leaves dst alone but nils pointer forms.
func assign(dst any, raw json.RawMessage) error {
	if string(raw) == "null" {
		switch p := dst.(type) {
		case **bool:
			*p = nil
		case **int:
			*p = nil
		}
		return nil
	}
	switch p := dst.(type) {
	case *json.RawMessage:
		*p = append((*p)[:0], raw...)
	case *string:
		if raw[0] != '"' {
			return errors.New("a string")
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return errors.New("a string")
		}
		*p = s
	case *bool, **bool:
		var b bool
		switch string(raw) {
		case "true":
			b = true
		case "false":
		default:
			return errors.New("a boolean (true or false)")
		}
		if q, ok := p.(*bool); ok {
			*q = b
		} else {
			*p.(**bool) = &b
		}
	case *int, **int:
		if raw[0] != '-' && (raw[0] < '0' || raw[0] > '9') {
			return errors.New("a whole number")
		}
		n, err := strconv.ParseInt(string(raw), 10, strconv.IntSize)
		if err != nil {
			if errors.Is(err, strconv.ErrRange) {
				return fmt.Errorf("a whole number between %d and %d", int64(minInt), int64(maxInt))
			}
			return errors.New("a whole number (no fraction or exponent)")
		}
		if q, ok := p.(*int); ok {
			*q = int(n)
		} else {
			v := int(n)
			*p.(**int) = &v
		}
	default:
		panic(fmt.Sprintf("configkeys: unsupported destination %T", dst))
	}
	return nil
}

const (
	maxInt = int(^uint(0) >> 1)
	minInt = -maxInt - 1
)

const maxShown = 40

func describe(raw []byte) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		var s string
		if json.Unmarshal(raw, &s) == nil {
			if r := []rune(s); len(r) > maxShown {
				s = string(r[:maxShown]) + "…"
			}
			return "the string " + strconv.Quote(s)
		}
	case 't', 'f':
		return "the boolean " + string(raw)
	case 'n':
		return "null"
	}
	s := string(raw)
	if len(s) > maxShown {
		s = s[:maxShown] + "…"
	}
	return "the number " + s
}

func syntaxText(err error, data []byte) string {
	var se *json.SyntaxError
	if errors.As(err, &se) && se.Error() == "unexpected end of JSON input" {
		return "it ends too early (a missing closing brace or quote?)"
	}
	if errors.As(err, &se) {
		line, col := position(data, se.Offset)
		return fmt.Sprintf("%s (line %d, column %d)", se.Error(), line, col)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "it ends too early (a missing closing brace or quote?)"
	}
	return err.Error()
}

// position gives the 1-based line and column of the byte at offset off-1.
func position(data []byte, off int64) (line, col int) {
	off = min(max(off, 1), int64(len(data)))
	before := data[:off]
	line = bytes.Count(before, []byte("\n")) + 1
	col = int(off) - (bytes.LastIndexByte(before, '\n') + 1)
	return line, col
}

// Suggest returns the candidate closest to s in case-insensitive edit distance, if close
// for its length; else "".
func Suggest(s string, candidates []string) string {
	best, bestD := "", -1
	ls := strings.ToLower(s)
	for _, c := range candidates {
		lc := strings.ToLower(c)
		if lc == ls {
			continue
		}
		d := distance(ls, lc)
		if d > allowed(min(len([]rune(ls)), len([]rune(lc)))) {
			continue
		}
		if bestD < 0 || d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func allowed(n int) int {
	switch {
	case n <= 4:
		return 1
	case n <= 8:
		return 2
	}
	return 3
}

// distance is the optimal string alignment distance between a and b.
func distance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev2 := make([]int, len(rb)+1)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}
