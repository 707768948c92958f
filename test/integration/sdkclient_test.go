package integration

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcp-ratelimit/extproc/test/integration/harness"
	"github.com/mcp-ratelimit/extproc/test/mcpserver/demo"
)

// What the Go SDK client shows its caller when a call is limited, for each
// response shape (docs/integration.md has the table these tests pin down).
func TestWhatTheGoSDKClientSeesWhenLimited(t *testing.T) {
	tests := []struct {
		name     string
		response string // the policy's response: block
		check    func(t *testing.T, res *jsonrpcResult)
	}{
		{
			name:     "httpStatus 429, jsonrpcError: transport error, body dropped",
			response: "response: {httpStatus: 429}\n",
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
					t.Errorf("error: got %q; the retry time reached the caller, update docs/integration.md", r.err)
				}
			},
		},
		{
			name:     "httpStatus 200, jsonrpcError: the JSON-RPC error reaches the caller",
			response: "response: {httpStatus: 200}\n",
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
		})
	}
}

type jsonrpcResult struct {
	res *mcp.CallToolResult
	err error
}
