package config

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
	yaml "go.yaml.in/yaml/v3"

	"github.com/mcp-ratelimit/extproc/internal/route"
)

// Limits and defaults of the policy file.
const (
	// MaxFileSize bounds the policy file: a Kubernetes ConfigMap holds at most 1 MiB,
	// so anything larger is a mistake (a wrong path, a binary).
	MaxFileSize = 1 << 20

	DefaultServerName   = "default"
	DefaultErrorCode    = -32029
	DefaultHTTPStatus   = 429
	DefaultMessage      = "Rate limit exceeded"
	DefaultRedisTimeout = 50 * time.Millisecond

	// MaxTokensLimit bounds maxTokens and cost: far above any sane burst, and small
	// enough that maxTokens × 1µs (the finest rate) cannot overflow.
	MaxTokensLimit = 1_000_000_000
	// MinRefillPeriod and MaxRefillPeriod are the periods the policy promises to
	// honour exactly: 1 ms to 31 days.
	MinRefillPeriod = time.Millisecond
	MaxRefillPeriod = 31 * 24 * time.Hour

	maxNameLen    = 128 // tool and method names (MCP recommends 1-128 characters)
	maxMessageLen = 200 // response.message, in characters
)

// serverNameRE: the server name goes inside a Redis Cluster hash tag
// (mcprl:v1:{<server>}:...), so braces, colons and spaces are out; the length
// keeps keys short.
var serverNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

var (
	topKeys      = []string{"server", "rateLimiting", "identity", "response", "failureMode", "dryRun", "unreadableBody", "requestCompression", "redis", "servers"}
	serverKeys   = []string{"server", "match", "rateLimiting", "identity", "response", "failureMode", "dryRun", "unreadableBody", "requestCompression"}
	serverHints  = map[string]string{"name": `unknown field: a server's name goes in "server"`, "redis": "redis is only allowed at the top level: one store serves every server", "servers": "servers cannot be nested"}
	rlKeys       = []string{"shared", "perUser", "tools", "methods"}
	toolKeys     = []string{"name", "cost", "shared", "perUser"}
	bucketKeys   = []string{"maxTokens", "refillPeriod"}
	matchKeys    = []string{"authority", "pathPrefix"}
	identityKeys = []string{"jwtClaim", "header", "sourceAddress"}
	responseKeys = []string{"errorCode", "errorCodeFor2026", "httpStatus", "format", "message"}
	redisKeys    = []string{"url", "username", "password", "timeout", "sentinel", "cluster", "tls"}
	sentinelKeys = []string{"masterName", "addrs", "username", "password"}
	clusterKeys  = []string{"addrs"}
	tlsKeys      = []string{"caFile", "certFile", "keyFile", "serverName", "insecureSkipVerify"}
)

// reservedErrorCodes are JSON-RPC's predefined codes: a client seeing one would
// take the rejection for a protocol error, not a rate limit.
var reservedErrorCodes = map[int64]string{
	-32700: "Parse error",
	-32600: "Invalid Request",
	-32601: "Method not found",
	-32602: "Invalid params",
	-32603: "Internal error",
}

// parse walks the whole file; the caller returns w.err() if anything was recorded.
func (w *walker) parse(data []byte) *Policy {
	root := w.document(data)
	if root == nil {
		return nil
	}
	return w.policy(root)
}

// document decodes exactly one YAML document and returns its root node, or nil.
func (w *walker) document(data []byte) *yaml.Node {
	if len(data) > MaxFileSize {
		w.add(0, 0, "", "policy file is larger than %d bytes (the size limit of a Kubernetes ConfigMap)", MaxFileSize)
		return nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			w.add(0, 0, "", "policy file is empty")
		} else {
			w.add(0, 0, "", "invalid YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
		}
		return nil
	}
	for {
		var next yaml.Node
		err := dec.Decode(&next)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			w.add(0, 0, "", "invalid YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
			return nil
		}
		// A trailing "---" with nothing after it is harmless; a second policy is
		// not, since one of the two would be silently ignored.
		if len(next.Content) > 0 && !isNull(next.Content[0]) {
			w.add(next.Line, next.Column, "", "a policy file holds one YAML document; found a second one")
			return nil
		}
	}
	if len(doc.Content) == 0 || isNull(deref(doc.Content[0])) {
		w.add(0, 0, "", "policy file is empty")
		return nil
	}
	return deref(doc.Content[0])
}

