package config

import (
	"bytes"
	"errors"
	"io"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	yaml "go.yaml.in/yaml/v3"
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

	// MaxBucketsPerSlot bounds a slot's list of buckets: each is one more key
	// charged by every call, and a handful of windows (a minute, an hour, a
	// day, a month) is all a policy needs.
	MaxBucketsPerSlot = 8

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
	responseKeys = []string{"errorCode", "errorCodeFor2026", "httpStatus", "format", "message", "headersOnAllowed"}
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
	headersOnAllowed *bool
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
		ErrorCode:        *cmpOr(r.errorCode, defaults.response.errorCode, ptr(DefaultErrorCode)),
		HTTPStatus:       *cmpOr(r.httpStatus, defaults.response.httpStatus, ptr(DefaultHTTPStatus)),
		Format:           *cmpOr(r.format, defaults.response.format, ptr(FormatJSONRPCError)),
		Message:          *cmpOr(r.message, defaults.response.message, ptr(DefaultMessage)),
		HeadersOnAllowed: *cmpOr(r.headersOnAllowed, defaults.response.headersOnAllowed, ptr(true)),
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

// limitBucket is a parsed bucket and where it was written, for messages that
// name it. MaxTokens is 0 when the bucket was invalid.
type limitBucket struct {
	b    Bucket
	path string
}

// slot is a bucket slot as parsed: nil when absent, and non-nil (possibly
// empty) when present, even if invalid, so that "limits nothing" is not
// reported on top of its own problems.
type slot []limitBucket

// buckets returns the slot's buckets for the policy; nil when absent.
func (s slot) buckets() []Bucket {
	if s == nil {
		return nil
	}
	out := make([]Bucket, len(s))
	for i, lb := range s {
		out[i] = lb.b
	}
	return out
}

// rateLimiting reads a rateLimiting block into s.
func (w *walker) rateLimiting(n *yaml.Node, path string, s *Server) {
	f, ok := w.fields(n, path, rlKeys, nil)
	if !ok {
		return
	}
	shared := w.optBuckets(f, "shared", path)
	perUser := w.optBuckets(f, "perUser", path)
	s.Shared, s.PerUser = shared.buckets(), perUser.buckets()
	anyBucket := shared != nil || perUser != nil

	type entry struct {
		node, costNode  *yaml.Node
		path            string
		cost            int64
		shared, perUser slot
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
			e.shared = w.optBuckets(ef, "shared", p)
			e.perUser = w.optBuckets(ef, "perUser", p)
			anyBucket = anyBucket || e.shared != nil || e.perUser != nil
			out = append(out, e)
			if key == "tools" {
				if s.Tools == nil {
					s.Tools = map[string]Tool{}
				}
				s.Tools[name] = Tool{Name: name, Cost: e.cost, Shared: e.shared.buckets(), PerUser: e.perUser.buckets()}
			} else {
				if s.Methods == nil {
					s.Methods = map[string]Method{}
				}
				s.Methods[name] = Method{Name: name, Cost: e.cost, Shared: e.shared.buckets(), PerUser: e.perUser.buckets()}
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
	checkCost := func(e entry, what string, slots ...slot) {
		for _, s := range slots {
			for _, b := range s {
				if b.b.MaxTokens > 0 && e.cost > b.b.MaxTokens {
					w.addf(e.costNode, join(e.path, "cost"), "cost %d exceeds %s.maxTokens %d: the %s could never be called", e.cost, b.path, b.b.MaxTokens, what)
				}
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

// optBuckets reads the slot f[key] if present: one bucket (a map) or a list
// of 1..MaxBucketsPerSlot buckets. It returns non-nil whenever the key is
// present, even if invalid (see slot).
func (w *walker) optBuckets(f map[string]field, key, parent string) slot {
	x, ok := f[key]
	if !ok {
		return nil
	}
	path := join(parent, key)
	if x.val.Kind != yaml.SequenceNode {
		return slot{w.bucket(x.val, path)}
	}
	items, _ := w.list(x.val, path)
	s := make(slot, 0, len(items))
	switch {
	case len(items) == 0:
		w.addf(x.val, path, "must be a bucket or a list of 1 to %d buckets, got an empty list", MaxBucketsPerSlot)
		return s
	case len(items) > MaxBucketsPerSlot:
		w.addf(x.val, path, "must list at most %d buckets, got %d", MaxBucketsPerSlot, len(items))
	}
	first := map[time.Duration]int{} // refillPeriod -> index of its first bucket
	for i, item := range items {
		lb := w.bucket(item, index(path, i))
		// Two windows of one length: the smaller maxTokens always binds first,
		// so the other bucket only costs a key; say which to keep.
		if p := lb.b.RefillPeriod; p > 0 {
			if j, dup := first[p]; dup {
				keep := min(s[j].b.MaxTokens, lb.b.MaxTokens)
				w.addf(item, lb.path, "same refillPeriod %s as %s: the bucket with the smaller maxTokens (%d) always binds first, so the other never does; keep one", p, s[j].path, keep)
			} else {
				first[p] = i
			}
		}
		s = append(s, lb)
	}
	return s
}

// bucket reads one bucket at path. MaxTokens is kept even when the bucket is
// otherwise invalid, so that costs are still checked.
func (w *walker) bucket(n *yaml.Node, path string) limitBucket {
	lb := limitBucket{path: path}
	bf, ok := w.fields(n, path, bucketKeys, nil)
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
		w.missing(n, path, "maxTokens", "a bucket needs maxTokens and refillPeriod")
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
		w.missing(n, path, "refillPeriod", "a bucket needs maxTokens and refillPeriod")
	}
	if !hasMax || !hasPeriod {
		return lb
	}
	// The store's clock ticks in microseconds: a faster refill cannot be exact.
	if period < time.Duration(max)*time.Microsecond {
		w.addf(n, path, "rate too high: at most one token per microsecond (maxTokens %d over refillPeriod %s)", max, rp.val.Value)
		return lb
	}
	lb.b = Bucket{MaxTokens: max, RefillPeriod: period}
	return lb
}
