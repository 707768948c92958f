package integration

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/redis/go-redis/v9"

	"github.com/mcp-ratelimit/extproc/test/integration/harness"
	"github.com/mcp-ratelimit/extproc/test/mcpserver/demo"
)

// redisKeys lists the limiter's keys in the deployment's Redis.
func redisKeys(t *testing.T, env *harness.Env) []string {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: env.Redis.Addr})
	defer rc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	keys, err := rc.Keys(ctx, "mcprl:*").Result()
	if err != nil {
		t.Fatalf("redis KEYS: %v", err)
	}
	slices.Sort(keys)
	return keys
}

// fromAddress makes c's requests leave from ip (another loopback address), so that
// Envoy sees a different source.address.
func fromAddress(t *testing.T, c *rawClient, ip string) {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	c.hc = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
	t.Cleanup(c.hc.CloseIdleConnections)
}

// calls sends n tools/call of tool with ids from first and wants each to pass.
func callsPass(t *testing.T, c *rawClient, what string, first, n int, hdr map[string]string) {
	t.Helper()
	for i := range n {
		id := strconv.Itoa(first + i)
		checkPassed(t, fmt.Sprintf("%s, call %d", what, i+1), c.post(callBody(id, demo.ToolEcho), hdr))
	}
}

func TestHeaderAndSourceAddressIdentities(t *testing.T) {
	// The header wins when present; without it the client address Envoy saw is the user.
	env := start(t, `server: it
rateLimiting:
  perUser: {maxTokens: 2, refillPeriod: 1h}
identity:
  - header: x-user-id
  - sourceAddress: {}
`, harness.Options{})
	raw := newRawClient(t, env.URL)
	other := newRawClient(t, env.URL)
	fromAddress(t, other, "127.0.0.2")
	alice, bob := map[string]string{"X-User-Id": "alice"}, map[string]string{"X-User-Id": "bob"}

	t.Run("header: alice limited after 2", func(t *testing.T) {
		raw.t = t
		callsPass(t, raw, "alice", 10, 2, alice)
		checkRejected(t, raw.post(callBody("12", demo.ToolEcho), alice), "12", "server", "perUser")
	})
	t.Run("header: bob has his own bucket, from any address", func(t *testing.T) {
		raw.t, other.t = t, t
		callsPass(t, raw, "bob from 127.0.0.1", 20, 1, bob)
		callsPass(t, other, "bob from 127.0.0.2", 21, 1, bob)
		checkRejected(t, other.post(callBody("22", demo.ToolEcho), bob), "22", "server", "perUser")
	})
	t.Run("no header: the source address is the user", func(t *testing.T) {
		raw.t = t
		callsPass(t, raw, "127.0.0.1", 30, 2, nil)
		checkRejected(t, raw.post(callBody("32", demo.ToolEcho), nil), "32", "server", "perUser")
	})
	t.Run("no header, another address: its own bucket", func(t *testing.T) {
		other.t = t
		callsPass(t, other, "127.0.0.2", 40, 2, nil)
	})
	t.Run("a header equal to an address is a different user", func(t *testing.T) {
		raw.t = t
		// Identities are prefixed by their source before hashing.
		callsPass(t, raw, "x-user-id 127.0.0.1", 50, 1, map[string]string{"X-User-Id": "127.0.0.1"})
	})
	if got, want := env.Upstream.Calls(demo.ToolEcho), 2+2+2+2+1; got != want {
		t.Errorf("upstream echo calls: got %d, want %d", got, want)
	}
}

