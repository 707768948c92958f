package limiter

import (
	"context"
	"strings"
	"testing"

	"github.com/mcp-ratelimit/extproc/internal/bucket"
	"github.com/mcp-ratelimit/extproc/internal/config"
)

// mustParse is config.Parse for a policy the test knows to be valid.
func mustParse(t *testing.T, yaml string) *config.Policy {
	t.Helper()
	p, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("config.Parse: %v", err)
	}
	return p
}

// The users of a tenant share its bucket; another tenant has its own, and a
// user without a tenant is charged everything else.
func TestTenantBucketsAreSharedByTheTenantsUsers(t *testing.T) {
	l := New(mustParse(t, `
rateLimiting:
  perUser: {maxTokens: 10, refillPeriod: 1m}
  perTenant: {maxTokens: 3, refillPeriod: 1m}
identity: [{header: x-user-id}]
tenant: [{header: x-tenant}]
`), Options{})
	ctx := context.Background()
	req := func(user, tenant string) Request {
		h := []string{"x-user-id", user}
		if tenant != "" {
			h = append(h, "x-tenant", tenant)
		}
		return post(call("1", "search"), h...)
	}
	for _, u := range []string{"alice", "bob", "alice"} {
		if d := l.Decide(ctx, req(u, "acme")); d.Outcome != OutcomeAllowed {
			t.Fatalf("%s of acme: got %s, want allowed", u, d.Outcome)
		}
	}
	d := l.Decide(ctx, req("bob", "acme"))
	if d.Outcome != OutcomeLimited || d.Limit != "server" || d.Scope != "perTenant" {
		t.Fatalf("fourth call of acme: got %s limit %q scope %q, want limited by server perTenant", d.Outcome, d.Limit, d.Scope)
	}
	if got, want := headerValue(d.Headers, "ratelimit-policy"), `"tenant";q=3;w=60`; got != want {
		t.Errorf("ratelimit-policy = %q, want %q", got, want)
	}
	if d := l.Decide(ctx, req("carol", "globex")); d.Outcome != OutcomeAllowed {
		t.Errorf("carol of globex: got %s, want allowed (a tenant of its own)", d.Outcome)
	}
	for i := range 5 {
		if d := l.Decide(ctx, req("dave", "")); d.Outcome != OutcomeAllowed {
			t.Fatalf("dave without a tenant, call %d: got %s, want allowed (perTenant skipped)", i, d.Outcome)
		}
	}
}

// Tenant keys hash the tenant like user keys, under scopes of their own, so
// a tenant and a user of the same name never share a bucket.
func TestTenantKeysAreHashedAndTheirOwn(t *testing.T) {
	st := &recordingStore{}
	l := New(mustParse(t, `
rateLimiting:
  perUser: {maxTokens: 10, refillPeriod: 1m}
  tools:
    - name: search
      perTenant: {maxTokens: 3, refillPeriod: 1m}
identity: [{header: x-user-id}]
tenant: [{header: x-user-id}]
`), Options{Store: st})
	l.Decide(context.Background(), post(call("1", "search"), "x-user-id", "acme"))
	var keys *bucket.Keys
	want := []string{
		keys.Key("default", bucket.ScopeUser, "", "header:acme"),
		keys.Key("default", bucket.ScopeTenantTool, "search", "header:acme"),
	}
	if strings.Join(st.keys, " ") != strings.Join(want, " ") {
		t.Errorf("keys %q, want %q", st.keys, want)
	}
	for _, k := range st.keys {
		if strings.Contains(k, "acme") {
			t.Errorf("key %q holds the raw identity", k)
		}
	}
}

const plansPolicy = `
rateLimiting:
  shared: {maxTokens: 1000, refillPeriod: 1m}
  tools:
    - name: search
identity: [{header: x-user-id}]
plans:
  from: [{header: x-plan}]
  default: free
  limits:
    free:
      perUser: {maxTokens: 2, refillPeriod: 1m}
      tools:
        - name: search
          perUser: {maxTokens: 1, refillPeriod: 1m}
    pro: {perUser: {maxTokens: 5, refillPeriod: 1m}}
    internal: {}
`

