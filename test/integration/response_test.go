package integration

import (
	"strconv"
	"strings"
	"testing"

	"github.com/mcp-ratelimit/extproc/test/integration/harness"
	"github.com/mcp-ratelimit/extproc/test/mcpserver/demo"
)

// MCP 2026-07-28 reserves -32020..-32099 for the specification: errorCodeFor2026
// answers clients announcing that revision or later with another code, and
// everyone else with errorCode.
func TestErrorCodeFor2026FollowsTheProtocolVersionHeader(t *testing.T) {
	env := start(t, sharedPolicy(1)+"response: {errorCodeFor2026: 429}\n", harness.Options{})
	raw := newRawClient(t, env.URL)
	checkPassed(t, "first call", raw.call("1", demo.ToolEcho))
	tests := []struct {
		version string // MCP-Protocol-Version; "" sends none
		code    string
	}{
		{"2026-07-28", "429"},
		{"2027-01-15", "429"},
		{"2025-11-25", "-32029"},
		{"2025-06-18", "-32029"},
		{"", "-32029"},
		{"latest", "-32029"},
	}
	for _, tt := range tests {
		name := "version " + tt.version
		if tt.version == "" {
			name = "empty version header"
		}
		t.Run(name, func(t *testing.T) {
			raw.t = t
			hdr := map[string]string{"Mcp-Protocol-Version": tt.version}
			r := raw.post(callBody("2", demo.ToolEcho), hdr)
			if r.Status != 429 {
				t.Fatalf("status: got %d %q, want 429", r.Status, r.Body)
			}
			checkRateLimitHeaders(t, r)
			if want := `"code":` + tt.code + `,`; !strings.Contains(r.Body, want) {
				t.Errorf("body: got %s, want it to contain %s", r.Body, want)
			}
		})
	}
}

// errorCodeFor2026 -32023 is the RateLimited code of the draft SEP-3304: a
// client announcing 2026-07-28 gets the draft's data shape and the
// ratelimit-limit and ratelimit-remaining headers.
func TestRateLimitedCodeFor2026(t *testing.T) {
	env := start(t, sharedPolicy(1)+"response: {errorCodeFor2026: -32023}\n", harness.Options{})
	raw := newRawClient(t, env.URL)
	checkPassed(t, "first call", raw.call("1", demo.ToolEcho))
	r := raw.post(callBody("2", demo.ToolEcho), map[string]string{"Mcp-Protocol-Version": "2026-07-28"})
	if r.Status != 429 {
		t.Fatalf("status: got %d %q, want 429", r.Status, r.Body)
	}
	checkRateLimitHeaders(t, r)
	secs, _ := strconv.Atoi(r.Header.Get("Retry-After"))
	want := `{"jsonrpc":"2.0","id":2,"error":{"code":-32023,"message":"Rate limit exceeded","data":{"retryAfterMs":` + strconv.Itoa(secs*1000) +
		`,"limit":1,"remaining":0,"retryAfterSeconds":` + strconv.Itoa(secs) + `,"bucket":"server","scope":"shared"}}}`
	if got := strings.TrimSpace(r.Body); maskRetryAfterMs(got) != maskRetryAfterMs(want) {
		t.Errorf("body:\n got %s\nwant %s", got, want)
	}
	checkRetryAfterMs(t, r.Body, secs)
	for h, want := range map[string]string{"Ratelimit-Limit": "1", "Ratelimit-Remaining": "0"} {
		if got := r.Header.Get(h); got != want {
			t.Errorf("%s: got %q, want %q", h, got, want)
		}
	}
}
