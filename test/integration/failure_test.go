package integration

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/mcp-ratelimit/extproc/test/integration/harness"
	"github.com/mcp-ratelimit/extproc/test/mcpserver/demo"
)

func failurePolicy(mode string) string {
	return `server: it
rateLimiting:
  shared: {maxTokens: 2, refillPeriod: 1h}
failureMode: ` + mode + `
`
}

func TestRedisOutageFailsOpenAndLimitsApplyAgainWhenItIsBack(t *testing.T) {
	env := start(t, failurePolicy("open"), harness.Options{})
	raw := newRawClient(t, env.URL)
	checkPassed(t, "call 1", raw.call("1", demo.ToolEcho))
	// No call was denied yet, so nothing is in the denial cache: every decision
	// during the outage asks Redis and fails open.

	if err := env.Redis.Stop(); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		id := strconv.Itoa(10 + i)
		if r := raw.call(id, demo.ToolEcho); r.Status != http.StatusOK {
			t.Errorf("call %s with Redis down, failureMode open: got %d %q, want 200", id, r.Status, r.Body)
		}
	}
	if got := env.Upstream.Calls(demo.ToolEcho); got != 6 {
		t.Errorf("upstream echo calls: got %d, want 6 (1 before the outage, 5 during)", got)
	}
	if got := scrape(t, env.Extprocs[0])[`mcp_ratelimit_decisions_total{decision="failed_open",limit="",method="tools/call",server="it"}`]; got != 5 {
		t.Errorf("failed_open decisions: got %v, want 5", got)
	}

	// Redis comes back empty (no persistence): the bucket is full again, and enforced.
	if err := env.Redis.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The first decisions after the restart may still fail open while the client
	// reconnects; wait for the first rejection, bounded by the call count.
	limited := false
	for i := range 50 {
		id := strconv.Itoa(100 + i)
		if r := raw.call(id, demo.ToolEcho); r.Status == http.StatusTooManyRequests {
			checkRejected(t, r, id, "server", "shared")
			limited = true
			break
		}
	}
	if !limited {
		t.Fatal("50 calls after Redis came back: got no 429, want limits to apply again")
	}
}

func TestABucketKnownEmptyStaysLimitedDuringAnOutage(t *testing.T) {
	env := start(t, failurePolicy("open"), harness.Options{})
	raw := newRawClient(t, env.URL)
	for i := range 2 {
		checkPassed(t, "call", raw.call(strconv.Itoa(i), demo.ToolEcho))
	}
	checkRejected(t, raw.call("4", demo.ToolEcho), "4", "server", "shared")
	if err := env.Redis.Stop(); err != nil {
		t.Fatal(err)
	}
	// The denial said when the bucket will hold a token again (30 min away);
	// until then the answer is known without Redis, so failing open would only
	// let through what Redis itself would reject.
	checkRejected(t, raw.call("5", demo.ToolEcho), "5", "server", "shared")
	if got := env.Upstream.Calls(demo.ToolEcho); got != 2 {
		t.Errorf("upstream echo calls: got %d, want 2", got)
	}
}

func TestRedisOutageFailClosedAnswers503(t *testing.T) {
	env := start(t, failurePolicy("closed"), harness.Options{})
	raw := newRawClient(t, env.URL)
	checkPassed(t, "call with Redis up", raw.call("1", demo.ToolEcho))
	if err := env.Redis.Stop(); err != nil {
		t.Fatal(err)
	}
	r := raw.call("2", demo.ToolEcho)
	if r.Status != http.StatusServiceUnavailable {
		t.Fatalf("failureMode closed with Redis down: got %d %q, want 503", r.Status, r.Body)
	}
	if got := r.Header.Get("Retry-After"); got != "1" {
		t.Errorf("retry-after: got %q, want 1", got)
	}
	if got := string(jsonField(r.Body, "id")); got != "2" {
		t.Errorf("503 body id: got %s, want 2 (body %s)", got, r.Body)
	}
	if errObj := string(jsonField(r.Body, "error")); !strings.Contains(errObj, `"code":-32603`) {
		t.Errorf("503 body error: got %s, want code -32603", errObj)
	}
	// Unlimited methods never consult the store, so they still pass.
	checkPassed(t, "tools/list with Redis down", raw.post(`{"jsonrpc":"2.0","id":3,"method":"tools/list"}`, nil))
	if got := env.Upstream.Calls(demo.ToolEcho); got != 1 {
		t.Errorf("upstream echo calls: got %d, want 1", got)
	}
}

// Envoy's ext_proc filter runs with failure_mode_allow: true (envoy/envoy.yaml):
// with the processor gone, Envoy lets every request through unlimited.
func TestExtprocStoppedEnvoyLetsTrafficThrough(t *testing.T) {
	env := start(t, sharedPolicy(1), harness.Options{})
	raw := newRawClient(t, env.URL)
	checkPassed(t, "call 1", raw.call("1", demo.ToolEcho))
	checkRejected(t, raw.call("2", demo.ToolEcho), "2", "server", "shared")
	for _, e := range env.Extprocs {
		if err := e.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		id := strconv.Itoa(10 + i)
		if r := raw.call(id, demo.ToolEcho); r.Status != http.StatusOK {
			t.Errorf("call %s with extproc stopped: got %d %q, want 200 (failure_mode_allow)", id, r.Status, r.Body)
		}
	}
	if got := env.Upstream.Calls(demo.ToolEcho); got != 4 {
		t.Errorf("upstream echo calls: got %d, want 4", got)
	}
}

func TestTwoReplicasShareOneRedisAndEnforceOneLimit(t *testing.T) {
	const capacity, calls, workers = 10, 40, 4
	env := start(t, sharedPolicy(capacity), harness.Options{Replicas: 2})
	raw := newRawClient(t, env.URL)

	var (
		mu       sync.Mutex
		statuses = map[int]int{}
		wg       sync.WaitGroup
	)
	ids := make(chan int, calls)
	for i := range calls {
		ids <- i + 1
	}
	close(ids)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each worker has its own connection, so Envoy spreads the streams over
			// both replicas (round robin per ext_proc stream).
			c := &rawClient{t: t, url: raw.url, session: raw.session, hc: &http.Client{}}
			for id := range ids {
				r := c.call(strconv.Itoa(id), demo.ToolEcho)
				mu.Lock()
				statuses[r.Status]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if statuses[http.StatusOK] != capacity || statuses[http.StatusTooManyRequests] != calls-capacity {
		t.Errorf("statuses: got %v, want %d×200 and %d×429", statuses, capacity, calls-capacity)
	}
	if got := env.Upstream.Calls(demo.ToolEcho); got != capacity {
		t.Errorf("upstream echo calls: got %d, want %d", got, capacity)
	}
}
