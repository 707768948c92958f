package integration

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mcp-ratelimit/extproc/test/integration/harness"
	"github.com/mcp-ratelimit/extproc/test/mcpserver/demo"
)

// The limiter's log lines for the store going down and coming back
// (internal/limiter), each logged once per state change.
const (
	storeDownMsg = "rate-limit store failed; applying failureMode until it answers"
	storeUpMsg   = "rate-limit store is answering again"
)

// countRecords counts ex's JSON log records whose msg is msg.
func countRecords(ex *harness.Extproc, msg string) int {
	n := 0
	for _, r := range ex.LogRecords() {
		if r["msg"] == msg {
			n++
		}
	}
	return n
}

// statuses sends tools/call of echo with ids first, first+1, ... and returns the
// HTTP statuses in order.
func statuses(c *rawClient, first, n int) []int {
	c.t.Helper()
	var out []int
	for i := range n {
		out = append(out, c.call(strconv.Itoa(first+i), demo.ToolEcho).Status)
	}
	return out
}

func TestFailureModeLocalLimitsPerReplicaWhileRedisIsDownAndLogsOnlyStateChanges(t *testing.T) {
	env := start(t, failurePolicy("local"), harness.Options{ExtprocLogFormat: "json"})
	ex := env.Extprocs[0]
	raw := newRawClient(t, env.URL)
	const ok, limited = http.StatusOK, http.StatusTooManyRequests

	// One call on Redis, leaving its bucket non-empty: a bucket known to be empty
	// may be denied without asking Redis, and this test is about asking it.
	if got, want := statuses(raw, 1, 1), []int{ok}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Redis up: got statuses %v, want %v", got, want)
	}

	if err := env.Redis.Stop(); err != nil {
		t.Fatal(err)
	}
	// The replica's own buckets start full: maxTokens calls pass, then the same
	// rejection as with Redis.
	if got, want := statuses(raw, 10, 8), []int{ok, ok, limited, limited, limited, limited, limited, limited}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Redis down, failureMode local: got statuses %v, want %v", got, want)
	}
	checkRejected(t, raw.call("18", demo.ToolEcho), "18", "server", "shared")
	if got := env.Upstream.Calls(demo.ToolEcho); got != 3 {
		t.Errorf("upstream echo calls: got %d, want 3 (1 on Redis, 2 on the local buckets)", got)
	}
	if got := countRecords(ex, storeDownMsg); got != 1 {
		t.Errorf("%q records after 9 calls with Redis down: got %d, want 1", storeDownMsg, got)
	}

	if err := env.Redis.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The local bucket is empty for an hour, so a call that passes was decided by
	// Redis (back empty, i.e. full buckets). Until the client has reconnected,
	// calls still go to the local buckets and are rejected: bounded retries.
	back := false
	for i := range 50 {
		if raw.call(strconv.Itoa(100+i), demo.ToolEcho).Status == ok {
			back = true
			break
		}
	}
	if !back {
		t.Fatal("50 calls after Redis came back: all rejected, want Redis to decide again")
	}
	if got, want := statuses(raw, 200, 2), []int{ok, limited}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Redis back: got statuses %v, want %v (the shared Redis bucket's second token, then empty)", got, want)
	}
	for _, c := range []struct {
		msg  string
		want int
	}{{storeDownMsg, 1}, {storeUpMsg, 1}} {
		if got := countRecords(ex, c.msg); got != c.want {
			t.Errorf("%q records over one outage: got %d, want %d", c.msg, got, c.want)
		}
	}
	// Nothing else may log per request while the store is down.
	warnings := 0
	for _, r := range ex.LogRecords() {
		if r["level"] == "WARN" || r["level"] == "ERROR" {
			warnings++
		}
	}
	if warnings != 1 {
		// go-redis's pool logs a failed dial through bucket.RouteRedisLogs at
		// debug level, not warn: the log says when the store goes down and
		// comes back, not once per request.
		t.Errorf("WARN and ERROR records over one outage: got %d, want 1 (the store going down)\n%s", warnings, ex.Log())
	}
}