func TestMethodLimitBoundsResourcesReadWhileDiscoveryStaysFree(t *testing.T) {
	env := start(t, `server: it
rateLimiting:
  methods:
    - name: resources/read
      shared: {maxTokens: 2, refillPeriod: 1h}
    - name: prompts/get
      perUser: {maxTokens: 1, refillPeriod: 1h}
identity:
  - sourceAddress: {}
`, harness.Options{})
	cs := sdkSession(t, env.URL)
	ctx := t.Context()
	read := func() error {
		_, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: demo.ResourceReadme})
		return err
	}
	for i := range 2 {
		if err := read(); err != nil {
			t.Fatalf("resources/read %d under the limit: %v", i+1, err)
		}
	}
	if err := read(); err == nil || !strings.Contains(err.Error(), "Too Many Requests") {
		t.Errorf("third resources/read: got error %v, want Too Many Requests", err)
	}
	if _, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: demo.PromptGreeting}); err != nil {
		t.Fatalf("prompts/get under its perUser limit: %v", err)
	}
	if _, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: demo.PromptGreeting}); err == nil {
		t.Errorf("second prompts/get: got no error, want its perUser bucket of 1 to reject it")
	}
	// Discovery and tools/call are not in the policy: free however often.
	for i := range 5 {
		if _, err := cs.ListTools(ctx, nil); err != nil {
			t.Errorf("tools/list %d: %v", i+1, err)
		}
		if _, err := cs.ListResources(ctx, nil); err != nil {
			t.Errorf("resources/list %d: %v", i+1, err)
		}
		if res, err := sdkCall(t, cs, demo.ToolEcho); err != nil || res.IsError {
			t.Errorf("tools/call %d: got %v %+v, want success (tools/call is not limited)", i+1, err, res)
		}
	}
	for method, want := range map[string]int{"resources/read": 2, "prompts/get": 1} {
		if got := env.Upstream.MethodCalls(method); got != want {
			t.Errorf("upstream %s: got %d, want %d", method, got, want)
		}
	}
	// The rejection names the method's bucket.
	raw := newRawClient(t, env.URL)
	r := raw.post(`{"jsonrpc":"2.0","id":9,"method":"resources/read","params":{"uri":"`+demo.ResourceReadme+`"}}`, nil)
	checkRejected(t, r, "9", "method:resources/read", "shared")
	if got, want := r.Header.Get("Ratelimit-Policy"), `"method:resources/read";q=2;w=3600`; got != want {
		t.Errorf("ratelimit-policy: got %q, want %q", got, want)
	}
}

func TestToolCostChargesThatManyTokens(t *testing.T) {
	env := start(t, `server: it
rateLimiting:
  tools:
    - name: search
      cost: 3
      shared: {maxTokens: 5, refillPeriod: 1h}
`, harness.Options{})
	raw := newRawClient(t, env.URL)
	checkPassed(t, "search 1 (5 tokens, costs 3)", raw.call("1", demo.ToolSearch))
	r := raw.call("2", demo.ToolSearch)
	checkRejected(t, r, "2", "tool:search", "shared")
	// All-or-nothing: 2 tokens are left and none was taken by the denial.
	if got, want := r.Header.Get("Ratelimit"), `"tool:search";r=2;t=`+r.Header.Get("Retry-After"); got != want {
		t.Errorf("ratelimit: got %q, want %q", got, want)
	}
	// 1 token short at 5 per hour: 720 s, rounded up.
	if got := r.Header.Get("Retry-After"); got != "720" {
		t.Errorf("retry-after: got %q, want 720 (one token at 5/h)", got)
	}
	if got := env.Upstream.Calls(demo.ToolSearch); got != 1 {
		t.Errorf("upstream search calls: got %d, want 1", got)
	}
}

