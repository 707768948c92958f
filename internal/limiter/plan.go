package limiter

import (
	"cmp"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/mcp-ratelimit/extproc/internal/body"
	"github.com/mcp-ratelimit/extproc/internal/bucket"
	"github.com/mcp-ratelimit/extproc/internal/config"
	"github.com/mcp-ratelimit/extproc/internal/mcp"
)

const toolsCall = "tools/call"

// chargeInfo names a charge for the rejection body, headers and metrics.
type chargeInfo struct {
	limit  string // "server", "tool:<name>" or "method:<name>"
	scope  string // "shared" or "perUser"
	policy string // the key's scope part, e.g. "user-tool:search": the header policy name
}

// bucketRef is one bucket of the policy with all that does not depend on the
// request, built once per policy (see compile).
type bucketRef struct {
	limit bucket.Limit
	scope bucket.Scope
	name  string // the tool or method; "" for the server-wide buckets
	// key is the bucket's key for shared scopes; per-user keys depend on the
	// identity and are built per request.
	key  string
	info chargeInfo
}

// rule is what one call charges: a tools/call of one tool, or one method.
type rule struct {
	cost    int64
	shared  []*bucketRef
	perUser []*bucketRef
}

// compiledServer is a server's policy ready for planning.
type compiledServer struct {
	srv *config.Server
	// limitsToolCalls: tools/call is limited on this server.
	limitsToolCalls bool
	// unknownTool applies to tools/call of a tool the policy does not name.
	unknownTool rule
	tools       map[string]*rule
	methods     map[string]*rule
	// read says which bodies the servers behind accept.
	read body.Options
}

// compiled is a policy with its servers compiled.
type compiled struct {
	policy  *config.Policy
	servers []compiledServer
	// byPath, byAuthority: some server has a pathPrefix (an authority), so a
	// request's path (authority) readings matter.
	byPath, byAuthority bool
}

// compile readies p for planning; keys builds the bucket keys.
func compile(keys *bucket.Keys, p *config.Policy) *compiled {
	c := &compiled{policy: p, servers: make([]compiledServer, len(p.Servers))}
	for i := range p.Servers {
		srv := &p.Servers[i]
		cs := &c.servers[i]
		c.byPath = c.byPath || srv.Match.PathPrefix != ""
		c.byAuthority = c.byAuthority || srv.Match.Authority != ""
		*cs = compiledServer{srv: srv, limitsToolCalls: srv.LimitsToolCalls(),
			tools: make(map[string]*rule, len(srv.Tools)), methods: make(map[string]*rule, len(srv.Methods))}
		if c := srv.Compression; c != nil {
			cs.read = body.Options{Codings: c.Codings, MaxInflated: c.MaxInflatedBytes, MaxRatio: c.MaxRatio}
		}
		ref := func(b *config.Bucket, scope bucket.Scope, name, limit, scopeLabel string) *bucketRef {
			r := &bucketRef{
				limit: bucket.Limit{MaxTokens: b.MaxTokens, RefillPeriod: b.RefillPeriod},
				scope: scope, name: name,
				info: chargeInfo{limit: limit, scope: scopeLabel, policy: policyName(scope, name)},
			}
			if scopeLabel == "shared" {
				r.key = keys.Key(srv.Name, scope, name, "")
			}
			return r
		}
		var serverShared, serverUser *bucketRef
		if srv.Shared != nil {
			serverShared = ref(srv.Shared, bucket.ScopeShared, "", "server", "shared")
		}
		if srv.PerUser != nil {
			serverUser = ref(srv.PerUser, bucket.ScopeUser, "", "server", "perUser")
		}
		toolRule := func(cost int64, shared, perUser *bucketRef) *rule {
			r := &rule{cost: cost}
			for _, b := range []*bucketRef{serverShared, shared} {
				if b != nil {
					r.shared = append(r.shared, b)
				}
			}
			for _, b := range []*bucketRef{serverUser, perUser} {
				if b != nil {
					r.perUser = append(r.perUser, b)
				}
			}
			return r
		}
		cs.unknownTool = *toolRule(1, nil, nil)
		for name, t := range srv.Tools {
			var shared, perUser *bucketRef
			if t.Shared != nil {
				shared = ref(t.Shared, bucket.ScopeTool, name, "tool:"+name, "shared")
			}
			if t.PerUser != nil {
				perUser = ref(t.PerUser, bucket.ScopeUserTool, name, "tool:"+name, "perUser")
			}
			cs.tools[name] = toolRule(t.Cost, shared, perUser)
		}
		for name, m := range srv.Methods {
			r := &rule{cost: m.Cost}
			if m.Shared != nil {
				r.shared = append(r.shared, ref(m.Shared, bucket.ScopeMethod, name, "method:"+name, "shared"))
			}
			if m.PerUser != nil {
				r.perUser = append(r.perUser, ref(m.PerUser, bucket.ScopeUserMethod, name, "method:"+name, "perUser"))
			}
			cs.methods[name] = r
		}
	}
	return c
}