func TestSlowRedisCostsEachDecisionAtMostTheDeadline(t *testing.T) {
	const calls = 5
	policy := `server: it
rateLimiting:
  shared: {maxTokens: 100, refillPeriod: 1h}
failureMode: open
redis:
  timeout: 50ms
`
	var proxy *harness.DelayProxy
	env := start(t, policy, harness.Options{
		ExtprocLogFormat: "json",
		RedisAddrForExtproc: func(addr string) string {
			proxy = harness.StartDelayProxy(t, addr)
			return proxy.Addr
		},
	})
	ex := env.Extprocs[0]
	raw := newRawClient(t, env.URL)
	checkPassed(t, "call through a fast proxy", raw.call("1", demo.ToolEcho))

	// Six times the deadline, and well under Envoy's message_timeout (500 ms), so
	// that only extproc's own deadline can explain a quick answer.
	proxy.SetDelay(300 * time.Millisecond)
	for i := range calls {
		checkPassed(t, "call with Redis slow", raw.call(strconv.Itoa(10+i), demo.ToolEcho))
	}

	m := scrape(t, ex)
	for _, c := range []struct {
		series string
		want   float64
	}{
		{`mcp_ratelimit_decisions_total{decision="allowed",limit="",method="tools/call",server="it"}`, 1},
		{`mcp_ratelimit_decisions_total{decision="failed_open",limit="",method="tools/call",server="it"}`, calls},
		{`mcp_ratelimit_store_errors_total{kind="timeout"}`, calls},
		{`mcp_ratelimit_store_errors_total{kind="error"}`, 0},
	} {
		if got := m[c.series]; got != c.want {
			t.Errorf("%s: got %v, want %v", c.series, got, c.want)
		}
	}
	// Every decision took less than the 300 ms the replies were held: the
	// deadline cut them short (histogram bucket le=0.25 holds them all).
	total := m["mcp_ratelimit_decision_duration_seconds_count"]
	if under := m[`mcp_ratelimit_decision_duration_seconds_bucket{le="0.25"}`]; under != total || total == 0 {
		t.Errorf("decisions under 250 ms: got %v of %v, want all", under, total)
	}
	// Envoy got every answer from extproc in time: its message_timeout never fired
	// and it never had to apply failure_mode_allow itself.
	for _, stat := range []string{"http.mcp.ext_proc.message_timeouts", "http.mcp.ext_proc.failure_mode_allowed"} {
		if got := envoyStat(t, env.Envoy, stat); got != 0 {
			t.Errorf("envoy %s: got %d, want 0", stat, got)
		}
	}
	if got := countRecords(ex, storeDownMsg); got != 1 {
		t.Errorf("%q records after %d slow calls: got %d, want 1", storeDownMsg, calls, got)
	}

	proxy.SetDelay(0)
	checkPassed(t, "call after Redis is fast again", raw.call("20", demo.ToolEcho))
	if got := countRecords(ex, storeUpMsg); got != 1 {
		t.Errorf("%q records once Redis is fast again: got %d, want 1", storeUpMsg, got)
	}
	entries, err := env.Envoy.WaitAccessLog(t.Context(), calls, func(e map[string]any) bool {
		return e["mcp_decision"] == "failed_open"
	})
	if err != nil {
		t.Error(err)
	}
	for _, e := range entries {
		if e["status"] != float64(http.StatusOK) || e["details"] != "via_upstream" {
			t.Errorf("access log of a failed-open call: got status %v details %v, want 200 via_upstream", e["status"], e["details"])
		}
	}
}

// envoyStat reads one counter from Envoy's admin /stats.
func envoyStat(t *testing.T, e *harness.Envoy, name string) int {
	t.Helper()
	resp, err := http.Get("http://" + e.AdminAddr + "/stats?filter=" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ": ")
		if ok && k == name {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("envoy stat %s: %v", name, err)
			}
			return n
		}
	}
	t.Fatalf("envoy stat %s: not in /stats", name)
	return 0
}