// common holds the fields that, in the servers form, may be set at the top level
// as defaults for every server. Nil pointers are unset.
type common struct {
	identity    []IdentitySource // nil: unset
	response    responseSpec
	failureMode *FailureMode
	dryRun      *bool
	// unreadableBody, compression: nil when unset.
	unreadableBody *UnreadableBody
	compression    **Compression
}

// responseSpec is a response block as written; merged field by field.
type responseSpec struct {
	errorCode        *int
	errorCodeFor2026 **int // non-nil: set (to nil by an explicit null, which unsets an inherited value)
	httpStatus       *int
	format           *Format
	message          *string
}

// serverInfo is a parsed server plus what the cross-server checks need.
type serverInfo struct {
	srv       Server
	path      string     // "" in the single-server form, "servers[i]" otherwise
	node      *yaml.Node // the server's map
	nameNode  *yaml.Node // nil when the name defaulted
	matchNode *yaml.Node // nil when match is absent
}

func (w *walker) policy(root *yaml.Node) *Policy {
	f, ok := w.fields(root, "", topKeys, nil)
	if !ok {
		return nil
	}
	p := &Policy{Redis: Redis{Timeout: DefaultRedisTimeout}}
	if r, ok := f["redis"]; ok {
		p.Redis = w.redis(r.val, "redis")
	}

	var servers []serverInfo
	if list, ok := f["servers"]; ok {
		for _, k := range []string{"server", "rateLimiting"} {
			if x, ok := f[k]; ok {
				w.addf(x.key, k, "cannot be used together with servers (line %d); move it into a servers entry", list.key.Line)
			}
		}
		// The top-level identity, response, failureMode and dryRun are defaults
		// here; in the single-server form they are the server's own.
		defaults := w.common(f, "")
		items, ok := w.list(list.val, "servers")
		if ok && len(items) == 0 {
			w.addf(list.val, "servers", "must list at least one server")
		}
		for i, item := range items {
			path := index("servers", i)
			sf, ok := w.fields(item, path, serverKeys, serverHints)
			if !ok {
				continue
			}
			servers = append(servers, w.server(sf, item, path, defaults))
		}
	} else {
		servers = append(servers, w.server(f, root, "", common{}))
	}
	w.checkServers(servers)
	for _, s := range servers {
		p.Servers = append(p.Servers, s.srv)
	}
	return p
}

// server reads one server from its fields (the top-level map in the
// single-server form) and applies the shared defaults.
func (w *walker) server(f map[string]field, node *yaml.Node, path string, defaults common) serverInfo {
	info := serverInfo{path: path, node: node, srv: Server{Name: DefaultServerName}}
	if x, ok := f["server"]; ok {
		info.nameNode = x.val
		if s, ok := w.str(x.val, join(path, "server")); ok {
			if serverNameRE.MatchString(s) {
				info.srv.Name = s
			} else {
				w.addf(x.val, join(path, "server"), "must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit (it names Redis keys and their Cluster hash tag); got %q", s)
			}
		}
	}
	if x, ok := f["match"]; ok {
		info.matchNode = x.val
		info.srv.Match = w.match(x.val, join(path, "match"))
	}
	if x, ok := f["rateLimiting"]; ok {
		w.rateLimiting(x.val, join(path, "rateLimiting"), &info.srv)
	} else {
		if path == "" {
			w.missing(node, path, "rateLimiting", "the policy must limit something (rateLimiting for one MCP server, or servers for several)")
		} else {
			w.missing(node, path, "rateLimiting", "every server needs a rateLimiting block")
		}
	}

	own := w.common(f, path)
	s := &info.srv
	switch {
	case own.identity != nil:
		s.Identity = own.identity
	case defaults.identity != nil:
		s.Identity = defaults.identity
	default:
		// ToolHive keys users by the JWT subject; so do we unless told otherwise.
		s.Identity = []IdentitySource{{JWTClaim: "sub"}}
	}
	s.FailureMode = *cmpOr(own.failureMode, defaults.failureMode, ptr(FailOpen))
	s.DryRun = *cmpOr(own.dryRun, defaults.dryRun, ptr(false))
	s.UnreadableBody = *cmpOr(own.unreadableBody, defaults.unreadableBody, ptr(UnreadableReject))
	if c := cmpOr(own.compression, defaults.compression); c != nil {
		s.Compression = *c
	}
	r := own.response
	s.Response = Response{
		ErrorCode:  *cmpOr(r.errorCode, defaults.response.errorCode, ptr(DefaultErrorCode)),
		HTTPStatus: *cmpOr(r.httpStatus, defaults.response.httpStatus, ptr(DefaultHTTPStatus)),
		Format:     *cmpOr(r.format, defaults.response.format, ptr(FormatJSONRPCError)),
		Message:    *cmpOr(r.message, defaults.response.message, ptr(DefaultMessage)),
	}
	if c := cmpOr(r.errorCodeFor2026, defaults.response.errorCodeFor2026); c != nil {
		s.Response.ErrorCodeFor2026 = *c
	}
	return info
}