// route returns the server a request is charged to, or nil when no server
// matches it. Each reading of the request (config.AuthorityReadings times
// config.PathReadings, each path compared exactly and case-folded) selects the
// first server that matches it; readings that select none do not count. When
// readings select different servers the request is ambiguous, and route
// returns them all instead (ok false): whichever were charged, the server that
// really runs it might be another. An authority or path the limiter will not
// read (not host[:port], config.UnreadablePath) is ambiguous among every
// server it could go to, when there are two or more.
func (c *compiled) route(authority, path string) (cs *compiledServer, candidates []*compiledServer, ok bool) {
	if !c.byAuthority {
		authority = ""
	}
	// The authority's readings, once: at most four (case by trailing dot).
	var as [4]string
	na := 0
	for a := range config.AuthorityReadings(authority) {
		as[na] = a
		na++
	}
	authorityOK := na > 0
	pathOK := !c.byPath || !config.UnreadablePath(path)
	if !authorityOK || !pathOK {
		candidates = c.possible(as[:na], authorityOK, path, pathOK)
		if len(candidates) > 1 {
			return nil, candidates, false
		}
		if len(candidates) == 1 {
			return candidates[0], nil, true
		}
		return nil, nil, true
	}
	pick := func(s *compiledServer) {
		switch {
		case s == nil || s == cs || slices.Contains(candidates, s):
		case cs == nil:
			cs = s
		default:
			if candidates == nil {
				candidates = []*compiledServer{cs}
			}
			candidates = append(candidates, s)
		}
	}
	if !c.byPath {
		for _, a := range as[:na] {
			pick(c.first(a, "", false))
		}
	} else {
		// Path readings outside: each is worked out once.
		for r := range config.PathReadings(path) {
			for _, a := range as[:na] {
				pick(c.first(a, r, false))
				pick(c.first(a, r, true))
			}
		}
	}
	if candidates != nil {
		return nil, candidates, false
	}
	return cs, nil, true
}

// possible lists, in order, the servers a request could go to when its
// authority or path cannot be read. A server counts when it is the first
// match for some reading of what can be read together with a stand-in for
// what cannot: its own authority (or "", a host no server names) and its own
// pathPrefix (or "/"). If an earlier server takes the stand-in, it takes every
// request the later one could.
func (c *compiled) possible(authorities []string, authorityOK bool, path string, pathOK bool) []*compiledServer {
	paths := []string{""}
	if pathOK && c.byPath {
		paths = slices.Collect(config.PathReadings(path))
	}
	var out []*compiledServer
	for i := range c.servers {
		cs := &c.servers[i]
		m := cs.srv.Match
		as, ps := authorities, paths
		if !authorityOK {
			as = []string{m.Authority}
		}
		if !pathOK {
			ps = []string{cmp.Or(m.PathPrefix, "/")}
		}
	reach:
		for _, a := range as {
			for _, p := range ps {
				if c.first(a, p, false) == cs || c.first(a, p, true) == cs {
					out = append(out, cs)
					break reach
				}
			}
		}
	}
	return out
}

// routeLabel returns the server a request without a body is counted under:
// such a request is never limited, so the request as sent decides.
func (c *compiled) routeLabel(authority, path string) *compiledServer {
	if !config.ReadableAuthority(authority) {
		authority = ""
	}
	return c.first(strings.ToLower(authority), config.PathOf(path), false)
}

// first returns the first server that matches one reading of the authority
// and one of the path, or nil.
func (c *compiled) first(authority, path string, fold bool) *compiledServer {
	for i := range c.servers {
		m := c.servers[i].srv.Match
		if m.MatchesAuthority(authority) && m.MatchesPath(path, fold) {
			return &c.servers[i]
		}
	}
	return nil
}

