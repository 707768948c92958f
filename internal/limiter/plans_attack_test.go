package limiter

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/mcp-ratelimit/extproc/internal/bucket"
	"github.com/mcp-ratelimit/extproc/internal/config"
)

// plansAndTools is a valid policy of p plans (each {}) and t tools (each
// named only), a few bytes per plan and per tool.
func plansAndTools(p, t int) string {
	var b strings.Builder
	b.WriteString("rateLimiting:\n  shared: {maxTokens: 1000, refillPeriod: 1m}\n  tools:\n")
	for i := range t {
		fmt.Fprintf(&b, "    - name: t%d\n", i)
	}
	b.WriteString("plans:\n  from: [{jwtClaim: plan}]\n  default: p0\n  limits:\n")
	for i := range p {
		fmt.Fprintf(&b, "    p%d: {}\n", i)
	}
	return b.String()
}

// Compiling a policy costs memory in proportion to what it says, not to
// plans × tools: a policy file within config.MaxFileSize can hold tens of
// thousands of each, and a reload that built a rule for every pair would
// run the service out of memory. (A policy that config.Parse refuses for
// having too many pairs is fine too.)
func TestCompilingPlansAndToolsIsLinearInThePolicy(t *testing.T) {
	allocs := func(p, n int) float64 {
		pol, err := config.Parse([]byte(plansAndTools(p, n)))
		if err != nil {
			t.Logf("config.Parse refuses %d plans x %d tools: %v", p, n, err)
			return -1
		}
		return testing.AllocsPerRun(3, func() { compile(nil, pol) })
	}
	plans, tools, both := allocs(100, 1), allocs(1, 100), allocs(100, 100)
	if plans < 0 || tools < 0 {
		t.Fatalf("the small policies must parse")
	}
	if both < 0 {
		return // refused: no blow-up to fear
	}
	if limit := 4 * (plans + tools); both > limit {
		t.Errorf("compile of 100 plans x 100 tools: %.0f allocations, want at most %.0f (4 x (100 plans: %.0f + 100 tools: %.0f)): it grows with plans x tools",
			both, limit, plans, tools)
	}
}