// Each plan's per-user buckets apply to its users, slot by slot, and a slot
// the plan leaves out has none; users without a plan value, or with one the
// policy does not list, are on the default plan.
func TestPlansReplacePerUserBuckets(t *testing.T) {
	l := New(mustParse(t, plansPolicy), Options{})
	ctx := context.Background()
	calls := func(user, plan string) (allowed int, last Decision) {
		h := []string{"x-user-id", user}
		if plan != "" {
			h = append(h, "x-plan", plan)
		}
		for range 20 {
			last = l.Decide(ctx, post(call("1", "search"), h...))
			if !last.Allow {
				return allowed, last
			}
			allowed++
		}
		return allowed, last
	}
	for _, tc := range []struct {
		user, plan      string
		allowed         int
		wantPlan, limit string
		policy          string
	}{
		// No plan value: free, whose search bucket (1 a minute) binds.
		{"alice", "", 1, "free", "tool:search", `"user-tool@free:search";q=1;w=60`},
		// A value the policy does not list: free too.
		{"dave", "gold", 1, "free", "tool:search", `"user-tool@free:search";q=1;w=60`},
		// pro: its own 5 a minute, and no search bucket.
		{"bob", "pro", 5, "pro", "server", `"user@pro";q=5;w=60`},
		// internal: no per-user bucket at all.
		{"carol", "internal", 20, "internal", "", ""},
	} {
		n, d := calls(tc.user, tc.plan)
		if n != tc.allowed || d.Plan != tc.wantPlan || d.Limit != tc.limit {
			t.Errorf("%s on %q: %d allowed, plan %q, limit %q; want %d, %q, %q", tc.user, tc.plan, n, d.Plan, d.Limit, tc.allowed, tc.wantPlan, tc.limit)
		}
		if got := headerValue(d.Headers, "ratelimit-policy"); got != tc.policy {
			t.Errorf("%s on %q: ratelimit-policy %q, want %q", tc.user, tc.plan, got, tc.policy)
		}
	}
}

// With plans.default, a user without a listed plan is on it.
func TestDefaultPlan(t *testing.T) {
	l := New(mustParse(t, `
rateLimiting:
  shared: {maxTokens: 1000, refillPeriod: 1m}
identity: [{header: x-user-id}]
plans:
  from: [{header: x-plan}]
  default: free
  limits:
    free: {perUser: {maxTokens: 1, refillPeriod: 1m}}
    pro: {perUser: {maxTokens: 5, refillPeriod: 1m}}
`), Options{})
	ctx := context.Background()
	for _, plan := range []string{"", "gold", "free"} {
		user := "u-" + plan
		h := []string{"x-user-id", user}
		if plan != "" {
			h = append(h, "x-plan", plan)
		}
		if d := l.Decide(ctx, post(call("1", "x"), h...)); !d.Allow || d.Plan != "free" {
			t.Errorf("plan %q: first call allow %v plan %q, want allowed on free", plan, d.Allow, d.Plan)
		}
		if d := l.Decide(ctx, post(call("2", "x"), h...)); d.Allow || d.Plan != "free" {
			t.Errorf("plan %q: second call allow %v plan %q, want limited on free", plan, d.Allow, d.Plan)
		}
	}
}

