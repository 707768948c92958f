package integration

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcp-ratelimit/extproc/test/integration/harness"
	"github.com/mcp-ratelimit/extproc/test/mcpserver/demo"
)

// What the Go SDK client shows its caller when a call is limited, for each
// response shape (docs/responses.md has the table these tests pin down).
func TestWhatTheGoSDKClientSeesWhenLimited(t *testing.T) {
	tests := []struct {
		name     string
		response string // the policy's response: block
		status   int    // the HTTP status of the rejection
		check    func(t *testing.T, res *jsonrpcResult)
	}{
		{
			name:     "httpStatus 429, jsonrpcError: transport error, body dropped",
			response: "response: {httpStatus: 429}\n",
			status:   http.StatusTooManyRequests,
			check: func(t *testing.T, r *jsonrpcResult) {
				// The SDK treats 429 as transient: an error wrapping ErrRejected,
				// "Too Many Requests", without the JSON-RPC body, the code or the retry time.
				if r.err == nil {
					t.Fatalf("got result %+v, want an error", r.res)
				}
				if !strings.Contains(r.err.Error(), "Too Many Requests") {
					t.Errorf("error: got %q, want it to contain \"Too Many Requests\"", r.err)
				}
				if strings.Contains(r.err.Error(), "retryAfterSeconds") {
					t.Errorf("error: got %q; the retry time reached the caller, update docs/responses.md", r.err)
				}
			},
		},
		{
			name:     "httpStatus 200, jsonrpcError: the JSON-RPC error reaches the caller",
			response: "response: {httpStatus: 200}\n",
			status:   http.StatusOK,
			check: func(t *testing.T, r *jsonrpcResult) {
				var werr *jsonrpc.Error
				if !errors.As(r.err, &werr) {
					t.Fatalf("got result %+v error %v, want a *jsonrpc.Error", r.res, r.err)
				}
				if werr.Code != -32029 {
					t.Errorf("code: got %d, want -32029", werr.Code)
				}
				var data struct {
					RetryAfterSeconds int `json:"retryAfterSeconds"`
				}
				if err := json.Unmarshal(werr.Data, &data); err != nil || data.RetryAfterSeconds < 1 {
					t.Errorf("error data: got %s, want retryAfterSeconds >= 1", werr.Data)
				}
			},
		},
		{
			name:     "format toolResult: an isError result with _meta.retryAfterSeconds",
			response: "response: {format: toolResult}\n",
			status:   http.StatusOK,
			check: func(t *testing.T, r *jsonrpcResult) {
				if r.err != nil {
					t.Fatalf("got error %v, want an isError result", r.err)
				}
				if !r.res.IsError {
					t.Errorf("isError: got false, want true")
				}
				if got, ok := r.res.Meta["retryAfterSeconds"].(float64); !ok || got < 1 {
					t.Errorf("_meta.retryAfterSeconds: got %v, want >= 1", r.res.Meta["retryAfterSeconds"])
				}
			},
		},
		{
			name:     "custom errorCode and message, httpStatus 200: both reach the caller",
			response: "response: {httpStatus: 200, errorCode: -32000, message: Slow down}\n",
			status:   http.StatusOK,
			check: func(t *testing.T, r *jsonrpcResult) {
				var werr *jsonrpc.Error
				if !errors.As(r.err, &werr) {
					t.Fatalf("got result %+v error %v, want a *jsonrpc.Error", r.res, r.err)
				}
				if werr.Code != -32000 || werr.Message != "Slow down" {
					t.Errorf("error: got code %d message %q, want -32000 \"Slow down\"", werr.Code, werr.Message)
				}
			},
		},
		{
			name:     "format toolResult with a custom message: the model reads it",
			response: "response: {format: toolResult, message: Slow down}\n",
			status:   http.StatusOK,
			check: func(t *testing.T, r *jsonrpcResult) {
				if r.err != nil || !r.res.IsError || len(r.res.Content) != 1 {
					t.Fatalf("got result %+v error %v, want one isError text", r.res, r.err)
				}
				text, ok := r.res.Content[0].(*mcp.TextContent)
				if !ok || !strings.HasPrefix(text.Text, "Slow down; retry after ") {
					t.Errorf("content: got %#v, want text starting \"Slow down; retry after \"", r.res.Content[0])
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := start(t, sharedPolicy(1)+tt.response, harness.Options{})
			cs := sdkSession(t, env.URL)
			if _, err := sdkCall(t, cs, demo.ToolEcho); err != nil {
				t.Fatalf("first call: %v", err)
			}
			res, err := sdkCall(t, cs, demo.ToolEcho)
			t.Logf("caller sees: result=%+v error=%v", res, err)
			tt.check(t, &jsonrpcResult{res: res, err: err})
			// The session survives a rejection: an unlimited request still works.
			if _, err := cs.ListTools(t.Context(), nil); err != nil {
				t.Errorf("tools/list after a rejection: %v, want the session to still work", err)
			}
			// What the SDK hides: the same rejection on the wire carries the
			// rate-limit headers, whatever the status.
			raw := newRawClient(t, env.URL)
			r := raw.call("99", demo.ToolEcho)
			if r.Status != tt.status {
				t.Errorf("raw rejection: got %d %q, want %d", r.Status, r.Body, tt.status)
			}
			checkRateLimitHeaders(t, r)
			if got := env.Upstream.Calls(demo.ToolEcho); got != 1 {
				t.Errorf("upstream echo calls: got %d, want 1", got)
			}
		})
	}
}

// checkRateLimitHeaders asserts the headers every rejection carries (docs/responses.md, "The rejection").
func checkRateLimitHeaders(t *testing.T, r reply) {
	t.Helper()
	secs, err := strconv.Atoi(r.Header.Get("Retry-After"))
	if err != nil || secs < 1 {
		t.Errorf("retry-after: got %q, want whole seconds >= 1", r.Header.Get("Retry-After"))
	}
	if got := r.Header.Get("Ratelimit-Policy"); !policyHeaderRE.MatchString(got) {
		t.Errorf("ratelimit-policy: got %q, want %s", got, policyHeaderRE)
	}
	if m := limitHeaderRE.FindStringSubmatch(r.Header.Get("Ratelimit")); m == nil || m[1] != strconv.Itoa(secs) {
		t.Errorf("ratelimit: got %q, want %s with t= the retry-after %d", r.Header.Get("Ratelimit"), limitHeaderRE, secs)
	}
	if got := r.Header.Get("Content-Type"); got != "application/json" {
		t.Errorf("content-type: got %q, want application/json", got)
	}
}

type jsonrpcResult struct {
	res *mcp.CallToolResult
	err error
}
