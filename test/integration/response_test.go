package integration

import (
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
