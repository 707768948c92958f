package integration

import (
	"net/http"
	"strings"
	"testing"

	"github.com/mcp-ratelimit/extproc/test/integration/harness"
	"github.com/mcp-ratelimit/extproc/test/mcpserver/demo"
)

// Two windows on one per-user slot, through Envoy: every answer's
// ratelimit-policy lists both; an allowed answer's ratelimit is the emptier
// window's; a rejection's is the binding one's, the window with the longest
// wait, named in the item ("user" for the minute, "user#w1" for the day) and
// timed by retry-after.
func TestSeveralWindowsPerSlotThroughEnvoy(t *testing.T) {
	env := start(t, `server: it
rateLimiting:
  perUser:
    - {maxTokens: 2, refillPeriod: 1m}
    - {maxTokens: 3, refillPeriod: 24h}
  tools:
    - name: search
      cost: 2
identity:
  - header: x-user-id
`, harness.Options{})
	raw := newRawClient(t, env.URL)
	const bothWindows = `"user";q=2;w=60, "user#w1";q=3;w=86400`
	type want struct {
		status                int
		ratelimit, retryAfter string
		limit                 string // data.limit and data.scope "perUser" of a rejection
	}
	check := func(what string, r reply, w want) {
		t.Helper()
		if r.Status != w.status {
			t.Fatalf("%s: status %d (body %q), want %d", what, r.Status, r.Body, w.status)
		}
		if got := r.Header.Values("Ratelimit-Policy"); strings.Join(got, "|") != bothWindows {
			t.Errorf("%s: ratelimit-policy %q, want %q", what, got, bothWindows)
		}
		if got := r.Header.Values("Ratelimit"); strings.Join(got, "|") != w.ratelimit {
			t.Errorf("%s: ratelimit %q, want %q", what, got, w.ratelimit)
		}
		if got := r.Header.Get("Retry-After"); got != w.retryAfter {
			t.Errorf("%s: retry-after %q, want %q", what, got, w.retryAfter)
		}
		if w.limit != "" {
			wantData := `"retryAfterSeconds":` + w.retryAfter + `,"retryAfterMs":N,"limit":"` + w.limit + `","scope":"perUser"`
			if !strings.Contains(maskRetryAfterMs(r.Body), wantData) {
				t.Errorf("%s: body %s, want data with %s", what, r.Body, wantData)
			}
		}
	}
	alice, bob := map[string]string{"x-user-id": "alice"}, map[string]string{"x-user-id": "bob"}

	// alice's echo costs 1: the minute window empties first (1 of 2 left
	// against 2 of 3), and refuses the third call while the day still has one.
	check("alice 1", raw.post(callBody("1", demo.ToolEcho), alice), want{status: http.StatusOK, ratelimit: `"user";r=1;t=30`})
	check("alice 2", raw.post(callBody("2", demo.ToolEcho), alice), want{status: http.StatusOK, ratelimit: `"user";r=0;t=60`})
	check("alice 3", raw.post(callBody("3", demo.ToolEcho), alice),
		want{status: http.StatusTooManyRequests, ratelimit: `"user";r=0;t=30`, retryAfter: "30", limit: "server"})

	// bob's search costs 2: after one call the minute is empty (a minute to
	// hold 2 again) and the day holds 1 (a third of a day to hold 2): the day
	// window binds.
	check("bob 1", raw.post(callBody("4", demo.ToolSearch), bob), want{status: http.StatusOK, ratelimit: `"user";r=0;t=60`})
	check("bob 2", raw.post(callBody("5", demo.ToolSearch), bob),
		want{status: http.StatusTooManyRequests, ratelimit: `"user#w1";r=1;t=28800`, retryAfter: "28800", limit: "server"})
}
