package config

import (
	"net"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	yaml "go.yaml.in/yaml/v3"

	"github.com/mcp-ratelimit/extproc/internal/route"
)

// checkServers runs the checks across servers: unique names, and no server
// hidden behind an earlier one whose match catches all of its requests (the
// first matching server applies, so the later one would never be used).
func (w *walker) checkServers(servers []serverInfo) {
	firstByName := map[string]serverInfo{}
	for i, s := range servers {
		if first, dup := firstByName[s.srv.Name]; dup {
			n, path := s.nameNode, join(s.path, "server")
			if n == nil {
				n = s.node
			}
			hint := ""
			if s.nameNode == nil || first.nameNode == nil {
				hint = "; name each server with server:"
			}
			w.addf(n, path, "duplicate server name %q (first at %s)%s", s.srv.Name, first.path, hint)
		} else {
			firstByName[s.srv.Name] = s
		}
		for _, earlier := range servers[:i] {
			if !route.Covers(earlier.srv.Match, s.srv.Match) {
				continue
			}
			n, path := s.matchNode, join(s.path, "match")
			if n == nil {
				n, path = s.node, s.path
			}
			switch {
			case earlier.srv.Match == (Match{}):
				w.addf(n, path, "unreachable: %s catches every request (no match, or only pathPrefix \"/\"); only the last server may", earlier.path)
			case route.Covers(s.srv.Match, earlier.srv.Match):
				w.addf(n, path, "same match as %s; this server would never be used", earlier.path)
			default:
				w.addf(n, path, "unreachable: %s.match catches every request this one would; put the more specific server first", earlier.path)
			}
			break
		}
	}
}

func (w *walker) match(n *yaml.Node, path string) Match {
	var m Match
	f, ok := w.fields(n, path, matchKeys, nil)
	if !ok {
		return m
	}
	if x, ok := f["authority"]; ok {
		p := join(path, "authority")
		if s, ok := w.str(x.val, p); ok {
			if msg := checkAuthority(s); msg != "" {
				w.addf(x.val, p, "%s", msg)
			} else {
				m.Authority = route.CanonicalAuthority(s)
			}
		}
	}
	if x, ok := f["pathPrefix"]; ok {
		p := join(path, "pathPrefix")
		if s, ok := w.str(x.val, p); ok {
			switch {
			case s == "":
				w.addf(x.val, p, "must not be empty; omit it to match every path")
			case !strings.HasPrefix(s, "/"):
				w.addf(x.val, p, "must start with \"/\", got %q", s)
			case strings.IndexFunc(s, func(r rune) bool { return !isPrefixChar(r) }) >= 0:
				// Anything else a client may send escaped ("/café" as
				// "/caf%C3%A9"), and requests are matched by every reading of their
				// path: such a prefix would make its own requests ambiguous.
				w.addf(x.val, p, "must hold only ASCII letters, digits, \"-\", \".\", \"_\", \"~\" and \"/\" (what clients send unescaped), got %q", s)
			case !route.ReadsOneWay(s):
				w.addf(x.val, p, "must not hold empty, \".\" or \"..\" segments (routers read them several ways), got %q", s)
			case s == "/":
				// Every path starts with "/": the same as no prefix, and
				// treated as such when later servers are checked for shadowing.
			default:
				m.PathPrefix = strings.TrimSuffix(s, "/")
			}
		}
	}
	return m
}

// checkAuthority returns why s is not a host or host:port, or "".
func checkAuthority(s string) string {
	const want = `must be a host or host:port such as "mcp.example.com" or "mcp.example.com:8443"`
	if s == "" {
		return "must not be empty; omit it to match every authority"
	}
	if strings.Contains(s, "://") || strings.ContainsAny(s, "/?#@") {
		return want + ", not a URL; got " + strconv.Quote(s)
	}
	host := s
	if h, port, err := net.SplitHostPort(s); err == nil {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || !route.IsPort(port) {
			return want + "; got " + strconv.Quote(s)
		}
		host = h
		if strings.HasPrefix(s, "[") { // [IPv6]:port
			if net.ParseIP(h) == nil || !strings.Contains(h, ":") {
				return want + "; got " + strconv.Quote(s)
			}
			return ""
		}
	} else if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		if net.ParseIP(s[1:len(s)-1]) != nil {
			return ""
		}
		return want + "; got " + strconv.Quote(s)
	}
	if strings.Contains(host, "*") {
		return want + " (wildcards are not supported); got " + strconv.Quote(s)
	}
	if host == "" || strings.IndexFunc(host, func(r rune) bool {
		return !(r == '.' || r == '-' || r == '_' || r < utf8.RuneSelf && (unicode.IsLetter(r) || unicode.IsDigit(r)))
	}) >= 0 {
		return want + "; got " + strconv.Quote(s)
	}
	return ""
}

func isSpaceOrControl(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }

// isPrefixChar reports whether r may appear in a pathPrefix: RFC 3986's
// unreserved characters and "/".
func isPrefixChar(r rune) bool {
	return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune("-._~/", r)
}
