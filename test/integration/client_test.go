package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcp-ratelimit/extproc/test/mcpserver/demo"
)

// protocolVersion is the MCP revision the raw client announces.
const protocolVersion = "2025-06-18"

// reply is one HTTP answer, body read.
type reply struct {
	Status int
	Header http.Header
	Body   string
}

// rawClient speaks MCP's Streamable HTTP by hand, so a test controls every byte
// and sees every status, header and body Envoy sends back.
type rawClient struct {
	t       *testing.T
	url     string
	session string // Mcp-Session-Id after initialize
	host    string // the Host to send, when not url's
	hc      *http.Client
}

// newRawClient initializes a session through Envoy (initialize is never limited).
func newRawClient(t *testing.T, url string) *rawClient {
	t.Helper()
	c := &rawClient{t: t, url: url, hc: &http.Client{Timeout: 10 * time.Second}}
	r := c.post(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"`+protocolVersion+`","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("initialize: got %d %q, want 200", r.Status, r.Body)
	}
	c.session = r.Header.Get("Mcp-Session-Id")
	if r := c.post(`{"jsonrpc":"2.0","method":"notifications/initialized"}`, nil); r.Status != http.StatusAccepted {
		t.Fatalf("notifications/initialized: got %d %q, want 202", r.Status, r.Body)
	}
	return c
}

// do sends one request; hdr adds or overrides headers.
func (c *rawClient) do(method, body string, hdr map[string]string) reply {
	c.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = bytes.NewBufferString(body)
	}
	req, err := http.NewRequest(method, c.url, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.host != "" {
		req.Host = c.host
	}
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Mcp-Protocol-Version", protocolVersion)
	if c.session != "" {
		req.Header.Set("Mcp-Session-Id", c.session)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, c.url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("%s %s: read body: %v", method, c.url, err)
	}
	return reply{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}
}

func (c *rawClient) post(body string, hdr map[string]string) reply {
	c.t.Helper()
	return c.do(http.MethodPost, body, hdr)
}

// call sends tools/call of tool with the given JSON-RPC id (raw JSON: 7 or "a").
func (c *rawClient) call(id, tool string) reply {
	c.t.Helper()
	return c.post(callBody(id, tool), nil)
}

// callBody is a tools/call message; id "" makes it a notification.
func callBody(id, tool string) string {
	args := `{}`
	switch tool {
	case demo.ToolEcho:
		args = `{"text":"hi"}`
	case demo.ToolSearch:
		args = `{"query":"q"}`
	case demo.ToolSlow:
		args = `{"milliseconds":1}`
	}
	idPart := ""
	if id != "" {
		idPart = `"id":` + id + `,`
	}
	return `{"jsonrpc":"2.0",` + idPart + `"method":"tools/call","params":{"name":"` + tool + `","arguments":` + args + `}}`
}

var (
	policyHeaderRE = regexp.MustCompile(`^"[^"]+";q=\d+;w=\d+$`)
	limitHeaderRE  = regexp.MustCompile(`^"[^"]+";r=\d+;t=(\d+)$`)
)

