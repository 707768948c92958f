// Package identity finds who "the user" of a request is, for per-user buckets:
// from a verified JWT claim, a header a trusted layer sets, or the client
// address Envoy saw, the first source that yields a value.
package identity

import (
	"net"
	"strconv"
	"strings"

	"github.com/mcp-ratelimit/extproc/internal/config"
)

// Request is what the sources read of a request.
type Request struct {
	// Header returns a request header's first value ("" when absent); nil
	// means no headers.
	Header func(name string) string
	// SourceAddress is the client address Envoy saw ("ip:port" or "ip").
	SourceAddress string
	// JWTPayloads are the verified JWT payloads Envoy's jwt_authn forwarded.
	JWTPayloads []map[string]any
}

// Of returns the first value a source yields, prefixed by the source kind so
// that equal strings from different sources are different users; "" when no
// source yields one.
func Of(sources []config.IdentitySource, r Request) string {
	kind, v := first(sources, r)
	if v == "" {
		return ""
	}
	return kind + ":" + v
}

// Value returns the first value a source yields as it is, without the kind:
// a name to look up (a plan), not an identity to key buckets by.
func Value(sources []config.IdentitySource, r Request) string {
	_, v := first(sources, r)
	return v
}

// first returns the first value a source yields and the kind of its source.
func first(sources []config.IdentitySource, r Request) (kind, value string) {
	for _, s := range sources {
		switch {
		case s.JWTClaim != "":
			for _, payload := range r.JWTPayloads {
				if v, ok := claim(payload, s.JWTClaim); ok {
					return "jwt", v
				}
			}
		case s.Header != "":
			if r.Header == nil {
				continue
			}
			if v := strings.TrimSpace(r.Header(s.Header)); v != "" {
				return "header", v
			}
		case s.SourceAddress:
			if ip := hostOnly(r.SourceAddress); ip != "" {
				return "ip", ip
			}
		}
	}
	return "", ""
}

// claim walks a dotted path ("org.id") into a JWT payload. Only non-empty strings
// and numbers identify a user; objects, arrays and booleans do not.
func claim(payload map[string]any, path string) (string, bool) {
	var cur any = payload
	for part := range strings.SplitSeq(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return "", false
		}
		if cur, ok = m[part]; !ok {
			return "", false
		}
	}
	switch v := cur.(type) {
	case string:
		return v, v != ""
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), true
	default:
		return "", false
	}
}

// hostOnly drops the port of "ip:port" (the port changes per connection and is
// not part of who the client is).
func hostOnly(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return strings.Trim(addr, "[]")
}
