package route

import (
	"iter"
	"net"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Match selects requests by :authority and path. Empty fields match everything.
//
// Several MCP servers often share one Envoy route and one process that tells
// them apart by path, and routers read the same :path differently: Go's
// ServeMux runs "/%67ithub/mcp" as "/github/mcp", Express routes "/GitHub/mcp"
// there, Tomcat drops ";v=1" and resolves "..", Starlette's Mount does neither.
// So a request is not matched by one reading of its path but by all of them
// (PathReadings, each compared exactly and case-folded), and the same goes for
// its authority (AuthorityReadings): the limiter charges the one server they
// select, and refuses a request whose readings select different servers, since
// charging any one of them could leave the server that really runs it
// uncharged.
type Match struct {
	// Authority is a host or host:port, compared with each reading of a
	// request's :authority (AuthorityReadings); without a port it ignores the
	// reading's. Stored lower-case, without a trailing dot, its port a plain
	// number.
	Authority string
	// PathPrefix matches whole path segments: "/github" matches "/github",
	// "/github/mcp" and "/github?x", not "/github-enterprise". A trailing slash
	// does not count ("/github/" is "/github"). The parser allows only
	// characters clients send as they are, in segments read one way.
	PathPrefix string
}

// PathOf returns a :path without its query and fragment.
func PathOf(p string) string {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		return p[:i]
	}
	return p
}

// MatchesAuthority reports whether m accepts one reading of an :authority
// (from AuthorityReadings). A match without a port ignores the reading's.
func (m Match) MatchesAuthority(reading string) bool {
	if m.Authority == "" || m.Authority == reading {
		return true
	}
	if _, port, _ := splitAuthority(m.Authority); port != "" {
		return false
	}
	host, _, _ := splitAuthority(reading)
	return host == m.Authority
}

// ReadableAuthority reports whether a is a host, host:port or [IPv6]:port no
// longer than any host name (maxAuthority). Routers read anything else in
// ways that cannot be told: Express cuts "a.com:1:2" at its first colon,
// Envoy's virtual hosts compare all of it.
func ReadableAuthority(a string) bool {
	_, _, ok := splitAuthority(a)
	return ok
}

// AuthorityReadings yields each distinct way a router may read the :authority
// a, which ReadableAuthority accepts (it yields nothing for another). Every
// combination of:
//   - letter case as sent (Go's ServeMux host patterns), or lower-cased (Envoy's
//     virtual hosts, Express);
//   - a trailing dot on the host kept (Envoy's domains, Starlette's Host), or
//     dropped (DNS, Envoy with strip_trailing_host_dot).
//
// The port stays as sent. A lower-case host without a trailing dot has only
// itself, yielded without allocating.
func AuthorityReadings(a string) iter.Seq[string] {
	return func(yield func(string) bool) {
		host, port, ok := splitAuthority(a)
		if !ok {
			return
		}
		if !strings.HasSuffix(host, ".") && !hasUpper(host) {
			yield(a)
			return
		}
		if port != "" {
			port = ":" + port
		}
		var seen [4]string
		n := 0
		for _, h := range [2]string{host, strings.ToLower(host)} {
			for _, dot := range [2]bool{false, true} {
				if dot && (!strings.HasSuffix(h, ".") || len(h) == 1) {
					continue
				}
				r := h
				if dot {
					r = h[:len(h)-1]
				}
				r += port
				if slices.Contains(seen[:n], r) {
					continue
				}
				seen[n] = r
				n++
				if !yield(r) {
					return
				}
			}
		}
	}
}

// maxAuthority is the longest authority read: a DNS name (253) with its
// trailing dot, and a port. Envoy lets through 60 KiB; reading that several
// ways would cost more than the call.
const maxAuthority = 253 + len(".") + len(":65535")

// splitAuthority splits a host, host:port or [IPv6]:port authority; ok is
// false for anything else, such as a name in brackets, a second colon outside
// brackets, an empty
// port or one that is not a number up to 65535 (Envoy's strip_any_host_port
// keeps those, Go reads them as no port), or more than maxAuthority bytes.
func splitAuthority(a string) (host, port string, ok bool) {
	if len(a) > maxAuthority {
		return "", "", false
	}
	if strings.HasPrefix(a, "[") {
		i := strings.IndexByte(a, ']')
		if i < 0 {
			return "", "", false
		}
		host, rest := a[:i+1], a[i+1:]
		// Only an IPv6 address: Go's net.SplitHostPort takes the brackets off
		// "[mcp.example.com]:443", and its ServeMux routes it as that name.
		if ip := net.ParseIP(host[1:i]); ip == nil || !strings.Contains(host, ":") {
			return "", "", false
		}
		if rest == "" {
			return host, "", true
		}
		if rest[0] != ':' || !IsPort(rest[1:]) {
			return "", "", false
		}
		return host, rest[1:], true
	}
	host, port, hasPort := strings.Cut(a, ":")
	if strings.ContainsAny(host, "[]") || hasPort && !IsPort(port) {
		return "", "", false
	}
	return host, port, true
}