// checkRejected asserts a rejection as docs/responses.md ("The rejection") documents it: status, headers, and the exact body
// for the JSON-RPC id (raw JSON; "" for a notification: no id member).
func checkRejected(t *testing.T, r reply, id, limit, scope string) {
	t.Helper()
	if r.Status != http.StatusTooManyRequests {
		t.Fatalf("status: got %d (body %q), want 429", r.Status, r.Body)
	}
	if got := r.Header.Get("Content-Type"); got != "application/json" {
		t.Errorf("content-type: got %q, want application/json", got)
	}
	secs, err := strconv.Atoi(r.Header.Get("Retry-After"))
	if err != nil || secs < 1 {
		t.Errorf("retry-after: got %q, want whole seconds >= 1", r.Header.Get("Retry-After"))
	}
	if got := r.Header.Get("Ratelimit-Policy"); !policyHeaderRE.MatchString(got) {
		t.Errorf("ratelimit-policy: got %q, want %s", got, policyHeaderRE)
	}
	if m := limitHeaderRE.FindStringSubmatch(r.Header.Get("Ratelimit")); m == nil {
		t.Errorf("ratelimit: got %q, want %s", r.Header.Get("Ratelimit"), limitHeaderRE)
	} else if m[1] != strconv.Itoa(secs) {
		t.Errorf("ratelimit t=: got %s, want retry-after %d", m[1], secs)
	}
	idPart := ""
	if id != "" {
		idPart = `"id":` + id + `,`
	}
	want := fmt.Sprintf(`{"jsonrpc":"2.0",%s"error":{"code":-32029,"message":"Rate limit exceeded","data":{"retryAfterSeconds":%d,"retryAfterMs":%d,"limit":%q,"scope":%q}}}`,
		idPart, secs, secs*1000, limit, scope)
	if got := bytes.TrimSpace([]byte(r.Body)); maskRetryAfterMs(string(got)) != maskRetryAfterMs(want) {
		t.Errorf("body:\n got %s\nwant %s", got, want)
	}
	checkRetryAfterMs(t, r.Body, secs)
}

// retryAfterMsRE matches the retryAfterMs of a rejection body, whose exact
// value depends on the clock: bodies are compared with it masked, and
// checkRetryAfterMs checks it against the retry-after seconds.
var retryAfterMsRE = regexp.MustCompile(`"retryAfterMs":([0-9]+)`)

func maskRetryAfterMs(body string) string {
	return retryAfterMsRE.ReplaceAllString(body, `"retryAfterMs":N`)
}

// checkRetryAfterMs asserts that every retryAfterMs in body is the wait that
// rounds up to secs whole seconds.
func checkRetryAfterMs(t *testing.T, body string, secs int) {
	t.Helper()
	ms := retryAfterMsRE.FindAllStringSubmatch(body, -1)
	if len(ms) == 0 {
		t.Errorf("body %s: no retryAfterMs", body)
	}
	for _, m := range ms {
		if v, err := strconv.Atoi(m[1]); err != nil || v <= (secs-1)*1000 || v > secs*1000 {
			t.Errorf("retryAfterMs: got %s, want in (%d, %d] for retry-after %d", m[1], (secs-1)*1000, secs*1000, secs)
		}
	}
}

// checkPassed asserts that a request went through to the MCP server.
func checkPassed(t *testing.T, what string, r reply) {
	t.Helper()
	if r.Status != http.StatusOK && r.Status != http.StatusAccepted {
		t.Errorf("%s: got %d %q, want it to pass (200 or 202)", what, r.Status, r.Body)
	}
}

// checkNotLimited asserts that the limiter let a request through: whatever the MCP
// server answered, it was not the limiter's 429 or 503.
func checkNotLimited(t *testing.T, what string, r reply) {
	t.Helper()
	if r.Status == http.StatusTooManyRequests || r.Status == http.StatusServiceUnavailable {
		t.Errorf("%s: got %d %q, want it passed to the MCP server", what, r.Status, r.Body)
	}
}

// sdkSession connects the Go SDK's client through Envoy.
func sdkSession(t *testing.T, url string) *mcp.ClientSession {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "integration", Version: "1"}, nil)
	// MaxRetries -1: a rejection must surface as it is, not be retried away.
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url, MaxRetries: -1}, nil)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs
}

// sdkCall calls tool with the Go SDK client.
func sdkCall(t *testing.T, cs *mcp.ClientSession, tool string) (*mcp.CallToolResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	args := map[string]any{}
	switch tool {
	case demo.ToolEcho:
		args["text"] = "hi"
	case demo.ToolSearch:
		args["query"] = "q"
	case demo.ToolSlow:
		args["milliseconds"] = 1
	}
	return cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
}

// jsonField decodes one top-level field of a JSON object (for logs and checks).
func jsonField(s, field string) json.RawMessage {
	var m map[string]json.RawMessage
	if json.Unmarshal([]byte(s), &m) != nil {
		return nil
	}
	return m[field]
}