// plan is the set of buckets one request body charges.
type plan struct {
	charges []bucket.Charge
	info    []chargeInfo
	method  string // bounded label, see Decision.Method
	tool    string // bounded label, see Decision.Tool
	// neverFits is the index of a charge whose summed cost exceeds its bucket's
	// capacity (a batch too large to ever pass), or -1.
	neverFits int
	// toolCallWithID is true when some tools/call element expects an answer.
	toolCallWithID bool
}

// planCharges lists the charges for every limited call (body.Reading.Calls),
// their keys built by keys. Charges to the same bucket from several calls are
// summed into one, so a batch, or a body that servers read as different calls,
// is charged all-or-nothing in a single Take.
func planCharges(keys *bucket.Keys, cs *compiledServer, calls []mcp.Message, r *Request) plan {
	pl := plan{neverFits: -1}
	id := identity{sources: cs.srv.Identity, r: r}
	var firstLabel string // the first message's label, when nothing is limited
	for _, m := range calls {
		var ru *rule
		label := OtherLabel
		if m.Method == toolsCall {
			label = toolsCall
			t, known := cs.tools[m.Name]
			if pl.tool == "" {
				pl.tool = OtherLabel
				if known {
					pl.tool = m.Name
				}
			}
			if cs.limitsToolCalls {
				ru = &cs.unknownTool
				if known {
					ru = t
				}
				if m.HasID() {
					pl.toolCallWithID = true
				}
			}
		} else if mr, ok := cs.methods[m.Method]; ok {
			ru, label = mr, m.Method
		}
		if firstLabel == "" {
			firstLabel = label
		}
		if ru == nil {
			continue
		}
		if pl.method == "" {
			pl.method = label
		}
		for _, b := range ru.shared {
			pl.add(b.key, b, ru.cost)
		}
		if len(ru.perUser) == 0 {
			continue
		}
		u := id.get()
		if u == "" {
			// No identity: per-user buckets are skipped, and shared ones still apply.
			continue
		}
		for _, b := range ru.perUser {
			pl.add(keys.Key(cs.srv.Name, b.scope, b.name, u), b, ru.cost)
		}
	}
	if pl.method == "" {
		pl.method = firstLabel
	}
	return pl
}

// add charges b cost tokens under key, summing with an earlier charge of the
// same key.
func (pl *plan) add(key string, b *bucketRef, cost int64) {
	for i := range pl.charges {
		if pl.charges[i].Key == key {
			pl.charges[i].Cost += cost
			if pl.neverFits < 0 && pl.charges[i].Cost > b.limit.MaxTokens {
				pl.neverFits = i
			}
			return
		}
	}
	if pl.charges == nil {
		// Room for a single call's buckets (server, tool, user, user-tool).
		pl.charges = make([]bucket.Charge, 0, 4)
		pl.info = make([]chargeInfo, 0, 4)
	}
	pl.charges = append(pl.charges, bucket.Charge{Key: key, Limit: b.limit, Cost: cost})
	pl.info = append(pl.info, b.info)
	if pl.neverFits < 0 && cost > b.limit.MaxTokens {
		pl.neverFits = len(pl.charges) - 1
	}
}

// policyName is the bucket's name in ratelimit-policy headers: the scope part of
// its key, without the hashed identity.
func policyName(scope bucket.Scope, name string) string {
	switch scope {
	case bucket.ScopeShared:
		return "shared"
	case bucket.ScopeTool:
		return "tool:" + name
	case bucket.ScopeMethod:
		return "method:" + name
	case bucket.ScopeUser:
		return "user"
	case bucket.ScopeUserTool:
		return "user-tool:" + name
	default:
		return "user-method:" + name
	}
}

// identity resolves the user once per request, on first need.
type identity struct {
	sources []config.IdentitySource
	r       *Request
	done    bool
	value   string
}

func (id *identity) get() string {
	if !id.done {
		id.done = true
		id.value = resolveIdentity(id.sources, id.r)
	}
	return id.value
}

// resolveIdentity returns the first value a source yields, prefixed by the source
// kind so that equal strings from different sources are different users.
func resolveIdentity(sources []config.IdentitySource, r *Request) string {
	for _, s := range sources {
		switch {
		case s.JWTClaim != "":
			for _, payload := range r.JWTPayloads {
				if v, ok := claim(payload, s.JWTClaim); ok {
					return "jwt:" + v
				}
			}
		case s.Header != "":
			if v := strings.TrimSpace(r.header(s.Header)); v != "" {
				return "header:" + v
			}
		case s.SourceAddress:
			if ip := hostOnly(r.SourceAddress); ip != "" {
				return "ip:" + ip
			}
		}
	}
	return ""
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
