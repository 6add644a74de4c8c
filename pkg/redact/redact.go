// Package redact keeps the user information of URLs ("user:password@") out of what
// flanneld logs and shows.
package redact

import "strings"

// Mask replaces a credential.
const Mask = "xxxxx"

// userinfo locates s's user information, without its '@', as [start, end).
func userinfo(s string) (start, end int, ok bool) {
	if i := strings.Index(s, "://"); i >= 0 {
		start = i + len("://")
	}
	auth := s[start:]
	if i := strings.IndexAny(auth, "/?#"); i >= 0 {
		auth = auth[:i]
	}
	at := strings.LastIndexByte(auth, '@')
	if at < 0 {
		return 0, 0, false
	}
	return start, start + at, true
}

// URL replaces u's whole user information with Mask: a user name alone may be a token.
func URL(u string) string {
	start, end, ok := userinfo(u)
	if !ok {
		return u
	}
	return u[:start] + Mask + u[end:]
}

// URLs applies URL to each element, in a new slice.
func URLs(us []string) []string {
	if us == nil {
		return nil
	}
	out := make([]string, len(us))
	for i, u := range us {
		out[i] = URL(u)
	}
	return out
}

// StripUserinfo returns u without its user information and '@', and whether it had any.
func StripUserinfo(u string) (string, bool) {
	start, end, ok := userinfo(u)
	if !ok {
		return u, false
	}
	return u[:start] + u[end+1:], true
}
