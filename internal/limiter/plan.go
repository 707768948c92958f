package limiter

import (
	"net"
	"strconv"
	"strings"

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

// planCharges lists the charges for every limited message of body. Charges to
// the same bucket from several batch elements are summed into one, so a batch is
// charged all-or-nothing in a single Take.
func planCharges(srv *config.Server, body mcp.Body, r *Request) plan {
	pl := plan{neverFits: -1}
	id := identity{sources: srv.Identity, r: r}
	for _, m := range body.Messages {
		if m.Kind != mcp.KindRequest && m.Kind != mcp.KindNotification {
			continue
		}
		if m.Method == toolsCall && srv.LimitsToolCalls() {
			pl.addToolCall(srv, m, &id)
			continue
		}
		if meth, ok := srv.Methods[m.Method]; ok {
			if pl.method == "" {
				pl.method = meth.Name
			}
			pl.add(srv.Name, bucket.ScopeMethod, meth.Name, "", meth.Shared, meth.Cost, "method:"+meth.Name, "shared")
			if meth.PerUser != nil {
				if u := id.get(); u != "" {
					pl.add(srv.Name, bucket.ScopeUserMethod, meth.Name, u, meth.PerUser, meth.Cost, "method:"+meth.Name, "perUser")
				}
			}
			continue
		}
		if pl.method == "" && len(pl.charges) == 0 && len(body.Messages) > 0 && m.Method == body.Messages[0].Method {
			// Unlimited methods get a bounded label; it is overwritten by the
			// first limited method of a batch.
			pl.method = OtherLabel
			if m.Method == toolsCall {
				pl.method = toolsCall
			}
		}
	}
	return pl
}

func (pl *plan) addToolCall(srv *config.Server, m mcp.Message, id *identity) {
	if pl.method == "" || pl.method == OtherLabel {
		pl.method = toolsCall
	}
	if m.HasID() {
		pl.toolCallWithID = true
	}
	tool, known := srv.Tools[m.Name]
	cost := int64(1)
	if known {
		cost = tool.Cost
	}
	if pl.tool == "" {
		pl.tool = OtherLabel
		if known {
			pl.tool = tool.Name
		}
	}
	pl.add(srv.Name, bucket.ScopeShared, "", "", srv.Shared, cost, "server", "shared")
	if known {
		pl.add(srv.Name, bucket.ScopeTool, tool.Name, "", tool.Shared, cost, "tool:"+tool.Name, "shared")
	}
	if srv.PerUser == nil && (!known || tool.PerUser == nil) {
		return
	}
	u := id.get()
	if u == "" {
		// No identity: per-user buckets are skipped (SPEC §3).
		return
	}
	pl.add(srv.Name, bucket.ScopeUser, "", u, srv.PerUser, cost, "server", "perUser")
	if known {
		pl.add(srv.Name, bucket.ScopeUserTool, tool.Name, u, tool.PerUser, cost, "tool:"+tool.Name, "perUser")
	}
}

// add charges b (if present) cost tokens, summing with an earlier charge of the
// same key.
func (pl *plan) add(server string, scope bucket.Scope, name, user string, b *config.Bucket, cost int64, limit, scopeLabel string) {
	if b == nil {
		return
	}
	key := bucket.Key(server, scope, name, user)
	for i := range pl.charges {
		if pl.charges[i].Key == key {
			pl.charges[i].Cost += cost
			if pl.neverFits < 0 && pl.charges[i].Cost > b.MaxTokens {
				pl.neverFits = i
			}
			return
		}
	}
	pl.charges = append(pl.charges, bucket.Charge{
		Key:   key,
		Limit: bucket.Limit{MaxTokens: b.MaxTokens, RefillPeriod: b.RefillPeriod},
		Cost:  cost,
	})
	pl.info = append(pl.info, chargeInfo{limit: limit, scope: scopeLabel, policy: policyName(scope, name)})
	if pl.neverFits < 0 && cost > b.MaxTokens {
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
			if v := strings.TrimSpace(r.Headers[s.Header]); v != "" {
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

// route returns the first server whose match accepts the request, or nil.
func route(servers []config.Server, authority, path string) *config.Server {
	for i := range servers {
		if servers[i].Match.Matches(authority, path) {
			return &servers[i]
		}
	}
	return nil
}
