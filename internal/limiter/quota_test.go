package limiter

import (
	"context"
	"testing"
	"time"

	"github.com/mcp-ratelimit/extproc/internal/bucket"
	"github.com/mcp-ratelimit/extproc/internal/config"
	"github.com/mcp-ratelimit/extproc/internal/mcp"
)

func TestAllowedAnswerCarriesTheEmptiestBucket(t *testing.T) {
	policy := func(on bool) *config.Policy {
		return server(func(s *config.Server) {
			s.Shared = perMinute(10)
			s.Tools["search"] = config.Tool{Name: "search", Cost: 1, PerUser: []config.Bucket{{MaxTokens: 2, RefillPeriod: 10 * time.Second}}}
			s.Response.HeadersOnAllowed = on
		})
	}
	req := post(call("1", "search"), "x-user-id", "alice")

	l := New(policy(true), Options{})
	// After one call the server bucket holds 9 of 10 and alice's search
	// bucket 1 of 2: the latter is the emptiest, full again in 5 seconds.
	d := l.Decide(context.Background(), req)
	if d.Outcome != OutcomeAllowed {
		t.Fatalf("outcome %s, want allowed", d.Outcome)
	}
	if want := `"user-tool:search";q=2;w=10`; quotaPolicy(d) != want {
		t.Errorf("QuotaPolicy = %q, want %q", quotaPolicy(d), want)
	}
	if want := `"user-tool:search";r=1;t=5`; d.Quota.RateLimit() != want {
		t.Errorf("Quota = %q, want %q", d.Quota.RateLimit(), want)
	}
	d = l.Decide(context.Background(), req)
	if want := `"user-tool:search";r=0;t=10`; d.Outcome != OutcomeAllowed || d.Quota.RateLimit() != want {
		t.Errorf("second call: outcome %s Quota %q, want allowed %q", d.Outcome, d.Quota.RateLimit(), want)
	}
	// A rejection is unchanged: its headers, no quota fields.
	d = l.Decide(context.Background(), req)
	if d.Outcome != OutcomeLimited || d.Quota.RateLimit() != "" || quotaPolicy(d) != "" {
		t.Errorf("rejection: outcome %s Quota %q QuotaPolicy %q, want limited and none", d.Outcome, d.Quota.RateLimit(), quotaPolicy(d))
	}
	// Another user: the server bucket (7 of 10 left) against bob's 1 of 2.
	d = l.Decide(context.Background(), post(call("2", "search"), "x-user-id", "bob"))
	if want := `"user-tool:search";r=1;t=5`; d.Quota.RateLimit() != want {
		t.Errorf("bob: Quota = %q, want %q", d.Quota.RateLimit(), want)
	}
	// An unlimited method charges nothing and says nothing.
	d = l.Decide(context.Background(), post([]byte(`{"jsonrpc":"2.0","id":3,"method":"tools/list"}`)))
	if d.Quota.RateLimit() != "" || quotaPolicy(d) != "" {
		t.Errorf("unlimited: Quota %q QuotaPolicy %q, want none", d.Quota.RateLimit(), quotaPolicy(d))
	}

	off := New(policy(false), Options{})
	d = off.Decide(context.Background(), req)
	if d.Outcome != OutcomeAllowed || d.Quota.RateLimit() != "" || quotaPolicy(d) != "" {
		t.Errorf("headersOnAllowed false: outcome %s Quota %q QuotaPolicy %q, want allowed and none", d.Outcome, d.Quota.RateLimit(), quotaPolicy(d))
	}
}

func TestAllowedQuotaTieIsTheFirstCharge(t *testing.T) {
	l := New(server(func(s *config.Server) {
		s.Shared = perMinute(4)
		s.PerUser = perMinute(4)
	}), Options{})
	d := l.Decide(context.Background(), post(call("1", "x"), "x-user-id", "alice"))
	// Both hold 3 of 4: the first charge, the server's shared bucket, wins.
	if want := `"shared";r=3;t=15`; d.Quota.RateLimit() != want {
		t.Errorf("Quota = %q, want %q", d.Quota.RateLimit(), want)
	}
}

func TestUntilFull(t *testing.T) {
	for _, c := range []struct {
		max, remaining int64
		period         time.Duration
		want           int64
	}{
		{10, 10, time.Minute, 0},
		{10, 9, time.Minute, 6},
		{3, 2, 10 * time.Second, 4},
		{1_000_000_000, 0, 744 * time.Hour, 744 * 3600},
		{1_000_000_000, 1, 744 * time.Hour, 744 * 3600},
		{3, 2, time.Hour, 1200},
		{3, 1, time.Hour, 2400},
	} {
		if got := untilFull(bucket.Limit{MaxTokens: c.max, RefillPeriod: c.period}, c.remaining); got != c.want {
			t.Errorf("untilFull(%d/%d per %s) = %d, want %d", c.remaining, c.max, c.period, got, c.want)
		}
	}
}

// quotaPolicy is d's ratelimit-policy value for an allowed answer; "" for none.
func quotaPolicy(d Decision) string {
	if d.Quota.Header == nil {
		return ""
	}
	return d.Quota.Header.Policy
}

// An allowed answer of a slot with two windows lists both in its policy and
// reports the emptier; the fixed parts are the compiled ones, shared by every
// answer, and equal to what a bucket compiled without them gets.
func TestAllowedQuotaOfSeveralWindows(t *testing.T) {
	l := New(server(func(s *config.Server) {
		s.PerUser = []config.Bucket{{MaxTokens: 2, RefillPeriod: time.Minute}, {MaxTokens: 3, RefillPeriod: 24 * time.Hour}}
	}), Options{})
	req := post(call("1", "x"), "x-user-id", "alice")
	const both = `"user";q=2;w=60, "user#w1";q=3;w=86400`
	d1 := l.Decide(context.Background(), req)
	if d1.Outcome != OutcomeAllowed || quotaPolicy(d1) != both || d1.Quota.RateLimit() != `"user";r=1;t=30` {
		t.Fatalf("first call: %s %q %q, want allowed %q %q", d1.Outcome, quotaPolicy(d1), d1.Quota.RateLimit(), both, `"user";r=1;t=30`)
	}
	d2 := l.Decide(context.Background(), req)
	if d2.Quota.Header != d1.Quota.Header {
		t.Error("two answers of one bucket have two QuotaHeaders, want the compiled one shared")
	}
	cs := l.policy.Load().servers[0]
	for _, b := range cs.rules.unknownTool.perUser {
		var qs []mcp.Quota
		for _, w := range b.info.slot {
			qs = append(qs, mcp.Quota{Policy: w.info.policy, Max: w.limit.MaxTokens, Window: windowSeconds(w.limit)})
		}
		built := QuotaHeader{Policy: mcp.PolicyHeader(qs...), Name: mcp.SFString(b.info.policy)}
		if built != *b.info.quota {
			t.Errorf("%s: built on the spot %+v, compiled %+v", b.info.policy, built, *b.info.quota)
		}
	}
}
