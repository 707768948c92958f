package limiter

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/mcp-ratelimit/extproc/internal/config"
)

// TestRateLimitedCode: errorCodeFor2026 -32023, the RateLimited code of the
// draft SEP-3304, gets the draft's data shape and the ratelimit-limit and
// ratelimit-remaining headers; older clients keep -32029 and the usual shape.
func TestRateLimitedCode(t *testing.T) {
	l := New(server(func(s *config.Server) {
		s.Tools["search"] = config.Tool{Name: "search", Cost: 1, PerUser: []config.Bucket{{MaxTokens: 2, RefillPeriod: 10 * time.Second}}}
		code := -32023
		s.Response.ErrorCodeFor2026 = &code
	}), Options{})
	ctx := context.Background()
	const v2026, old = "2026-07-28", "2025-06-18"
	if d := l.Decide(ctx, post(call("1", "search"), "x-user-id", "alice")); !d.Allow {
		t.Fatalf("first call: got rejected %+v, want allowed", d)
	}
	// A batch of two calls while the bucket holds one: remaining 1.
	batch := []byte(`[` + string(call("2", "search")) + `,` + string(call("3", "search")) + `]`)
	d := l.Decide(ctx, post(batch, "x-user-id", "alice", "mcp-protocol-version", v2026))
	wantBody := `[{"jsonrpc":"2.0","id":2,"error":{"code":-32023,"message":"Rate limit exceeded","data":{"retryAfterMs":5000,"limit":2,"remaining":1,"retryAfterSeconds":5,"bucket":"tool:search","scope":"perUser"}}},` +
		`{"jsonrpc":"2.0","id":3,"error":{"code":-32023,"message":"Rate limit exceeded","data":{"retryAfterMs":5000,"limit":2,"remaining":1,"retryAfterSeconds":5,"bucket":"tool:search","scope":"perUser"}}}]`
	if d.Allow || maskRetryAfterMs(string(d.Body)) != maskRetryAfterMs(wantBody) {
		t.Errorf("batch: got allow %v body\n%s\nwant\n%s", d.Allow, d.Body, wantBody)
	}
	if d.Status != 429 {
		t.Errorf("status: got %d, want 429", d.Status)
	}
	wantHeaders := []Header{
		{"content-type", "application/json"},
		{"retry-after", "5"},
		{"ratelimit-policy", `"user-tool:search";q=2;w=10`},
		{"ratelimit", `"user-tool:search";r=1;t=5`},
		{"ratelimit-limit", "2"},
		{"ratelimit-remaining", "1"},
	}
	if diff := cmp.Diff(wantHeaders, d.Headers); diff != "" {
		t.Errorf("headers (-want +got):\n%s", diff)
	}
	if d := l.Decide(ctx, post(call("4", "search"), "x-user-id", "alice")); !d.Allow {
		t.Fatalf("call taking the last token: got rejected %+v, want allowed", d)
	}

	d = l.Decide(ctx, post(call("5", "search"), "x-user-id", "alice", "mcp-protocol-version", v2026))
	wantBody = `{"jsonrpc":"2.0","id":5,"error":{"code":-32023,"message":"Rate limit exceeded","data":{"retryAfterMs":5000,"limit":2,"remaining":0,"retryAfterSeconds":5,"bucket":"tool:search","scope":"perUser"}}}`
	if maskRetryAfterMs(string(d.Body)) != maskRetryAfterMs(wantBody) {
		t.Errorf("single call: got body\n%s\nwant\n%s", d.Body, wantBody)
	}
	if got := headerValue(d.Headers, "ratelimit-remaining"); got != "0" {
		t.Errorf("ratelimit-remaining: got %q, want 0", got)
	}

	d = l.Decide(ctx, post(call("6", "search"), "x-user-id", "alice", "mcp-protocol-version", old))
	wantBody = `{"jsonrpc":"2.0","id":6,"error":{"code":-32029,"message":"Rate limit exceeded","data":{"retryAfterSeconds":5,"retryAfterMs":5000,"limit":"tool:search","scope":"perUser"}}}`
	if maskRetryAfterMs(string(d.Body)) != maskRetryAfterMs(wantBody) {
		t.Errorf("older protocol: got body\n%s\nwant\n%s", d.Body, wantBody)
	}
	for _, h := range []string{"ratelimit-limit", "ratelimit-remaining"} {
		if got := headerValue(d.Headers, h); got != "" {
			t.Errorf("older protocol: got %s %q, want none", h, got)
		}
	}
}

func headerValue(hs []Header, name string) string {
	for _, h := range hs {
		if h.Name == name {
			return h.Value
		}
	}
	return ""
}
