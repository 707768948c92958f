package limiter

import (
	"github.com/mcp-ratelimit/extproc/internal/body"
	"github.com/mcp-ratelimit/extproc/internal/bucket"
	"github.com/mcp-ratelimit/extproc/internal/config"
	"github.com/mcp-ratelimit/extproc/internal/identity"
	"github.com/mcp-ratelimit/extproc/internal/mcp"
	"github.com/mcp-ratelimit/extproc/internal/route"
)

const toolsCall = "tools/call"

// chargeInfo names a charge for the rejection body, headers and metrics.
type chargeInfo struct {
	limit  string // "server", "tool:<name>" or "method:<name>"
	scope  string // "shared" or "perUser"
	policy string // the key's scope part, e.g. "user-tool:search": the header policy name
	// slot lists every bucket of the charge's slot, itself included, in policy
	// order: a rejection names them all in ratelimit-policy when there are several.
	slot []*bucketRef
	// quota is the bucket's fixed ratelimit and ratelimit-policy parts (setQuotaHeaders).
	quota *QuotaHeader
}

// bucketRef is one bucket of the policy with all that does not depend on the
// request, built once per policy (see compile).
type bucketRef struct {
	limit bucket.Limit
	scope bucket.Scope
	name  string // the tool or method; "" for the server-wide buckets
	// window is the bucket's place in its slot's list, from 0 (bucket.Keys.WindowKey).
	window int
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
	// router chooses a request's server among servers, by their matches.
	router *route.Router
}

// compile readies p for planning; keys builds the bucket keys.
func compile(keys *bucket.Keys, p *config.Policy) *compiled {
	c := &compiled{policy: p, servers: make([]compiledServer, len(p.Servers))}
	matches := make([]route.Match, len(p.Servers))
	for i := range p.Servers {
		matches[i] = p.Servers[i].Match
		srv := &p.Servers[i]
		cs := &c.servers[i]
		*cs = compiledServer{srv: srv, limitsToolCalls: srv.LimitsToolCalls(),
			tools: make(map[string]*rule, len(srv.Tools)), methods: make(map[string]*rule, len(srv.Methods))}
		if c := srv.Compression; c != nil {
			cs.read = body.Options{Codings: c.Codings, MaxInflated: c.MaxInflatedBytes, MaxRatio: c.MaxRatio}
		}
		// refs builds the buckets of one slot; nil when the slot is absent.
		refs := func(bs []config.Bucket, scope bucket.Scope, name, limit, scopeLabel string) []*bucketRef {
			if len(bs) == 0 {
				return nil
			}
			out := make([]*bucketRef, len(bs))
			for w, b := range bs {
				r := &bucketRef{
					limit: bucket.Limit{MaxTokens: b.MaxTokens, RefillPeriod: b.RefillPeriod},
					scope: scope, name: name, window: w,
					info: chargeInfo{limit: limit, scope: scopeLabel, policy: bucket.PolicyName(scope, name, w), slot: out},
				}
				if scopeLabel == "shared" {
					r.key = keys.WindowKey(srv.Name, scope, name, "", w)
				}
				out[w] = r
			}
			setQuotaHeaders(out)
			return out
		}
		serverShared := refs(srv.Shared, bucket.ScopeShared, "", "server", "shared")
		serverUser := refs(srv.PerUser, bucket.ScopeUser, "", "server", "perUser")
		toolRule := func(cost int64, shared, perUser []*bucketRef) *rule {
			r := &rule{cost: cost}
			r.shared = append(append(r.shared, serverShared...), shared...)
			r.perUser = append(append(r.perUser, serverUser...), perUser...)
			return r
		}
		cs.unknownTool = *toolRule(1, nil, nil)
		for name, t := range srv.Tools {
			cs.tools[name] = toolRule(t.Cost,
				refs(t.Shared, bucket.ScopeTool, name, "tool:"+name, "shared"),
				refs(t.PerUser, bucket.ScopeUserTool, name, "tool:"+name, "perUser"))
		}
		for name, m := range srv.Methods {
			cs.methods[name] = &rule{cost: m.Cost,
				shared:  refs(m.Shared, bucket.ScopeMethod, name, "method:"+name, "shared"),
				perUser: refs(m.PerUser, bucket.ScopeUserMethod, name, "method:"+name, "perUser")}
		}
	}
	c.router = route.New(matches)
	return c
}

// route returns the server a request is charged to (route.Router.Route): nil
// when none matches, or, with ok false, every server an ambiguous request
// could go to.
func (c *compiled) route(authority, path string) (cs *compiledServer, candidates []*compiledServer, ok bool) {
	i, in, ok := c.router.Route(authority, path)
	for _, k := range in {
		candidates = append(candidates, &c.servers[k])
	}
	return c.server(i), candidates, ok
}

// routeLabel returns the server a request without a body is counted under.
func (c *compiled) routeLabel(authority, path string) *compiledServer {
	return c.server(c.router.Label(authority, path))
}

// server returns server i, or nil for -1.
func (c *compiled) server(i int) *compiledServer {
	if i < 0 {
		return nil
	}
	return &c.servers[i]
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
	id := user{sources: cs.srv.Identity, r: r}
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
			pl.add(keys.WindowKey(cs.srv.Name, b.scope, b.name, u, b.window), b, ru.cost)
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

// user resolves the user once per request, on first need.
type user struct {
	sources []config.IdentitySource
	r       *Request
	done    bool
	value   string
}

func (id *user) get() string {
	if !id.done {
		id.done = true
		id.value = resolveIdentity(id.sources, id.r)
	}
	return id.value
}

// resolveIdentity is identity.Of for a limiter Request.
func resolveIdentity(sources []config.IdentitySource, r *Request) string {
	return identity.Of(sources, identity.Request{Header: r.header, SourceAddress: r.SourceAddress, JWTPayloads: r.JWTPayloads})
}
