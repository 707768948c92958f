package config

import (
	"strings"
	"unicode"
	"unicode/utf8"

	yaml "go.yaml.in/yaml/v3"
)

// identity reads an identity: list of sources.
func (w *walker) identity(n *yaml.Node, path string) []IdentitySource {
	return w.sources(n, path, "; omit identity for the default (jwtClaim: sub)")
}

// sources reads a list of identity sources (identity, tenant, plans.from);
// emptyHint ends the message for an empty list.
func (w *walker) sources(n *yaml.Node, path, emptyHint string) []IdentitySource {
	items, ok := w.list(n, path)
	if !ok {
		return nil
	}
	if len(items) == 0 {
		w.addf(n, path, "must list at least one source%s", emptyHint)
		return nil
	}
	out := []IdentitySource{}
	firstBySource := map[IdentitySource]string{}
	for i, item := range items {
		p := index(path, i)
		f, ok := w.fields(item, p, identityKeys, nil)
		if !ok {
			continue
		}
		var set []string
		for j := 0; j+1 < len(item.Content); j += 2 {
			if k := item.Content[j].Value; f[k].key == item.Content[j] {
				set = append(set, k)
			}
		}
		if len(set) != 1 {
			if len(set) == 0 && len(f) == 0 && len(item.Content) == 0 {
				w.addf(item, p, "must set exactly one of jwtClaim, header, sourceAddress")
			} else if len(set) > 1 {
				w.addf(item, p, "must set exactly one of jwtClaim, header, sourceAddress; got %s (use one list item per source)", strings.Join(set, " and "))
			}
			continue
		}
		var src IdentitySource
		x := f[set[0]]
		sp := join(p, set[0])
		switch set[0] {
		case "jwtClaim":
			s, ok := w.str(x.val, sp)
			if !ok {
				continue
			}
			if s == "" || strings.IndexFunc(s, isSpaceOrControl) >= 0 || slicesContainsEmpty(strings.Split(s, ".")) {
				w.addf(x.val, sp, "must be a claim name or a dotted path such as \"sub\" or \"org.id\", got %q", s)
				continue
			}
			src.JWTClaim = s
		case "header":
			s, ok := w.str(x.val, sp)
			if !ok {
				continue
			}
			switch {
			case strings.HasPrefix(s, ":"):
				w.addf(x.val, sp, "pseudo-header %q cannot identify a user; use a request header, or sourceAddress for the client address", s)
				continue
			case !isToken(s):
				w.addf(x.val, sp, "must be an HTTP header name, got %q", s)
				continue
			}
			src.Header = strings.ToLower(s)
		case "sourceAddress":
			// Written as `sourceAddress: {}` so that options can be added later
			// without changing the shape.
			if !(isNull(x.val) || x.val.Kind == yaml.MappingNode && len(x.val.Content) == 0) {
				w.addf(x.val, sp, "must be {} (it takes no options), got %s", describe(x.val))
				continue
			}
			src.SourceAddress = true
		}
		if first, dup := firstBySource[src]; dup {
			w.addf(item, p, "duplicate identity source (first at %s)", first)
			continue
		}
		firstBySource[src] = p
		out = append(out, src)
	}
	return out
}

func slicesContainsEmpty(parts []string) bool {
	for _, p := range parts {
		if p == "" {
			return true
		}
	}
	return false
}

// isToken reports whether s is an RFC 9110 token, the syntax of a header name.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}

func (w *walker) response(n *yaml.Node, path string) responseSpec {
	var r responseSpec
	f, ok := w.fields(n, path, responseKeys, nil)
	if !ok {
		return r
	}
	if x, ok := f["errorCode"]; ok {
		if c, ok := w.errorCode(x.val, join(path, "errorCode")); ok {
			r.errorCode = &c
		}
	}
	if x, ok := f["errorCodeFor2026"]; ok {
		// An explicit null unsets a value inherited from the top-level response.
		if isNull(x.val) {
			r.errorCodeFor2026 = new(*int)
		} else if c, ok := w.errorCode(x.val, join(path, "errorCodeFor2026")); ok {
			r.errorCodeFor2026 = ptr(&c)
		}
	}
	if x, ok := f["httpStatus"]; ok {
		p := join(path, "httpStatus")
		if v, ok := w.integer(x.val, p, 200, 599); ok {
			if v != 200 && v < 400 {
				w.addf(x.val, p, "must be 200 or from 400 to 599, got %d", v)
			} else {
				r.httpStatus = ptr(int(v))
			}
		}
	}
	if x, ok := f["format"]; ok {
		if v, ok := w.enum(x.val, join(path, "format"), string(FormatJSONRPCError), string(FormatToolResult)); ok {
			r.format = ptr(Format(v))
		}
	}
	if x, ok := f["headersOnAllowed"]; ok {
		if v, ok := w.boolean(x.val, join(path, "headersOnAllowed")); ok {
			r.headersOnAllowed = &v
		}
	}
	if x, ok := f["message"]; ok {
		p := join(path, "message")
		if s, ok := w.str(x.val, p); ok {
			switch {
			case strings.TrimSpace(s) == "":
				w.addf(x.val, p, "must not be empty")
			case utf8.RuneCountInString(s) > maxMessageLen:
				w.addf(x.val, p, "must be at most %d characters, got %d", maxMessageLen, utf8.RuneCountInString(s))
			case strings.IndexFunc(s, unicode.IsControl) >= 0:
				w.addf(x.val, p, "must be one line without control characters, got %q", s)
			default:
				r.message = &s
			}
		}
	}
	return r
}

// errorCode reads a JSON-RPC error code: a 32-bit integer (what every SDK can
// hold) other than JSON-RPC's predefined codes.
func (w *walker) errorCode(n *yaml.Node, path string) (int, bool) {
	v, ok := w.integer(n, path, -1<<31, 1<<31-1)
	if !ok {
		return 0, false
	}
	if name, reserved := reservedErrorCodes[v]; reserved {
		w.addf(n, path, "%d is JSON-RPC's %q code; clients would not read it as a rate limit (the default is %d)", v, name, DefaultErrorCode)
		return 0, false
	}
	return int(v), true
}
