package config

import (
	"path"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Match selects requests by :authority and path. Empty fields match everything.
//
// A match reads a request the way the servers behind Envoy may: several MCP
// servers often share one Envoy route and one process that tells them apart by
// path, so a path spelt otherwise ("/%67ithub/mcp", "/GITHUB/mcp") that a server
// still runs as "/github/mcp" must select the same policy server, or it would
// go through unlimited. See ServerPath for the spellings.
type Match struct {
	// Authority is a host or host:port, compared case-insensitively and without
	// a trailing dot; the port is ignored unless given. Stored lower-case,
	// without the dot.
	Authority string
	// PathPrefix matches whole path segments, case-insensitively: "/github"
	// matches "/github", "/github/mcp" and "/GitHub?x", not "/github-enterprise".
	// A prefix ending in "/" matches any path that starts with it. It is written
	// as ServerPath reads a path (the parser refuses any other spelling).
	PathPrefix string
}

// Matches reports whether a request with this :authority and :path (query
// included or not) is selected by m.
func (m Match) Matches(authority, path string) bool {
	if m.Authority != "" {
		a := serverHost(authority)
		if !hasPort(m.Authority) {
			a = hostOf(a)
		}
		if a != m.Authority {
			return false
		}
	}
	if m.PathPrefix == "" {
		return true
	}
	return hasPathPrefix(ServerPath(path), m.PathPrefix)
}

// ServerPath returns the path a request reaches on the most lenient of the
// routers MCP servers are mounted on, for choosing a policy server:
//   - the query and fragment are dropped;
//   - ";" parameters are dropped from each segment, as Tomcat and Jetty do
//     (Java SDK servers);
//   - percent escapes are decoded, "%2F" included: Go's ServeMux decodes all
//     but "%2F" and serves "/%67ithub/mcp" as "/github/mcp"; Starlette (the
//     Python SDK) decodes "%2F" too;
//   - empty, "." and ".." segments are resolved: Tomcat and ASP.NET Core serve
//     "/x/../github/mcp" as "/github/mcp" (Go's ServeMux redirects to it).
//
// Letter case is kept; Match compares it folded, since Express (the TypeScript
// SDK's usual host) and ASP.NET Core route case-insensitively.
//
// A plain path, the common case, is returned as it is without allocating.
func ServerPath(p string) string {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	if !strings.ContainsAny(p, "%;") && !strings.Contains(p, "//") && !strings.Contains(p, "/.") {
		return p
	}
	p = unescape(dropParams(p))
	dir := strings.HasSuffix(p, "/")
	p = path.Clean("/" + p)
	if dir && p != "/" {
		p += "/"
	}
	return p
}

// dropParams removes each segment's ";" parameters: "/a;x/b;y" → "/a/b".
func dropParams(p string) string {
	var b strings.Builder
	for p != "" {
		i := strings.IndexByte(p, ';')
		if i < 0 {
			b.WriteString(p)
			break
		}
		b.WriteString(p[:i])
		p = p[i:]
		if j := strings.IndexByte(p, '/'); j >= 0 {
			p = p[j:]
		} else {
			p = ""
		}
	}
	return b.String()
}

// unescape decodes every valid %XX escape; an invalid one stays as it is, as
// servers that accept it read it.
func unescape(p string) string {
	if !strings.Contains(p, "%") {
		return p
	}
	b := make([]byte, 0, len(p))
	for i := 0; i < len(p); i++ {
		if p[i] == '%' && i+2 < len(p) && isHex(p[i+1]) && isHex(p[i+2]) {
			b = append(b, unhex(p[i+1])<<4|unhex(p[i+2]))
			i += 2
			continue
		}
		b = append(b, p[i])
	}
	return string(b)
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// hasPathPrefix reports whether path starts with prefix, compared with Unicode
// simple case folding, and the match ends at a segment boundary.
func hasPathPrefix(path, prefix string) bool {
	n, ok := foldPrefix(path, prefix)
	if !ok {
		return false
	}
	return n == len(path) || strings.HasSuffix(prefix, "/") || path[n] == '/'
}

// foldPrefix reports whether s starts with prefix under simple case folding,
// and how many bytes of s that start takes (folding may change a rune's
// length: "K" matches the Kelvin sign). Invalid UTF-8 in s matches nothing.
func foldPrefix(s, prefix string) (int, bool) {
	i := 0
	for _, pr := range prefix {
		if i >= len(s) {
			return 0, false
		}
		sr, size := rune(s[i]), 1
		if sr >= utf8.RuneSelf {
			if sr, size = utf8.DecodeRuneInString(s[i:]); sr == utf8.RuneError && size == 1 {
				return 0, false
			}
		}
		if sr != pr && !equalFold(sr, pr) {
			return 0, false
		}
		i += size
	}
	return i, true
}

// equalFold reports whether a and b are equal under simple case folding, as
// strings.EqualFold compares runes.
func equalFold(a, b rune) bool {
	if a < utf8.RuneSelf && b < utf8.RuneSelf {
		return 'A' <= a && a <= 'Z' && a+'a'-'A' == b || 'A' <= b && b <= 'Z' && b+'a'-'A' == a
	}
	for r := unicode.SimpleFold(a); r != a; r = unicode.SimpleFold(r) {
		if r == b {
			return true
		}
	}
	return false
}

// serverHost returns an :authority lower-cased and without a trailing dot on
// its host: "MCP.example.com.:8443" → "mcp.example.com:8443". DNS reads both
// names alike, and so does a virtual host with domains ["*"].
func serverHost(authority string) string {
	a := strings.ToLower(authority)
	host, port := a, ""
	if hasPort(a) {
		i := strings.LastIndexByte(a, ':')
		host, port = a[:i], a[i:]
	}
	if strings.HasSuffix(host, ".") && len(host) > 1 {
		return host[:len(host)-1] + port
	}
	return a
}

// hasPort reports whether a host[:port] authority has a port; "[::1]" has none.
func hasPort(authority string) bool {
	i := strings.LastIndexByte(authority, ':')
	return i >= 0 && !strings.HasSuffix(authority, "]") && (strings.HasPrefix(authority, "[") || strings.Count(authority, ":") == 1)
}

// hostOf drops the port of a host[:port] authority.
func hostOf(authority string) string {
	if !hasPort(authority) {
		return authority
	}
	return authority[:strings.LastIndexByte(authority, ':')]
}

// covers reports whether every request b matches is also matched by a.
func covers(a, b Match) bool {
	switch {
	case a.Authority == "" || a.Authority == b.Authority:
	case b.Authority != "" && !hasPort(a.Authority) && hostOf(b.Authority) == a.Authority:
	default:
		return false
	}
	return a.PathPrefix == "" || b.PathPrefix != "" && hasPathPrefix(b.PathPrefix, a.PathPrefix)
}
