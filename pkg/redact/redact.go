// Package redact keeps credentials out of what flanneld logs and shows: the user
// information of URLs ("user:password@"), in the forms operators write them
// ("https://user:password@host:2379", "user:password@host:2379").
package redact

import "strings"

// Mask replaces a credential.
const Mask = "xxxxx"

// userinfo returns the byte range [start, end) of s's user information (without the
// '@' that ends it), or ok false when s has none. The authority starts after "://"
// (or at the start when there is no scheme) and ends at the first '/', '?' or '#';
// the user information is everything in it before its last '@'.
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

// URL returns u with its whole user information replaced by Mask
// ("https://xxxxx@host:2379"): a user name alone may be a token, so none of it is
// kept. A URL without user information is returned as it is.
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

// StripUserinfo returns u without its user information and the '@' after it
// ("https://host:2379"), and whether it had any.
func StripUserinfo(u string) (string, bool) {
	start, end, ok := userinfo(u)
	if !ok {
		return u, false
	}
	return u[:start] + u[end+1:], true
}
