package subnet

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
)

// ConfigChange is a key whose value differs between two versions of the network config.
type ConfigChange struct {
	// Key is the path ("SubnetLen", "Backend.Type"); "" when either version is no JSON object.
	Key string
	// Old and New are the values as compact JSON; "" when the key is absent.
	Old, New string
}

// String renders `Backend.Type: vxlan -> host-gw`, "(absent)" standing for a missing key.
func (c ConfigChange) String() string {
	o, n := show(c.Old, false), show(c.New, false)
	if o == n {
		o, n = show(c.Old, true), show(c.New, true)
	}
	key := c.Key
	if key == "" {
		key = "the config"
	}
	return key + ": " + o + " -> " + n
}

const maxShownValue = 60

func show(v string, quoted bool) string {
	if v == "" {
		return "(absent)"
	}
	if !quoted && strings.HasPrefix(v, `"`) {
		if s, err := strconv.Unquote(v); err == nil && s != "" {
			v = s
		}
	}
	if r := []rune(v); len(r) > maxShownValue {
		v = string(r[:maxShownValue]) + "…"
	}
	return v
}

// ChangedKeys compares two config texts by top-level and Backend key, sorted. Keys match in
// any case and take their known spelling; a text that is no JSON object compares whole.
func ChangedKeys(old, new string) []ConfigChange {
	om, okO := keyValues(old)
	nm, okN := keyValues(new)
	if !okO || !okN {
		o, n := compact(old), compact(new)
		if o == n {
			return nil
		}
		return []ConfigChange{{Old: o, New: n}}
	}
	var out []ConfigChange
	diff := func(prefix string, om, nm map[string]keyValue) {
		for k, nv := range nm {
			if ov, ok := om[k]; !ok || ov.value != nv.value {
				out = append(out, ConfigChange{Key: prefix + nv.name, Old: ov.value, New: nv.value})
			}
		}
		for k, ov := range om {
			if _, ok := nm[k]; !ok {
				out = append(out, ConfigChange{Key: prefix + ov.name, Old: ov.value})
			}
		}
	}
	ob, nb := om["backend"], nm["backend"]
	obm, okOB := keyValues(ob.value)
	nbm, okNB := keyValues(nb.value)
	if okOB && okNB {
		delete(om, "backend")
		delete(nm, "backend")
		diff("Backend.", obm, nbm)
	}
	diff("", om, nm)
	slices.SortFunc(out, func(a, b ConfigChange) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// keyValue is one key of an object: its name (known spelling, else as written) and value.
type keyValue struct{ name, value string }

func canonicalKey(k string) string {
	for _, f := range new(rawConfig).object().Fields {
		if strings.EqualFold(f.Name, k) {
			return f.Name
		}
	}
	return k
}

// keyValues reads a JSON object's keys by lower-cased name (the last wins, as in decoding);
// ok is false for anything but an object. An absent Backend ("") is an empty object.
func keyValues(text string) (map[string]keyValue, bool) {
	if strings.TrimSpace(text) == "" {
		return map[string]keyValue{}, true
	}
	if !json.Valid([]byte(text)) {
		return nil, false
	}
	out := make(map[string]keyValue)
	dec := json.NewDecoder(strings.NewReader(text))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, false
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, false
		}
		k := tok.(string)
		out[strings.ToLower(k)] = keyValue{name: canonicalKey(k), value: compact(string(raw))}
	}
	return out, true
}

// compact is text as compact JSON, or trimmed when it is not JSON.
func compact(text string) string {
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(text)); err != nil {
		return strings.TrimSpace(text)
	}
	return b.String()
}