// cmpOr returns the first non-nil pointer: the server's own value, else the
// top-level default, else the built-in default.
func cmpOr[T any](vals ...*T) *T {
	for _, v := range vals {
		if v != nil {
			return v
		}
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// common reads identity, response, failureMode, dryRun, unreadableBody and
// requestCompression from a map's fields.
func (w *walker) common(f map[string]field, path string) common {
	var c common
	if x, ok := f["identity"]; ok {
		c.identity = w.identity(x.val, join(path, "identity"))
	}
	if x, ok := f["response"]; ok {
		c.response = w.response(x.val, join(path, "response"))
	}
	if x, ok := f["failureMode"]; ok {
		if v, ok := w.enum(x.val, join(path, "failureMode"), string(FailOpen), string(FailClosed), string(FailLocal)); ok {
			c.failureMode = ptr(FailureMode(v))
		}
	}
	if x, ok := f["dryRun"]; ok {
		if v, ok := w.boolean(x.val, join(path, "dryRun")); ok {
			c.dryRun = &v
		}
	}
	w.bodyCommon(f, path, &c)
	return c
}

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

// limitBucket is a parsed bucket and where it was written, for messages that
// name it. MaxTokens is 0 when the bucket was invalid.
type limitBucket struct {
	b    Bucket
	path string
}

func (lb *limitBucket) bucket() *Bucket {
	if lb == nil {
		return nil
	}
	return &lb.b
}

// rateLimiting reads a rateLimiting block into s.
func (w *walker) rateLimiting(n *yaml.Node, path string, s *Server) {
	f, ok := w.fields(n, path, rlKeys, nil)
	if !ok {
		return
	}
	shared := w.optBucket(f, "shared", path)
	perUser := w.optBucket(f, "perUser", path)
	s.Shared, s.PerUser = shared.bucket(), perUser.bucket()
	anyBucket := shared != nil || perUser != nil

	type entry struct {
		node, costNode  *yaml.Node
		path            string
		cost            int64
		shared, perUser *limitBucket
	}
	readEntries := func(key, what string) []entry {
		x, ok := f[key]
		if !ok {
			return nil
		}
		listPath := join(path, key)
		items, _ := w.list(x.val, listPath)
		var out []entry
		firstByName := map[string]string{}
		for i, item := range items {
			p := index(listPath, i)
			ef, ok := w.fields(item, p, toolKeys, nil)
			if !ok {
				continue
			}
			e := entry{node: item, path: p, cost: 1}
			var name string
			if nf, ok := ef["name"]; ok {
				np := join(p, "name")
				name, ok = w.name(nf.val, np)
				if ok {
					if first, dup := firstByName[name]; dup {
						w.addf(nf.val, np, "duplicate %s %q (first at %s)", what, name, first)
					} else {
						firstByName[name] = p
					}
					if key == "methods" && name == "tools/call" {
						w.addf(nf.val, np, "tools/call is limited by %s.shared, %s.perUser and %s.tools, not methods", path, path, path)
					}
				}
			} else {
				w.missing(item, p, "name", "every %s needs a name", what)
			}
			if cf, ok := ef["cost"]; ok {
				e.costNode = cf.val
				if c, ok := w.integer(cf.val, join(p, "cost"), 1, MaxTokensLimit); ok {
					e.cost = c
				}
			}
			e.shared = w.optBucket(ef, "shared", p)
			e.perUser = w.optBucket(ef, "perUser", p)
			anyBucket = anyBucket || e.shared != nil || e.perUser != nil
			out = append(out, e)
			if key == "tools" {
				if s.Tools == nil {
					s.Tools = map[string]Tool{}
				}
				s.Tools[name] = Tool{Name: name, Cost: e.cost, Shared: e.shared.bucket(), PerUser: e.perUser.bucket()}
			} else {
				if s.Methods == nil {
					s.Methods = map[string]Method{}
				}
				s.Methods[name] = Method{Name: name, Cost: e.cost, Shared: e.shared.bucket(), PerUser: e.perUser.bucket()}
			}
		}
		return out
	}
	tools := readEntries("tools", "tool")
	methods := readEntries("methods", "method")

	if !anyBucket {
		w.addf(n, path, "limits nothing: set shared, perUser, or a tool or method with shared or perUser")
		return
	}
	// A cost above a bucket's capacity can never be paid: the call would be
	// rejected forever, which is a configuration error, not a limit.
	checkCost := func(e entry, what string, buckets ...*limitBucket) {
		for _, b := range buckets {
			if b != nil && b.b.MaxTokens > 0 && e.cost > b.b.MaxTokens {
				w.addf(e.costNode, join(e.path, "cost"), "cost %d exceeds %s.maxTokens %d: the %s could never be called", e.cost, b.path, b.b.MaxTokens, what)
			}
		}
	}
	for _, t := range tools {
		if t.shared == nil && t.perUser == nil && shared == nil && perUser == nil {
			w.addf(t.node, t.path, "limits nothing: give the tool shared or perUser, or set %s.shared or %s.perUser", path, path)
		}
		checkCost(t, "tool", shared, perUser, t.shared, t.perUser)
	}
	for _, m := range methods {
		if m.shared == nil && m.perUser == nil {
			w.addf(m.node, m.path, "limits nothing: give the method shared or perUser (%s.shared and %s.perUser apply to tools/call only)", path, path)
		}
		checkCost(m, "method", m.shared, m.perUser)
	}
}

// name reads a tool or method name: what clients send, compared exactly.
func (w *walker) name(n *yaml.Node, path string) (string, bool) {
	s, ok := w.str(n, path)
	if !ok {
		return "", false
	}
	switch {
	case s == "":
		w.addf(n, path, "must not be empty")
	case utf8.RuneCountInString(s) > maxNameLen:
		w.addf(n, path, "must be at most %d characters, got %d", maxNameLen, utf8.RuneCountInString(s))
	case strings.TrimSpace(s) != s:
		w.addf(n, path, "must not start or end with spaces, got %q", s)
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		w.addf(n, path, "must not contain control characters, got %q", s)
	case strings.ContainsRune(s, utf8.RuneError):
		// Servers turn invalid text into U+FFFD each their own way (one per
		// byte, or one per broken sequence): a client could name this tool
		// to one server and another to the limiter.
		w.addf(n, path, "must not contain U+FFFD, the replacement character: servers decode invalid text to it in different ways, got %+q", s)
	default:
		return s, true
	}
	return "", false
}

// optBucket reads f[key] as a bucket if present. It returns non-nil whenever the
// key is present, even if invalid, so that "limits nothing" is not reported on
// top of the bucket's own problems.
func (w *walker) optBucket(f map[string]field, key, parent string) *limitBucket {
	x, ok := f[key]
	if !ok {
		return nil
	}
	path := join(parent, key)
	lb := &limitBucket{path: path}
	bf, ok := w.fields(x.val, path, bucketKeys, nil)
	if !ok {
		return lb
	}
	var max int64
	var period time.Duration
	mt, hasMax := bf["maxTokens"]
	rp, hasPeriod := bf["refillPeriod"]
	if hasMax {
		max, hasMax = w.integer(mt.val, join(path, "maxTokens"), 1, MaxTokensLimit)
		// Known even if refillPeriod is not, so that costs are still checked.
		lb.b.MaxTokens = max
	} else {
		w.missing(x.val, path, "maxTokens", "a bucket needs maxTokens and refillPeriod")
	}
	if hasPeriod {
		p := join(path, "refillPeriod")
		period, hasPeriod = w.duration(rp.val, p, MinRefillPeriod, MaxRefillPeriod, "744h (31 days)")
		// Buckets count in microseconds; a finer period would be rounded.
		if hasPeriod && period%time.Microsecond != 0 {
			w.addf(rp.val, p, "must be a whole number of microseconds, got %q", rp.val.Value)
			hasPeriod = false
		}
	} else {
		w.missing(x.val, path, "refillPeriod", "a bucket needs maxTokens and refillPeriod")
	}
	if !hasMax || !hasPeriod {
		return lb
	}
	// The store's clock ticks in microseconds: a faster refill cannot be exact.
	if period < time.Duration(max)*time.Microsecond {
		w.addf(x.val, path, "rate too high: at most one token per microsecond (maxTokens %d over refillPeriod %s)", max, rp.val.Value)
		return lb
	}
	lb.b = Bucket{MaxTokens: max, RefillPeriod: period}
	return lb
}

func (w *walker) identity(n *yaml.Node, path string) []IdentitySource {
	items, ok := w.list(n, path)
	if !ok {
		return nil
	}
	if len(items) == 0 {
		w.addf(n, path, "must list at least one source; omit identity for the default (jwtClaim: sub)")
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

func (w *walker) redis(n *yaml.Node, path string) Redis {
	r := Redis{Timeout: DefaultRedisTimeout}
	f, ok := w.fields(n, path, redisKeys, nil)
	if !ok {
		return r
	}
	// url, sentinel and cluster each pick a different client; two would leave one
	// silently ignored.
	var firstTarget string
	var firstLine int
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if x, ok := f[k.Value]; !ok || x.key != k || (k.Value != "url" && k.Value != "sentinel" && k.Value != "cluster") {
			continue
		}
		if firstTarget == "" {
			firstTarget, firstLine = k.Value, k.Line
			continue
		}
		w.addf(k, join(path, k.Value), "cannot be used together with %s.%s (line %d); choose one", path, firstTarget, firstLine)
	}

	var scheme string
	var urlPassword bool
	if x, ok := f["url"]; ok {
		p := join(path, "url")
		if s, ok := w.str(x.val, p); ok {
			scheme, urlPassword, ok = w.redisURL(x.val, p, s)
			if ok {
				r.URL = s
			}
		}
	}
	if x, ok := f["username"]; ok {
		if s, ok := w.str(x.val, join(path, "username")); ok {
			r.Username = s
		}
	}
	if x, ok := f["password"]; ok {
		p := join(path, "password")
		if s, ok := w.str(x.val, p); ok {
			if urlPassword {
				w.addf(x.val, p, "the url already holds a password; set it in one place")
			} else {
				r.Password = s
			}
		}
	}
	if x, ok := f["timeout"]; ok {
		if d, ok := w.duration(x.val, join(path, "timeout"), time.Millisecond, 10*time.Second, "10s"); ok {
			r.Timeout = d
		}
	}
	if x, ok := f["sentinel"]; ok {
		p := join(path, "sentinel")
		if sf, ok := w.fields(x.val, p, sentinelKeys, nil); ok {
			s := &Sentinel{}
			if m, ok := sf["masterName"]; ok {
				if v, ok := w.str(m.val, join(p, "masterName")); ok {
					if v == "" {
						w.addf(m.val, join(p, "masterName"), "must not be empty")
					}
					s.MasterName = v
				}
			} else {
				w.missing(x.val, p, "masterName", "sentinel needs masterName and addrs")
			}
			s.Addrs = w.addrs(sf, x.val, p)
			if u, ok := sf["username"]; ok {
				if v, ok := w.str(u.val, join(p, "username")); ok {
					s.Username = v
				}
			}
			if pw, ok := sf["password"]; ok {
				if v, ok := w.str(pw.val, join(p, "password")); ok {
					s.Password = v
				}
			}
			r.Sentinel = s
		}
	}
	if x, ok := f["cluster"]; ok {
		p := join(path, "cluster")
		if cf, ok := w.fields(x.val, p, clusterKeys, nil); ok {
			r.Cluster = &Cluster{Addrs: w.addrs(cf, x.val, p)}
		}
	}
	if x, ok := f["tls"]; ok {
		p := join(path, "tls")
		if scheme == "redis" || scheme == "unix" {
			w.addf(x.key, p, "needs a rediss:// url (%s:// is plaintext)", scheme)
		}
		if tf, ok := w.fields(x.val, p, tlsKeys, nil); ok {
			t := &TLS{}
			file := func(key string, dst *string) {
				if y, ok := tf[key]; ok {
					if s, ok := w.str(y.val, join(p, key)); ok {
						if s == "" {
							w.addf(y.val, join(p, key), "must not be empty")
						}
						*dst = s
					}
				}
			}
			file("caFile", &t.CAFile)
			file("certFile", &t.CertFile)
			file("keyFile", &t.KeyFile)
			file("serverName", &t.ServerName)
			if y, ok := tf["insecureSkipVerify"]; ok {
				t.InsecureSkipVerify, _ = w.boolean(y.val, join(p, "insecureSkipVerify"))
			}
			// A client certificate is a pair: one without the other fails at the
			// first connection, long after the config was accepted.
			if _, cert := tf["certFile"]; cert != (tf["keyFile"].key != nil) {
				w.addf(x.val, p, "certFile and keyFile go together: set both or neither")
			}
			r.TLS = t
		}
	}
	return r
}

// redisURL checks a redis url. Messages never echo the url: it may hold a password.
func (w *walker) redisURL(n *yaml.Node, path, s string) (scheme string, hasPassword, ok bool) {
	u, err := url.Parse(s)
	if err != nil {
		w.addf(n, path, "is not a valid URL")
		return "", false, false
	}
	_, hasPassword = u.User.Password()
	switch u.Scheme {
	case "redis", "rediss":
		if u.Hostname() == "" {
			w.addf(n, path, "must name a host, e.g. redis://redis:6379/0")
			return u.Scheme, hasPassword, false
		}
		if p := u.Port(); p != "" {
			if v, err := strconv.Atoi(p); err != nil || v < 1 || v > 65535 {
				w.addf(n, path, "port must be from 1 to 65535, got %q", p)
				return u.Scheme, hasPassword, false
			}
		}
	case "unix":
		if u.Path == "" {
			w.addf(n, path, "must name a socket path, e.g. unix:///run/redis.sock")
			return u.Scheme, hasPassword, false
		}
	default:
		w.addf(n, path, "scheme must be redis://, rediss:// or unix://, got %q", u.Scheme)
		return u.Scheme, hasPassword, false
	}
	// Let the client library have the last word (database number, query options),
	// so that an accepted url is one the store can use.
	if _, err := redis.ParseURL(s); err != nil {
		w.addf(n, path, "%s", strings.TrimPrefix(err.Error(), "redis: "))
		return u.Scheme, hasPassword, false
	}
	return u.Scheme, hasPassword, true
}

// addrs reads a required, non-empty list of host:port addresses.
func (w *walker) addrs(f map[string]field, parent *yaml.Node, path string) []string {
	p := join(path, "addrs")
	x, ok := f["addrs"]
	if !ok {
		w.missing(parent, path, "addrs", "list at least one host:port")
		return nil
	}
	items, ok := w.list(x.val, p)
	if !ok {
		return nil
	}
	if len(items) == 0 {
		w.addf(x.val, p, "must list at least one host:port")
	}
	var out []string
	for i, item := range items {
		ip := index(p, i)
		s, ok := w.str(item, ip)
		if !ok {
			continue
		}
		host, port, err := net.SplitHostPort(s)
		v, perr := strconv.Atoi(port)
		if err != nil || host == "" || perr != nil || v < 1 || v > 65535 {
			w.addf(item, ip, "must be host:port, got %q", s)
			continue
		}
		out = append(out, s)
	}
	return out
}
