package integration

import (
	"strconv"
	"strings"
	"testing"

	envoyconfig "github.com/mcp-ratelimit/extproc/envoy"
	"github.com/mcp-ratelimit/extproc/test/integration/harness"
	"github.com/mcp-ratelimit/extproc/test/mcpserver/demo"
)

// Plans and tenants from claims Envoy's jwt_authn verified, through real
// Envoy and Redis: each plan's per-user bucket, a tenant's bucket shared by
// its users, a plan that has none, the default plan for a token without a
// plan claim, and the plan counted in mcp_ratelimit_plan_decisions_total.
func TestPlansAndTenantsFromVerifiedClaims(t *testing.T) {
	s := newSigner(t, "k1")
	env := start(t, `server: it
rateLimiting:
  shared: {maxTokens: 1000, refillPeriod: 1h}
identity: [{jwtClaim: sub}]
tenant: [{jwtClaim: org_id}]
plans:
  from: [{jwtClaim: plan}]
  default: free
  limits:
    free: {perUser: {maxTokens: 1, refillPeriod: 1h}}
    pro:
      perUser: {maxTokens: 3, refillPeriod: 1h}
      perTenant: {maxTokens: 4, refillPeriod: 1h}
    internal: {}
`, harness.Options{JWTAuthn: &envoyconfig.JWTAuthn{Issuer: jwtIssuer, JWKS: s.jwks(t)}})
	raw := newRawClient(t, env.URL)
	tok := func(claims map[string]any) map[string]string { return bearer(s.token(t, claims)) }
	id := 0
	call := func(hdr map[string]string) (string, reply) {
		id++
		ids := strconv.Itoa(id)
		return ids, raw.post(callBody(ids, demo.ToolEcho), hdr)
	}
	passes := func(t *testing.T, who string, n int, hdr map[string]string) {
		t.Helper()
		for i := range n {
			_, r := call(hdr)
			checkPassed(t, who+" call "+strconv.Itoa(i+1), r)
		}
	}

	t.Run("no plan claim: the default plan, free", func(t *testing.T) {
		raw.t = t
		alice := tok(map[string]any{"sub": "alice"})
		passes(t, "alice", 1, alice)
		ids, r := call(alice)
		checkRejected(t, r, ids, "server", "perUser")
		if got := r.Header.Get("Ratelimit-Policy"); got != `"user@free";q=1;w=3600` {
			t.Errorf("ratelimit-policy: got %q, want the free plan's bucket", got)
		}
	})
	t.Run("pro: its own per-user bucket", func(t *testing.T) {
		raw.t = t
		bob := tok(map[string]any{"sub": "bob", "plan": "pro"})
		passes(t, "bob", 3, bob)
		ids, r := call(bob)
		checkRejected(t, r, ids, "server", "perUser")
		if got := r.Header.Get("Ratelimit-Policy"); got != `"user@pro";q=3;w=3600` {
			t.Errorf("ratelimit-policy: got %q, want the pro plan's bucket", got)
		}
	})
	t.Run("pro: two users of one tenant share its bucket", func(t *testing.T) {
		raw.t = t
		carol := tok(map[string]any{"sub": "carol", "plan": "pro", "org_id": "acme"})
		dave := tok(map[string]any{"sub": "dave", "plan": "pro", "org_id": "acme"})
		passes(t, "carol", 2, carol)
		passes(t, "dave", 2, dave)
		ids, r := call(dave)
		checkRejected(t, r, ids, "server", "perTenant")
	})
	t.Run("internal: no per-user bucket", func(t *testing.T) {
		raw.t = t
		passes(t, "erin", 6, tok(map[string]any{"sub": "erin", "plan": "internal"}))
	})
	t.Run("a plan the policy does not list: the default", func(t *testing.T) {
		raw.t = t
		frank := tok(map[string]any{"sub": "frank", "plan": "platinum"})
		passes(t, "frank", 1, frank)
		ids, r := call(frank)
		checkRejected(t, r, ids, "server", "perUser")
	})

	for _, c := range []struct {
		plan, decision string
		want           float64
	}{
		{"free", "allowed", 2}, {"free", "limited", 2},
		{"pro", "allowed", 7}, {"pro", "limited", 2},
		{"internal", "allowed", 6},
	} {
		labels := []string{`plan="` + c.plan + `"`, `decision="` + c.decision + `"`}
		if got := metric(t, env.Extprocs[0], "mcp_ratelimit_plan_decisions_total{", labels...); got != c.want {
			t.Errorf("plan_decisions_total{plan=%q,decision=%q} = %v, want %v", c.plan, c.decision, got, c.want)
		}
	}
	// Plan keys in Redis carry the plan, and never a claim value.
	var sawPlanKey bool
	for _, k := range redisKeys(t, env) {
		sawPlanKey = sawPlanKey || strings.Contains(k, ":tenant@pro:")
		for _, who := range []string{"alice", "bob", "acme", "carol"} {
			if strings.Contains(k, who) {
				t.Errorf("redis key %q holds the identity %q, want it hashed", k, who)
			}
		}
	}
	if !sawPlanKey {
		t.Errorf("no tenant@pro key in Redis: %q", redisKeys(t, env))
	}
}
