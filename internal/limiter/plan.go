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
	scope  string // "shared", "perUser" or "perTenant"
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
	plan  string // the plan whose bucket this is; "" for rateLimiting's
	// window is the bucket's place in its slot's list, from 0 (bucket.Keys.WindowKey).
	window int
	// key is the bucket's key for shared scopes; per-user and per-tenant keys
	// depend on the identity and are built per request.
	key  string
	info chargeInfo
}

// rule is what one call charges: a tools/call of one tool, or one method.
type rule struct {
	cost                       int64
	shared, perUser, perTenant []*bucketRef
}

// ruleset is the rules of a server. A server's own ruleset names every tool
// and method the policy lists, with their cost and all their buckets; a
// plan's holds only per-user and per-tenant buckets, of the tools and methods
// the plan names (unknownTool: the plan's server-wide slots), so that the
// policy's size, not plans × tools, bounds what compile builds.
type ruleset struct {
	// unknownTool applies to tools/call of a tool the ruleset does not name.
	unknownTool rule
	tools       map[string]*rule
	methods     map[string]*rule
}

// compiledServer is a server's policy ready for planning.
type compiledServer struct {
	srv *config.Server
	// limitsToolCalls: tools/call is limited on this server.
	limitsToolCalls bool
	// rules: every call's cost and shared buckets, and the per-user and
	// per-tenant ones when the server has no plans.
	rules ruleset
	// plans holds each plan's per-user and per-tenant rules; nil without plans.
	plans map[string]*ruleset
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
		*cs = compiledServer{srv: srv, limitsToolCalls: srv.LimitsToolCalls()}
		if c := srv.Compression; c != nil {
			cs.read = body.Options{Codings: c.Codings, MaxInflated: c.MaxInflatedBytes, MaxRatio: c.MaxRatio}
		}
		b := rulesBuilder{keys: keys, srv: srv}
		cs.rules = *b.ruleset()
		if srv.Plans != nil {
			cs.plans = make(map[string]*ruleset, len(srv.Plans.Limits))
			for name, l := range srv.Plans.Limits {
				cs.plans[name] = b.planRules(name, l)
			}
		}
	}
	c.router = route.New(matches)
	return c
}

// rulesBuilder builds a server's rulesets: its own (ruleset), and each plan's
// per-user and per-tenant rules (planRules).
type rulesBuilder struct {
	keys *bucket.Keys
	srv  *config.Server
}

// refs builds the buckets of one slot; nil when the slot is absent.
func (b *rulesBuilder) refs(bs []config.Bucket, scope bucket.Scope, name, limit, scopeLabel, plan string) []*bucketRef {
	if len(bs) == 0 {
		return nil
	}
	out := make([]*bucketRef, len(bs))
	for w, bk := range bs {
		r := &bucketRef{
			limit: bucket.Limit{MaxTokens: bk.MaxTokens, RefillPeriod: bk.RefillPeriod},
			scope: scope, name: name, plan: plan, window: w,
			info: chargeInfo{limit: limit, scope: scopeLabel, policy: bucket.PolicyName(scope, name, plan, w), slot: out},
		}
		if scopeLabel == "shared" {
			r.key = b.keys.WindowKey(b.srv.Name, scope, name, "", w)
		}
		out[w] = r
	}
	setQuotaHeaders(out)
	return out
}

// ruleset builds a server's own rules: every tool and method, with their
// shared buckets and rateLimiting's per-user and per-tenant ones.
func (b *rulesBuilder) ruleset() *ruleset {
	srv := b.srv
	serverShared := b.refs(srv.Shared, bucket.ScopeShared, "", "server", "shared", "")
	serverUser := b.refs(srv.PerUser, bucket.ScopeUser, "", "server", "perUser", "")
	serverTenant := b.refs(srv.PerTenant, bucket.ScopeTenant, "", "server", "perTenant", "")
	rs := &ruleset{
		unknownTool: rule{cost: 1, shared: serverShared, perUser: serverUser, perTenant: serverTenant},
		tools:       make(map[string]*rule, len(srv.Tools)),
		methods:     make(map[string]*rule, len(srv.Methods)),
	}
	for name, t := range srv.Tools {
		rs.tools[name] = &rule{cost: t.Cost,
			shared:    concat(serverShared, b.refs(t.Shared, bucket.ScopeTool, name, "tool:"+name, "shared", "")),
			perUser:   concat(serverUser, b.refs(t.PerUser, bucket.ScopeUserTool, name, "tool:"+name, "perUser", "")),
			perTenant: concat(serverTenant, b.refs(t.PerTenant, bucket.ScopeTenantTool, name, "tool:"+name, "perTenant", "")),
		}
	}
	for name, m := range srv.Methods {
		rs.methods[name] = &rule{cost: m.Cost,
			shared:    b.refs(m.Shared, bucket.ScopeMethod, name, "method:"+name, "shared", ""),
			perUser:   b.refs(m.PerUser, bucket.ScopeUserMethod, name, "method:"+name, "perUser", ""),
			perTenant: b.refs(m.PerTenant, bucket.ScopeTenantMethod, name, "method:"+name, "perTenant", ""),
		}
	}
	return rs
}