// IsPort reports whether p is a port number: digits only, up to 65535.
func IsPort(p string) bool {
	if p == "" || p[0] == '+' {
		return false
	}
	_, err := strconv.ParseUint(p, 10, 16)
	return err == nil
}

// canonicalPort writes a port as a plain number: "0443" → "443".
func canonicalPort(p string) string {
	if n, err := strconv.ParseUint(p, 10, 16); err == nil {
		return strconv.FormatUint(n, 10)
	}
	return p
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}

// MatchesPath reports whether m accepts one reading of a path (from
// PathReadings), compared exactly or with case folded. A prefix's trailing
// slash does not count: Express, routing non-strictly, runs "/jira" on a
// "/jira/" mount.
func (m Match) MatchesPath(reading string, fold bool) bool {
	prefix := m.PathPrefix
	if prefix == "" || prefix == "/" && strings.HasPrefix(reading, "/") {
		return true
	}
	prefix = strings.TrimSuffix(prefix, "/")
	n := len(prefix)
	if !fold {
		if !strings.HasPrefix(reading, prefix) {
			return false
		}
	} else {
		var ok bool
		if n, ok = foldPrefix(reading, prefix); !ok {
			return false
		}
	}
	return n == len(reading) || reading[n] == '/'
}

// MaxReadPath bounds the paths whose readings are worked out: a longer one
// with anything in it to read several ways is refused (UnreadablePath), so a
// path of Envoy's largest header size costs no more than a short one.
const MaxReadPath = 4096

// UnreadablePath reports whether a :path is one the limiter will not guess
// about where servers are told apart by path: one with a control character,
// sent raw or escaped (Starlette's Route runs "/github%0A" as "/github", since
// Python's "$" matches before a final newline; no reading would), or one
// longer than MaxReadPath with anything to read several ways.
func UnreadablePath(p string) bool {
	p = PathOf(p)
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c < 0x20 || c == 0x7f {
			return true
		}
		if c == '%' && i+2 < len(p) && isHex(p[i+1]) && isHex(p[i+2]) {
			if d := unhex(p[i+1])<<4 | unhex(p[i+2]); d < 0x20 || d == 0x7f {
				return true
			}
		}
	}
	return len(p) > MaxReadPath && !plainPath(p)
}

// plainPath reports whether every router reads p as it is.
func plainPath(p string) bool {
	return !strings.ContainsAny(p, "%;\\") && !strings.Contains(p, "//") && !strings.Contains(p, "/.")
}

// PathReadings yields each distinct way a server router may read the :path p,
// the query and fragment dropped; the first is p as sent. Every combination of:
//   - ";" parameters of each segment kept, or dropped as Tomcat and Jetty do;
//   - "\" kept, or read as "/" as WHATWG URL parsers do (Hono, on which the
//     TypeScript SDK can run), "%5C" too as Tomcat does with allowBackslash;
//   - percent escapes kept (Express), decoded but for "%2F" (Go's ServeMux,
//     ASP.NET Core), or all decoded (Starlette);
//   - dot segments kept (Starlette, Express), removed as RFC 3986 and WHATWG do,
//     or removed with empty segments too (Go's ServeMux, which redirects there).
//
// Combinations that cannot differ are skipped. A path with none of "%", ";",
// "\", "//" or "/." has only itself: the common case yields it without
// allocating.
func PathReadings(p string) iter.Seq[string] {
	return func(yield func(string) bool) {
		p := PathOf(p)
		if plainPath(p) {
			yield(p)
			return
		}
		seen := make(map[string]bool, 8)
		for _, params := range [2]bool{false, true} {
			if params && !strings.Contains(p, ";") {
				continue
			}
			q := p
			if params {
				q = dropParams(q)
			}
			for _, backslash := range [2]bool{false, true} {
				if backslash && !strings.Contains(q, "\\") && !containsFold(q, "%5c") {
					continue
				}
				r := q
				if backslash {
					r = replaceBackslashes(r)
				}
				for _, dec := range [3]decoding{decodeNone, decodeButSlash, decodeAll} {
					if dec == decodeButSlash && !strings.Contains(r, "%") || dec == decodeAll && !containsFold(r, "%2f") {
						continue
					}
					d := unescape(r, dec)
					for _, dots := range [3]dotting{dotsKept, dotsRemoved, dotsCleaned} {
						if dots == dotsRemoved && !strings.Contains(d, "/.") || dots == dotsCleaned && !strings.Contains(d, "/.") && !strings.Contains(d, "//") {
							continue
						}
						out := resolve(d, dots)
						if seen[out] {
							continue
						}
						seen[out] = true
						if !yield(out) {
							return
						}
					}
				}
			}
		}
	}
}

