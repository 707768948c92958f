package integration

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mcp-ratelimit/extproc/test/integration/harness"
	"github.com/mcp-ratelimit/extproc/test/mcpserver/demo"
)

// sharedPolicy limits every tools/call together to n per hour: nothing refills
// during a test, so counts are exact.
func sharedPolicy(n int) string {
	return `server: it
rateLimiting:
  shared: {maxTokens: ` + strconv.Itoa(n) + `, refillPeriod: 1h}
`
}

// searchPolicy limits the tool search alone, to n calls an hour.
func searchPolicy(n int) string {
	return `server: it
rateLimiting:
  tools:
    - name: search
      shared: {maxTokens: ` + strconv.Itoa(n) + `, refillPeriod: 1h}
`
}

func TestCallsUnderTheLimitReachTheUpstreamAndTheNextIsRejected(t *testing.T) {
	env := start(t, sharedPolicy(3), harness.Options{})
	cs := sdkSession(t, env.URL)
	for i := range 3 {
		res, err := sdkCall(t, cs, demo.ToolEcho)
		if err != nil || res.IsError {
			t.Fatalf("call %d under the limit: got error %v (result %+v), want success", i+1, err, res)
		}
	}
	if got := env.Upstream.Calls(demo.ToolEcho); got != 3 {
		t.Errorf("upstream echo calls: got %d, want 3", got)
	}

	raw := newRawClient(t, env.URL)
	tests := []struct {
		name, id string
	}{
		{"numeric id", "7"},
		{"string id", `"req-7"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw.t = t
			checkRejected(t, raw.call(tt.id, demo.ToolEcho), tt.id, "server", "shared")
		})
	}
	if got := env.Upstream.Calls(demo.ToolEcho); got != 3 {
		t.Errorf("upstream echo calls after rejections: got %d, want 3 (rejected calls must not reach it)", got)
	}
}

func TestUnlimitedRequestsPassWhenTheBucketIsEmpty(t *testing.T) {
	env := start(t, sharedPolicy(1), harness.Options{})
	raw := newRawClient(t, env.URL)
	checkPassed(t, "first tools/call", raw.call("1", demo.ToolEcho))
	checkRejected(t, raw.call("2", demo.ToolEcho), "2", "server", "shared")

	tests := []struct {
		name   string
		method string
		body   string
	}{
		{"initialize", http.MethodPost, `{"jsonrpc":"2.0","id":10,"method":"initialize","params":{"protocolVersion":"` + protocolVersion + `","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`},
		{"tools/list", http.MethodPost, `{"jsonrpc":"2.0","id":11,"method":"tools/list"}`},
		{"ping", http.MethodPost, `{"jsonrpc":"2.0","id":12,"method":"ping"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw.t = t
			checkPassed(t, tt.name, raw.do(tt.method, tt.body, nil))
		})
	}
	t.Run("GET opens the SSE stream", func(t *testing.T) {
		// The stream stays open: read only the status and headers.
		req, err := http.NewRequest(http.MethodGet, env.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept", "text/event-stream")
		req.Header.Set("Mcp-Session-Id", raw.session)
		req.Header.Set("Mcp-Protocol-Version", protocolVersion)
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET: got %d, want 200", resp.StatusCode)
		}
		if got := resp.Header.Get("Content-Type"); got != "text/event-stream" {
			t.Errorf("GET content-type: got %q, want text/event-stream", got)
		}
	})
	t.Run("DELETE ends the session", func(t *testing.T) {
		raw.t = t
		if r := raw.do(http.MethodDelete, "", nil); r.Status != http.StatusNoContent && r.Status != http.StatusOK {
			t.Errorf("DELETE: got %d %q, want 204 or 200 from the MCP server", r.Status, r.Body)
		}
	})
}

func TestToolBucketLimitsOnlyItsTool(t *testing.T) {
	env := start(t, searchPolicy(2), harness.Options{})
	raw := newRawClient(t, env.URL)
	checkPassed(t, "search 1", raw.call("1", demo.ToolSearch))
	checkPassed(t, "search 2", raw.call("2", demo.ToolSearch))
	checkRejected(t, raw.call("3", demo.ToolSearch), "3", "tool:search", "shared")
	for i := range 5 {
		checkPassed(t, "echo "+strconv.Itoa(i), raw.call(strconv.Itoa(10+i), demo.ToolEcho))
	}
	if got, want := env.Upstream.Calls(demo.ToolSearch), 2; got != want {
		t.Errorf("upstream search calls: got %d, want %d", got, want)
	}
	if got, want := env.Upstream.Calls(demo.ToolEcho), 5; got != want {
		t.Errorf("upstream echo calls: got %d, want %d", got, want)
	}
}

func TestSharedBucketSpansTools(t *testing.T) {
	env := start(t, sharedPolicy(3), harness.Options{})
	raw := newRawClient(t, env.URL)
	checkPassed(t, "echo", raw.call("1", demo.ToolEcho))
	checkPassed(t, "search", raw.call("2", demo.ToolSearch))
	checkPassed(t, "slow", raw.call("3", demo.ToolSlow))
	checkRejected(t, raw.call("4", demo.ToolSearch), "4", "server", "shared")
	checkRejected(t, raw.call("5", demo.ToolEcho), "5", "server", "shared")
	if got := env.Upstream.TotalCalls(); got != 3 {
		t.Errorf("upstream calls: got %d, want 3", got)
	}
}

func TestRefillAfterThePeriodLetsCallsThrough(t *testing.T) {
	// One token per second: after a rejection the next token arrives within 1 s.
	env := start(t, `server: it
rateLimiting:
  shared: {maxTokens: 1, refillPeriod: 1s}
`, harness.Options{})
	raw := newRawClient(t, env.URL)
	checkPassed(t, "first call", raw.call("1", demo.ToolEcho))
	r := raw.call("2", demo.ToolEcho)
	checkRejected(t, r, "2", "server", "shared")
	if got := r.Header.Get("Retry-After"); got != "1" {
		t.Errorf("retry-after: got %q, want 1", got)
	}
	// Poll rather than sleep a fixed time: each attempt either passes (refilled) or
	// is rejected without charging anything. Bounded well above the 1 s period.
	deadline := time.Now().Add(5 * time.Second)
	for id := 3; ; id++ {
		r := raw.call(strconv.Itoa(id), demo.ToolEcho)
		if r.Status == http.StatusOK {
			break
		}
		if r.Status != http.StatusTooManyRequests || time.Now().After(deadline) {
			t.Fatalf("after the refill period: got %d %q, want 200 within 5s", r.Status, r.Body)
		}
		time.Sleep(50 * time.Millisecond) // pacing between polls, not synchronisation
	}
	if got := env.Upstream.Calls(demo.ToolEcho); got != 2 {
		t.Errorf("upstream echo calls: got %d, want 2", got)
	}
}

func TestBatchIsChargedAllOrNothing(t *testing.T) {
	env := start(t, sharedPolicy(2), harness.Options{})
	raw := newRawClient(t, env.URL)
	batch3 := "[" + callBody("1", demo.ToolEcho) + "," + callBody(`"b"`, demo.ToolEcho) + "," + callBody("", demo.ToolEcho) + "]"
	r := raw.post(batch3, nil)
	if r.Status != http.StatusTooManyRequests {
		t.Fatalf("batch of 3 over a bucket of 2: got %d %q, want 429", r.Status, r.Body)
	}
	// One error per element with an id; the notification gets none.
	secs := r.Header.Get("Retry-After")
	errFor := func(id string) string {
		return `{"jsonrpc":"2.0","id":` + id + `,"error":{"code":-32029,"message":"Rate limit exceeded","data":{"retryAfterSeconds":` + secs + `,"retryAfterMs":` + secs + `000,"limit":"server","scope":"shared"}}}`
	}
	if want := "[" + errFor("1") + "," + errFor(`"b"`) + "]"; maskRetryAfterMs(strings.TrimSpace(r.Body)) != maskRetryAfterMs(want) {
		t.Errorf("batch body:\n got %s\nwant %s", r.Body, want)
	}
	// Nothing was charged: a batch of two still fits.
	batch2 := "[" + callBody("4", demo.ToolEcho) + "," + callBody("5", demo.ToolEcho) + "]"
	if r := raw.post(batch2, nil); r.Status == http.StatusTooManyRequests {
		t.Errorf("batch of 2 after a rejected batch of 3: got 429, want it to pass (the rejected batch must charge nothing)")
	}
	checkRejected(t, raw.call("6", demo.ToolEcho), "6", "server", "shared")
}

func TestNotificationIsLimitedWithoutID(t *testing.T) {
	env := start(t, sharedPolicy(1), harness.Options{})
	raw := newRawClient(t, env.URL)
	// The Go SDK server answers a tools/call notification with 400: it reached it.
	checkNotLimited(t, "notification under the limit", raw.post(callBody("", demo.ToolEcho), nil))
	checkRejected(t, raw.post(callBody("", demo.ToolEcho), nil), "", "server", "shared")
}

func TestWrongContentTypeIsStillLimited(t *testing.T) {
	env := start(t, sharedPolicy(1), harness.Options{})
	raw := newRawClient(t, env.URL)
	checkPassed(t, "first call", raw.call("1", demo.ToolEcho))
	tests := []struct{ name, contentType string }{
		{"text/plain", "text/plain"},
		{"form", "application/x-www-form-urlencoded"},
		{"none", ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw.t = t
			id := strconv.Itoa(10 + i)
			checkRejected(t, raw.post(callBody(id, demo.ToolEcho), map[string]string{"Content-Type": tt.contentType}), id, "server", "shared")
		})
	}
}

func TestCompressedBodyIsStillLimited(t *testing.T) {
	// Express's JSON parser inflates gzip, deflate and br; requestCompression
	// says the servers behind do, so the limiter inflates them too.
	env := start(t, sharedPolicy(1)+"requestCompression: {codings: [gzip]}\n", harness.Options{})
	raw := newRawClient(t, env.URL)
	checkPassed(t, "first call", raw.call("1", demo.ToolEcho))
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	if _, err := w.Write([]byte(callBody("2", demo.ToolEcho))); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	checkRejected(t, raw.post(gz.String(), map[string]string{"Content-Encoding": "gzip"}), "2", "server", "shared")
	r := raw.post("\x1b\x00", map[string]string{"Content-Encoding": "br"})
	if r.Status != http.StatusUnsupportedMediaType {
		t.Errorf("brotli body: got %d %q, want 415 (the policy accepts gzip only)", r.Status, r.Body)
	}
}

// Bodies a Go server runs as a call of search are charged as one:
//   - the Go SDK server decodes into structs, where a repeated member whose last
//     value is null keeps the earlier string, so it runs the first two (they
//     reached it unlimited when the last value counted);
//   - servers that decode with encoding/json (mcp-go v1.2.1) match member names
//     case-insensitively and run the others, which the Go SDK server behind
//     Envoy here does not.
func TestRepeatedAndCaseVariantMembersAreLimited(t *testing.T) {
	env := start(t, searchPolicy(1), harness.Options{})
	raw := newRawClient(t, env.URL)
	checkPassed(t, "first search", raw.call("1", demo.ToolSearch))
	tests := []struct{ name, id, body string }{
		{"jsonrpc then null", "2", `{"jsonrpc":"2.0","jsonrpc":null,"id":2,"method":"tools/call","params":{"name":"search","arguments":{"query":"q"}}}`},
		{"name then null", "3", `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"search","name":null,"arguments":{"query":"q"}}}`},
		{"Method", "4", `{"jsonrpc":"2.0","id":4,"Method":"tools/call","params":{"name":"search","arguments":{"query":"q"}}}`},
		{"every name", "5", `{"JSONRPC":"2.0","ID":5,"METHOD":"tools/call","PARAMS":{"NAME":"search","ARGUMENTS":{"query":"q"}}}`},
		{"name beside another", "6", `{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"echo","Name":"search","arguments":{"text":"t"}}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw.t = t
			checkRejected(t, raw.post(tt.body, nil), tt.id, "tool:search", "shared")
		})
	}
	if got, want := env.Upstream.Calls(demo.ToolSearch), 1; got != want {
		t.Errorf("upstream search calls: got %d, want %d", got, want)
	}
}