// planRules builds the per-user and per-tenant rules of plan (limits pl): its
// server-wide slots, and the tools and methods it names (their cost and
// shared buckets stay in the server's own ruleset).
func (b *rulesBuilder) planRules(plan string, pl config.PlanLimits) *ruleset {
	serverUser := b.refs(pl.PerUser, bucket.ScopeUser, "", "server", "perUser", plan)
	serverTenant := b.refs(pl.PerTenant, bucket.ScopeTenant, "", "server", "perTenant", plan)
	rs := &ruleset{
		unknownTool: rule{perUser: serverUser, perTenant: serverTenant},
		tools:       make(map[string]*rule, len(pl.Tools)),
		methods:     make(map[string]*rule, len(pl.Methods)),
	}
	for name, t := range pl.Tools {
		rs.tools[name] = &rule{
			perUser:   concat(serverUser, b.refs(t.PerUser, bucket.ScopeUserTool, name, "tool:"+name, "perUser", plan)),
			perTenant: concat(serverTenant, b.refs(t.PerTenant, bucket.ScopeTenantTool, name, "tool:"+name, "perTenant", plan)),
		}
	}
	for name, m := range pl.Methods {
		rs.methods[name] = &rule{
			perUser:   b.refs(m.PerUser, bucket.ScopeUserMethod, name, "method:"+name, "perUser", plan),
			perTenant: b.refs(m.PerTenant, bucket.ScopeTenantMethod, name, "method:"+name, "perTenant", plan),
		}
	}
	return rs
}

// concat is a new slice of a then b (never sharing a's backing array).
func concat(a, b []*bucketRef) []*bucketRef {
	return append(append([]*bucketRef(nil), a...), b...)
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
	// plan is the user's plan (see Decision.Plan).
	plan string
}

// planCharges lists the charges for every limited call (body.Reading.Calls),
// their keys built by keys. Charges to the same bucket from several calls are
// summed into one, so a batch, or a body that servers read as different calls,
// is charged all-or-nothing in a single Take.
func planCharges(keys *bucket.Keys, cs *compiledServer, calls []mcp.Message, r *Request) plan {
	pl := plan{neverFits: -1}
	rs := &cs.rules
	ids := rs // where per-user and per-tenant buckets come from
	if cs.plans != nil {
		pl.plan, ids = cs.planOf(r)
	}
	id := lazyIdentity{sources: cs.srv.Identity, r: r}
	tenant := lazyIdentity{sources: cs.srv.Tenant, r: r}
	var firstLabel string // the first message's label, when nothing is limited
	for _, m := range calls {
		var ru, idr *rule
		label := OtherLabel
		if m.Method == toolsCall {
			label = toolsCall
			t, known := rs.tools[m.Name]
			if pl.tool == "" {
				pl.tool = OtherLabel
				if known {
					pl.tool = m.Name
				}
			}
			if cs.limitsToolCalls {
				ru, idr = &rs.unknownTool, &ids.unknownTool
				if known {
					ru, idr = t, t
					if ids != rs {
						if pt, ok := ids.tools[m.Name]; ok {
							idr = pt
						} else {
							idr = &ids.unknownTool
						}
					}
				}
				if m.HasID() {
					pl.toolCallWithID = true
				}
			}
		} else if mr, ok := rs.methods[m.Method]; ok {
			ru, idr, label = mr, mr, m.Method
			if ids != rs {
				idr = ids.methods[m.Method] // nil: the plan gives it no bucket
			}
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
		if idr == nil {
			continue
		}
		// Without a user (or a tenant), per-user (per-tenant) buckets are
		// skipped; the others still apply.
		if len(idr.perUser) > 0 {
			if u := id.get(); u != "" {
				for _, b := range idr.perUser {
					pl.add(keys.PlanKey(cs.srv.Name, b.scope, b.name, u, b.plan, b.window), b, ru.cost)
				}
			}
		}
		if len(idr.perTenant) > 0 {
			if t := tenant.get(); t != "" {
				for _, b := range idr.perTenant {
					pl.add(keys.PlanKey(cs.srv.Name, b.scope, b.name, t, b.plan, b.window), b, ru.cost)
				}
			}
		}
	}
	if pl.method == "" {
		pl.method = firstLabel
	}
	return pl
}

// planOf returns the plan of the request's user and its rules: the first
// plans.from source's value when the policy names that plan, else the
// default plan. The name is a bounded label: only names the policy lists.
func (cs *compiledServer) planOf(r *Request) (string, *ruleset) {
	name := identity.Value(cs.srv.Plans.From, identityRequest(r))
	if rs, ok := cs.plans[name]; ok {
		return name, rs
	}
	return cs.srv.Plans.Default, cs.plans[cs.srv.Plans.Default]
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

// lazyIdentity resolves a user (or tenant) once per request, on first need.
type lazyIdentity struct {
	sources []config.IdentitySource
	r       *Request
	done    bool
	value   string
}

func (id *lazyIdentity) get() string {
	if !id.done {
		id.done = true
		id.value = resolveIdentity(id.sources, id.r)
	}
	return id.value
}

// resolveIdentity is identity.Of for a limiter Request.
func resolveIdentity(sources []config.IdentitySource, r *Request) string {
	return identity.Of(sources, identityRequest(r))
}

func identityRequest(r *Request) identity.Request {
	return identity.Request{Header: r.header, SourceAddress: r.SourceAddress, JWTPayloads: r.JWTPayloads}
}
