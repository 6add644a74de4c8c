package etcd

import (
	"bytes"
	"encoding/json"
	"net/netip"

	"github.com/flannel-go/flannel/subnet"
)

// decodeAttrs parses a lease value, flanneld's compact form by an exact fast path (fuzzed).
func decodeAttrs(v []byte, a *subnet.LeaseAttrs) error {
	if fastAttrs(v, a) {
		return nil
	}
	if err := json.Unmarshal(v, a); err != nil {
		return err
	}
	a.BackendType = subnet.InternBackendType(a.BackendType)
	return nil
}

// fastAttrs parses the canonical form into a, reporting false (a unspecified) otherwise.
func fastAttrs(v []byte, a *subnet.LeaseAttrs) bool {
	*a = subnet.LeaseAttrs{}
	rest, ok := bytes.CutPrefix(v, []byte(`{"PublicIP":`))
	if !ok {
		return false
	}
	s, rest, ok := plainString(rest)
	if !ok {
		return false
	}
	if len(s) > 0 {
		ip, err := netip.ParseAddr(string(s))
		if err != nil || !ip.Is4() {
			return false
		}
		if !ip.IsUnspecified() {
			a.PublicIP = ip
		}
	}
	if rest, ok = bytes.CutPrefix(rest, []byte(`,"PublicIPv6":`)); !ok {
		return false
	}
	if r, null := bytes.CutPrefix(rest, []byte("null")); null {
		rest = r
	} else {
		if s, rest, ok = plainString(rest); !ok {
			return false
		}
		if len(s) > 0 {
			ip, err := netip.ParseAddr(string(s))
			if err != nil || !ip.Is6() || ip.Is4In6() {
				return false
			}
			a.PublicIPv6 = ip
		}
	}
	if r, ok := bytes.CutPrefix(rest, []byte(`,"BackendType":`)); ok {
		if s, rest, ok = plainString(r); !ok {
			return false
		}
		a.BackendType = subnet.InternBackendType(string(s))
	}
	for _, f := range [...]struct {
		key string
		dst *json.RawMessage
	}{{`,"BackendData":`, &a.BackendData}, {`,"BackendV6Data":`, &a.BackendV6Data}} {
		r, ok := bytes.CutPrefix(rest, []byte(f.key))
		if !ok {
			continue
		}
		n := valueEnd(r)
		if n <= 0 || !json.Valid(r[:n]) {
			return false
		}
		if string(r[:n]) != "null" {
			*f.dst = append(json.RawMessage(nil), r[:n]...)
		}
		rest = r[n:]
	}
	return string(rest) == "}"
}

func plainString(b []byte) (s, rest []byte, ok bool) {
	if len(b) == 0 || b[0] != '"' {
		return nil, nil, false
	}
	for i := 1; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return b[1:i], b[i+1:], true
		case c < 0x20 || c >= 0x7f || c == '\\':
			return nil, nil, false
		}
	}
	return nil, nil, false
}

// valueEnd returns the length of the JSON value at the start of b (unvalidated), or 0.
func valueEnd(b []byte) int {
	if len(b) == 0 {
		return 0
	}
	switch b[0] {
	case '{', '[':
		depth := 0
		for i := 0; i < len(b); i++ {
			switch b[i] {
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			case '"':
				n := stringEnd(b[i:])
				if n == 0 {
					return 0
				}
				i += n - 1
			}
		}
		return 0
	case '"':
		return stringEnd(b)
	}
	for i, c := range b {
		if c == ',' || c == '}' || c == ']' {
			return i
		}
	}
	return 0
}

func stringEnd(b []byte) int {
	for i := 1; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return 0
}