// Bodies the Go SDK server behind Envoy refuses but other SDKs' servers run
// are charged: the TypeScript SDK (v1.32.2) drops a leading byte order mark,
// and the Python SDK (v2.3.0, pydantic_core.from_json) reads NaN, Infinity and
// -Infinity as numbers.
func TestBodiesOtherSDKsRunAreStillLimited(t *testing.T) {
	env := start(t, sharedPolicy(1), harness.Options{})
	raw := newRawClient(t, env.URL)
	checkPassed(t, "first call", raw.call("1", demo.ToolEcho))
	tests := []struct{ name, id, body string }{
		{"byte order mark", "2", "\ufeff" + callBody("2", demo.ToolEcho)},
		{"NaN in arguments", "3", `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"text":"t","x":NaN}}}`},
		{"-Infinity beside params", "4", `{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo","arguments":{"text":"t"}},"z":-Infinity}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw.t = t
			checkRejected(t, raw.post(tt.body, nil), tt.id, "server", "shared")
		})
	}
}

func TestNonJSONBodyPassesUntouched(t *testing.T) {
	env := start(t, sharedPolicy(1), harness.Options{})
	raw := newRawClient(t, env.URL)
	checkPassed(t, "first call", raw.call("1", demo.ToolEcho))
	for _, body := range []string{"not json", `{"jsonrpc":`, "\x00\x01binary"} {
		// The MCP server answers it (400: a parse error), not the limiter.
		checkNotLimited(t, fmt.Sprintf("body %q", body), raw.post(body, nil))
	}
}

// A body several times extproc's per-stream gRPC window (1 MiB) still reaches
// the processor whole and is decided: charged, then the next call is over.
func TestBodyOfSeveralMiBIsDecided(t *testing.T) {
	env := start(t, sharedPolicy(1), harness.Options{})
	raw := newRawClient(t, env.URL)
	big := func(id string) string {
		return `{"jsonrpc":"2.0","id":` + id + `,"method":"tools/call","params":{"name":"echo","arguments":{"text":"` +
			strings.Repeat("a", 3<<20) + `"}}}`
	}
	checkPassed(t, "3 MiB call within the limit", raw.post(big("1"), nil))
	checkRejected(t, raw.post(big("2"), nil), "2", "server", "shared")
}

func TestBodyOverEnvoyBufferLimitGets413(t *testing.T) {
	const limit = 64 << 10
	env := start(t, sharedPolicy(100), harness.Options{BufferLimitBytes: limit})
	raw := newRawClient(t, env.URL)
	big := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"` + strings.Repeat("a", 2*limit) + `"}}}`
	if r := raw.post(big, nil); r.Status != http.StatusRequestEntityTooLarge {
		t.Errorf("body of %d bytes over a %d-byte buffer: got %d, want 413", len(big), limit, r.Status)
	}
	if got := env.Upstream.TotalCalls(); got != 0 {
		t.Errorf("upstream calls: got %d, want 0", got)
	}
	small := `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"` + strings.Repeat("a", limit/2) + `"}}}`
	checkPassed(t, "body under the limit", raw.post(small, nil))
}
