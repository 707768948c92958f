package config

import (
	"bytes"
	"errors"
	"io"
	"regexp"
	"strings"
	"time"

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
	topKeys      = []string{"server", "rateLimiting", "plans", "identity", "tenant", "response", "failureMode", "dryRun", "unreadableBody", "requestCompression", "redis", "servers"}
	serverKeys   = []string{"server", "match", "rateLimiting", "plans", "identity", "tenant", "response", "failureMode", "dryRun", "unreadableBody", "requestCompression"}
	serverHints  = map[string]string{"name": `unknown field: a server's name goes in "server"`, "redis": "redis is only allowed at the top level: one store serves every server", "servers": "servers cannot be nested"}
	rlKeys       = []string{"shared", "perUser", "perTenant", "tools", "methods"}
	toolKeys     = []string{"name", "cost", "shared", "perUser", "perTenant"}
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
	tenant      []IdentitySource // nil: unset
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
	// inheritsTenant: the server's tenant is the top-level default.
	inheritsTenant bool
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
		for _, k := range []string{"server", "rateLimiting", "plans"} {
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
		if x, ok := f["tenant"]; ok && defaults.tenant != nil {
			used := false
			for _, s := range servers {
				used = used || s.inheritsTenant && usesTenant(&s.srv)
			}
			if !used {
				w.addf(x.key, "tenant", "no server that takes this default has a perTenant bucket; add one, or remove tenant")
			}
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
	var rl *limitsBlock
	if x, ok := f["rateLimiting"]; ok {
		rl = w.rateLimiting(x.val, join(path, "rateLimiting"), &info.srv)
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
	s.Tenant = own.tenant
	if s.Tenant == nil {
		s.Tenant, info.inheritsTenant = defaults.tenant, defaults.tenant != nil
	}
	var pb *plansBlock
	if x, ok := f["plans"]; ok {
		s.Plans, pb = w.plans(x.val, join(path, "plans"))
		w.checkPlans(rl, pb, s.Plans)
	}
	w.checkLimits(rl, pb, s, len(s.Tenant) > 0)
	if x, ok := f["tenant"]; ok && own.tenant != nil && !usesTenant(s) {
		w.addf(x.key, join(path, "tenant"), "no perTenant bucket uses it; add one (rateLimiting or a plan) or remove tenant")
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

// usesTenant reports whether any perTenant bucket of s, in rateLimiting or a
// plan, needs the tenant.
func usesTenant(s *Server) bool {
	for kind, bs := range s.Slots() {
		if kind == SlotPerTenant && len(bs) > 0 {
			return true
		}
	}
	return false
}

// common reads identity, response, failureMode, dryRun, unreadableBody and
// requestCompression from a map's fields.
func (w *walker) common(f map[string]field, path string) common {
	var c common
	if x, ok := f["identity"]; ok {
		c.identity = w.identity(x.val, join(path, "identity"))
	}
	if x, ok := f["tenant"]; ok {
		c.tenant = w.sources(x.val, join(path, "tenant"), ": the sources that name a user's tenant, e.g. [{jwtClaim: org_id}]")
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