// A user whose plan changes is charged the new plan's keys: they start on
// full buckets, whatever they spent on the old plan.
func TestAPlanChangeStartsOnFreshBuckets(t *testing.T) {
	l := New(mustParse(t, plansPolicy), Options{})
	ctx := context.Background()
	if d := l.Decide(ctx, post(call("1", "x"), "x-user-id", "erin")); !d.Allow {
		t.Fatalf("first call: got %s, want allowed", d.Outcome)
	}
	l.Decide(ctx, post(call("2", "x"), "x-user-id", "erin"))
	if d := l.Decide(ctx, post(call("3", "x"), "x-user-id", "erin")); d.Allow {
		t.Fatalf("third call on no plan: allowed, want limited (2 a minute)")
	}
	for i := range 5 {
		if d := l.Decide(ctx, post(call("4", "x"), "x-user-id", "erin", "x-plan", "pro")); !d.Allow {
			t.Fatalf("call %d after the upgrade: got %s, want allowed (pro's own bucket)", i, d.Outcome)
		}
	}
	st := &recordingStore{}
	New(mustParse(t, plansPolicy), Options{Store: st}).Decide(ctx, post(call("5", "x"), "x-user-id", "erin", "x-plan", "pro"))
	var keys *bucket.Keys
	if want := keys.PlanKey("default", bucket.ScopeUser, "", "header:erin", "pro", 0); len(st.keys) != 2 || st.keys[1] != want {
		t.Errorf("keys %q, want the shared key and %q", st.keys, want)
	}
}

// A plan's tenant and tool buckets, and several windows in a plan's slot.
func TestPlanTenantToolAndWindowBuckets(t *testing.T) {
	st := &recordingStore{}
	l := New(mustParse(t, `
rateLimiting:
  shared: {maxTokens: 1000, refillPeriod: 1m}
  tools:
    - name: search
      cost: 2
identity: [{header: x-user-id}]
tenant: [{header: x-tenant}]
plans:
  from: [{header: x-plan}]
  default: team
  limits:
    team:
      perTenant: {maxTokens: 100, refillPeriod: 1m}
      tools:
        - name: search
          perUser:
            - {maxTokens: 10, refillPeriod: 1m}
            - {maxTokens: 200, refillPeriod: 24h}
`), Options{Store: st})
	d := l.Decide(context.Background(), post(call("1", "search"), "x-user-id", "alice", "x-tenant", "acme"))
	if !d.Allow || d.Plan != "team" {
		t.Fatalf("got allow %v plan %q, want allowed on team", d.Allow, d.Plan)
	}
	var keys *bucket.Keys
	want := []string{
		keys.Key("default", bucket.ScopeShared, "", ""),
		keys.PlanKey("default", bucket.ScopeUserTool, "search", "header:alice", "team", 0),
		keys.PlanKey("default", bucket.ScopeUserTool, "search", "header:alice", "team", 1),
		keys.PlanKey("default", bucket.ScopeTenant, "", "header:acme", "team", 0),
	}
	if strings.Join(st.keys, " ") != strings.Join(want, " ") {
		t.Errorf("keys:\n got %q\nwant %q", st.keys, want)
	}
}

// A reload that adds plans applies to the next decision, and one that
// removes them returns every user to rateLimiting's buckets.
func TestReloadAddsAndRemovesPlans(t *testing.T) {
	without := mustParse(t, `
rateLimiting:
  perUser: {maxTokens: 1, refillPeriod: 1m}
identity: [{header: x-user-id}]
`)
	l := New(without, Options{})
	ctx := context.Background()
	pro := func(id string) Decision {
		return l.Decide(ctx, post(call(id, "x"), "x-user-id", "gina", "x-plan", "pro"))
	}
	if d := pro("1"); !d.Allow || d.Plan != "" {
		t.Fatalf("before plans: allow %v plan %q, want allowed on no plan", d.Allow, d.Plan)
	}
	if d := pro("2"); d.Allow {
		t.Fatalf("before plans: second call allowed, want limited (1 a minute)")
	}
	l.SetPolicy(mustParse(t, plansPolicy))
	if d := pro("3"); !d.Allow || d.Plan != "pro" {
		t.Errorf("after adding plans: allow %v plan %q, want allowed on pro", d.Allow, d.Plan)
	}
	l.SetPolicy(without)
	if d := pro("4"); d.Allow || d.Plan != "" {
		t.Errorf("after removing plans: allow %v plan %q, want limited on no plan", d.Allow, d.Plan)
	}
}