// With plans and no default, a tool (or method) that only plans limit has
// no bucket at all for a user whose plan claim is missing or unlisted, say
// "Pro" for "pro": the policy parses ("limits nothing" is not reported,
// because a plan limits the tool), yet such a user calls it without limit.
// Either config.Parse refuses the policy, or that user is limited.
func TestAUserOffEveryPlanIsNotUnlimitedByAPolicyThatLimitsEveryTool(t *testing.T) {
	for _, tc := range []struct{ name, policy, body string }{
		{"tool", `
rateLimiting:
  tools: [{name: search}]
identity: [{header: x-user-id}]
plans:
  from: [{header: x-plan}]
  limits:
    pro: {tools: [{name: search, perUser: {maxTokens: 5, refillPeriod: 1m}}]}
`, string(call("1", "search"))},
		{"every tool", `
rateLimiting: {}
identity: [{header: x-user-id}]
plans:
  from: [{header: x-plan}]
  limits:
    pro: {perUser: {maxTokens: 5, refillPeriod: 1m}}
`, string(call("1", "anything"))},
		{"method", `
rateLimiting:
  methods: [{name: resources/read}]
identity: [{header: x-user-id}]
plans:
  from: [{header: x-plan}]
  limits:
    pro: {methods: [{name: resources/read, perUser: {maxTokens: 5, refillPeriod: 1m}}]}
`, `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a"}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := config.Parse([]byte(tc.policy))
			if err != nil {
				return // refused: fine
			}
			l := New(p, Options{})
			ctx := context.Background()
			allowed := 0
			for range 50 {
				if d := l.Decide(ctx, post([]byte(tc.body), "x-user-id", "mallory", "x-plan", "Pro")); d.Allow {
					allowed++
				}
			}
			if allowed == 50 {
				t.Errorf("policy accepted, and a user on plan %q (not listed, no default) made 50 of 50 calls: no bucket applies to them", "Pro")
			}
		})
	}
}

// Guards: the plan comes only from a string or number claim compared
// exactly; other claim types, case variants and look-alikes fall to the
// default plan, never to another listed one.
func TestPlanClaimsOfOddTypesFallToTheDefault(t *testing.T) {
	l := New(mustParse(t, `
rateLimiting:
  shared: {maxTokens: 1000, refillPeriod: 1m}
identity: [{jwtClaim: sub}]
plans:
  from: [{jwtClaim: plan}]
  default: free
  limits:
    free: {perUser: {maxTokens: 1, refillPeriod: 1m}}
    pro: {perUser: {maxTokens: 5, refillPeriod: 1m}}
    "1": {perUser: {maxTokens: 3, refillPeriod: 1m}}
`), Options{})
	ctx := context.Background()
	for i, tc := range []struct {
		claim any
		want  string
	}{
		{"pro", "pro"},
		{"Pro", "free"},
		{"PRO", "free"},
		{"pro ", "free"},
		{"prо", "free"}, // Cyrillic o
		{"", "free"},
		{[]any{"pro"}, "free"},
		{map[string]any{"pro": true}, "free"},
		{true, "free"},
		{nil, "free"},
		{float64(1), "1"},
		{1.5, "free"},
		{strings.Repeat("pro", 10000), "free"},
	} {
		r := post(call("1", "x"))
		r.JWTPayloads = []map[string]any{{"sub": fmt.Sprint("u", i), "plan": tc.claim}}
		if d := l.Decide(ctx, r); d.Plan != tc.want {
			t.Errorf("plan claim %#v: plan %q, want %q", tc.claim, d.Plan, tc.want)
		}
	}
	// Two payloads: the first (in order) holding a usable claim wins; a
	// payload whose claim is not a string or number does not stop the search.
	r := post(call("1", "x"))
	r.JWTPayloads = []map[string]any{{"sub": "v", "plan": true}, {"plan": "pro"}}
	if d := l.Decide(ctx, r); d.Plan != "pro" {
		t.Errorf("payloads [bool, pro]: plan %q, want pro", d.Plan)
	}
}

// Guards: keys of plans, tenants, users, windows and tools never meet,
// whatever names the policy and clients use.
func TestPlanTenantUserToolKeysAreDistinct(t *testing.T) {
	var keys *bucket.Keys
	seen := map[string]string{}
	add := func(what, k string) {
		if k == "" {
			t.Fatalf("%s: empty key", what)
		}
		if other, dup := seen[k]; dup {
			t.Errorf("%s and %s share key %s", what, other, k)
		}
		seen[k] = what
	}
	scopes := []bucket.Scope{bucket.ScopeUser, bucket.ScopeUserTool, bucket.ScopeUserMethod, bucket.ScopeTenant, bucket.ScopeTenantTool, bucket.ScopeTenantMethod}
	for _, plan := range []string{"", "pro", "pro.w1", "w1", "user"} {
		for _, sc := range scopes {
			for _, name := range []string{"search", "search#w1", "@pro:search", "pro:search", "search:x"} {
				for w := range 2 {
					for _, id := range []string{"header:acme", "jwt:acme"} {
						add(fmt.Sprintf("plan %q scope %d name %q window %d id %q", plan, sc, name, w, id),
							keys.PlanKey("s", sc, name, id, plan, w))
					}
					if sc == bucket.ScopeUser || sc == bucket.ScopeTenant {
						break // no name in the key
					}
				}
				if sc == bucket.ScopeUser || sc == bucket.ScopeTenant {
					break
				}
			}
		}
	}
}

// Guards: a batch mixing tools on a plan charges the plan's buckets of each,
// summed, all or nothing; a tool the plan leaves out costs only the shared
// and server-wide ones.
func TestABatchOnAPlanChargesEachToolsPlanBuckets(t *testing.T) {
	st := &recordingStore{}
	l := New(mustParse(t, `
rateLimiting:
  shared: {maxTokens: 1000, refillPeriod: 1m}
  tools:
    - name: search
      cost: 2
    - name: fetch
identity: [{header: x-user-id}]
plans:
  from: [{header: x-plan}]
  default: free
  limits:
    free:
      perUser: {maxTokens: 10, refillPeriod: 1m}
      tools: [{name: search, perUser: {maxTokens: 3, refillPeriod: 1m}}]
`), Options{Store: st})
	batch := []byte(`[` + string(call("1", "search")) + `,` + string(call("2", "fetch")) + `,` + string(call("3", "search")) + `]`)
	d := l.Decide(context.Background(), post(batch, "x-user-id", "ann"))
	// search twice at cost 2 = 4 > its plan bucket of 3: never fits.
	if d.Allow || d.Limit != "tool:search" || d.Scope != "perUser" {
		t.Fatalf("batch: allow %v limit %q scope %q, want limited by tool:search perUser", d.Allow, d.Limit, d.Scope)
	}
	if len(st.keys) != 0 {
		t.Errorf("a batch that can never fit reached the store: %q", st.keys)
	}
}

// A plan name that YAML reads as a boolean or a number is kept as its text,
// while a claim is compared as JSON reads it ("1.0" is the number 1, read
// "1"; true is no plan at all): such a plan looks granted to the claim of
// the same value but never is. Either config.Parse refuses the name, or the
// claim of that value selects the plan.
func TestAPlanNamedByANonStringYAMLKeyIsReachedByThatClaimOrRefused(t *testing.T) {
	for _, tc := range []struct {
		key   string
		claim any
	}{
		{"true", true},
		{"1.0", 1.0},
		{"1_000", float64(1000)},
		{"0x10", float64(16)},
		{"1e3", float64(1000)},
	} {
		p, err := config.Parse([]byte(`
rateLimiting:
  shared: {maxTokens: 1000, refillPeriod: 1m}
identity: [{jwtClaim: sub}]
plans:
  from: [{jwtClaim: plan}]
  limits:
    ` + tc.key + `: {perUser: {maxTokens: 5, refillPeriod: 1m}}
`))
		if err != nil {
			continue // refused: fine
		}
		r := post(call("1", "x"))
		r.JWTPayloads = []map[string]any{{"sub": "u", "plan": tc.claim}}
		if d := New(p, Options{}).Decide(context.Background(), r); d.Plan == "" {
			t.Errorf("plan key %s accepted, but a claim %v does not select it (no plan)", tc.key, tc.claim)
		}
	}
}