func TestDryRunNeverRejectsAndLogsWhatItWouldHaveRejected(t *testing.T) {
	env := start(t, `server: it
rateLimiting:
  perUser: {maxTokens: 1, refillPeriod: 1h}
identity:
  - header: x-user-id
dryRun: true
`, harness.Options{})
	raw := newRawClient(t, env.URL)
	user := map[string]string{"X-User-Id": "secret-user-7"}
	for i := range 3 {
		r := raw.post(callBody(strconv.Itoa(i+1), demo.ToolEcho), user)
		if r.Status != http.StatusOK || !strings.Contains(r.Body, `"result":{"content"`) {
			t.Errorf("call %d over the limit in dry run: got %d %q, want 200 with the server's result", i+1, r.Status, r.Body)
		}
	}
	if got := env.Upstream.Calls(demo.ToolEcho); got != 3 {
		t.Errorf("upstream echo calls: got %d, want 3", got)
	}
	ex := env.Extprocs[0]
	var line string
	err := harness.WaitFor(t.Context(), "dry-run log line", nil, func(context.Context) error {
		for l := range strings.SplitSeq(ex.Log(), "\n") {
			if strings.Contains(l, "would have rejected") {
				line = l
				return nil
			}
		}
		return fmt.Errorf("no line with %q in the extproc log", "would have rejected")
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("extproc: %s", line)
	for _, want := range []string{"limit=server", "scope=perUser", "retryAfterSeconds="} {
		if !strings.Contains(line, want) {
			t.Errorf("dry-run line %q: want it to contain %s", line, want)
		}
	}
	// Rate-limited: two would-be rejections within the throttle interval log once.
	if n := strings.Count(ex.Log(), "would have rejected"); n != 1 {
		t.Errorf("dry-run log lines for 2 would-be rejections: got %d, want 1", n)
	}
	if strings.Contains(ex.Log(), "secret-user-7") {
		t.Errorf("extproc log contains the user's identity, want none")
	}
	if got := metric(t, ex, `mcp_ratelimit_decisions_total{`, `decision="dry_run_limited"`); got != 2 {
		t.Errorf("decisions_total dry_run_limited: got %v, want 2", got)
	}
}

// metric sums the samples of the extproc's /metrics series that start with
// prefix and contain every label.
func metric(t *testing.T, ex *harness.Extproc, prefix string, labels ...string) float64 {
	t.Helper()
	var sum float64
	for series, v := range scrape(t, ex) {
		if strings.HasPrefix(series, prefix) && containsAll(series, labels) {
			sum += v
		}
	}
	return sum
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

func TestServersHaveSeparateBucketsAndUnmatchedRequestsPass(t *testing.T) {
	env := start(t, `servers:
  - server: alpha
    match: {pathPrefix: /a}
    rateLimiting:
      shared: {maxTokens: 1, refillPeriod: 1h}
  - server: beta
    match: {pathPrefix: /b}
    rateLimiting:
      shared: {maxTokens: 2, refillPeriod: 1h}
`, harness.Options{})
	tests := []struct {
		path   string
		passes int
		limit  bool // the call after passes is rejected
	}{
		{"/a", 1, true},
		{"/b", 2, true},
		{"/b/mcp", 0, true}, // same server, same bucket
		{"/c", 5, false},    // no server matches: unlimited
		{"/ab", 3, false},   // path prefixes match whole segments
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			raw := newRawClient(t, env.BaseURL+tt.path)
			callsPass(t, raw, tt.path, 1, tt.passes, nil)
			if tt.limit {
				checkRejected(t, raw.call("99", demo.ToolEcho), "99", "server", "shared")
			}
		})
	}
	want := []string{"mcprl:v1:{alpha}:shared", "mcprl:v1:{beta}:shared"}
	if got := redisKeys(t, env); !slices.Equal(got, want) {
		t.Errorf("redis keys: got %q, want %q", got, want)
	}
	if got, want := env.Upstream.Calls(demo.ToolEcho), 1+2+5+3; got != want {
		t.Errorf("upstream echo calls: got %d, want %d", got, want)
	}
	if got := metric(t, env.Extprocs[0], `mcp_ratelimit_decisions_total{`, `server="none"`, `decision="unlimited"`); got < 8 {
		t.Errorf("decisions_total unlimited: got %v, want >= 8 (the unmatched calls are counted)", got)
	}
}