// containsFold reports whether s contains the ASCII lower-case escape esc
// ("%2f") in any letter case.
func containsFold(s, esc string) bool {
	for i := strings.IndexByte(s, '%'); i >= 0 && i+len(esc) <= len(s); {
		if strings.EqualFold(s[i:i+len(esc)], esc) {
			return true
		}
		j := strings.IndexByte(s[i+1:], '%')
		if j < 0 {
			break
		}
		i += 1 + j
	}
	return false
}

// replaceBackslashes reads "\", "%5C" and "%5c" as "/".
func replaceBackslashes(p string) string {
	p = strings.ReplaceAll(p, "\\", "/")
	return strings.ReplaceAll(strings.ReplaceAll(p, "%5C", "/"), "%5c", "/")
}

type decoding int

const (
	decodeNone decoding = iota
	decodeButSlash
	decodeAll
)

type dotting int

const (
	dotsKept dotting = iota
	dotsRemoved
	dotsCleaned
)

// resolve applies a dotting to a path. A path that ends in a dot segment keeps
// a trailing slash, as RFC 3986's remove_dot_segments leaves one ("/a/." is
// "/a/").
func resolve(p string, dots dotting) string {
	if dots == dotsKept {
		return p
	}
	segs := strings.Split(strings.TrimPrefix(p, "/"), "/")
	out := segs[:0]
	for i, s := range segs {
		last := i == len(segs)-1
		switch {
		case s == "." || s == "..":
			if s == ".." && len(out) > 0 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "")
			}
		case s == "" && dots == dotsCleaned && !last:
			// An empty segment: "//" is "/" to path.Clean.
		default:
			out = append(out, s)
		}
	}
	return "/" + strings.Join(out, "/")
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

// unescape decodes valid %XX escapes (all, or all but "%2F"); an invalid one
// stays as it is, as servers that accept it read it.
func unescape(p string, dec decoding) string {
	if dec == decodeNone || !strings.Contains(p, "%") {
		return p
	}
	b := make([]byte, 0, len(p))
	for i := 0; i < len(p); i++ {
		if p[i] == '%' && i+2 < len(p) && isHex(p[i+1]) && isHex(p[i+2]) {
			c := unhex(p[i+1])<<4 | unhex(p[i+2])
			if c != '/' || dec == decodeAll {
				b = append(b, c)
				i += 2
				continue
			}
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
// strings.EqualFold compares runes, or by their lower or upper case, as Java's
// equalsIgnoreCase does (Spring with case-insensitive patterns reads "İ" and
// "ı" as "i", which folding does not).
func equalFold(a, b rune) bool {
	if a < utf8.RuneSelf && b < utf8.RuneSelf {
		return 'A' <= a && a <= 'Z' && a+'a'-'A' == b || 'A' <= b && b <= 'Z' && b+'a'-'A' == a
	}
	for r := unicode.SimpleFold(a); r != a; r = unicode.SimpleFold(r) {
		if r == b {
			return true
		}
	}
	return unicode.ToLower(a) == unicode.ToLower(b) || unicode.ToUpper(a) == unicode.ToUpper(b)
}

// CanonicalAuthority returns a policy's authority as it is compared with
// readings: lower-case, without a trailing dot on the host, the port a plain
// number. checkAuthority has accepted it.
func CanonicalAuthority(a string) string {
	host, port, ok := splitAuthority(strings.ToLower(a))
	if !ok {
		return strings.ToLower(a)
	}
	if strings.HasSuffix(host, ".") && len(host) > 1 {
		host = host[:len(host)-1]
	}
	if port == "" {
		return host
	}
	return host + ":" + canonicalPort(port)
}

// Covers reports whether every request b matches is also matched by a: a
// match without a port covers the same host with any port.
func Covers(a, b Match) bool {
	if a.Authority != "" && !a.MatchesAuthority(b.Authority) {
		return false
	}
	return a.PathPrefix == "" || b.PathPrefix != "" && a.MatchesPath(b.PathPrefix, true)
}

// ReadsOneWay reports whether every router reads path p as p itself, as a
// pathPrefix must be written.
func ReadsOneWay(p string) bool {
	for r := range PathReadings(p) {
		if r != p {
			return false
		}
	}
	return true
}
