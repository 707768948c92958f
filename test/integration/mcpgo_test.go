package integration

import (
	"context"
	"sync/atomic"
	"testing"

	mcpgo "github.com/mark3labs/mcp-go/mcp"
	mcpgoserver "github.com/mark3labs/mcp-go/server"

	"github.com/mcp-ratelimit/extproc/test/integration/harness"
)

// An mcp-go server decodes with encoding/json, which matches member names
// case-insensitively: it runs {"Method":"tools/call"} and its kin. Behind Envoy,
// such a call is charged like any other: the first runs within the limit, the
// next is rejected before it reaches the server.
func TestCaseVariantCallsToAnMCPGoServerAreCharged(t *testing.T) {
	var calls atomic.Int64
	srv := mcpgoserver.NewMCPServer("mcp-go", "1")
	srv.AddTool(mcpgo.NewTool("search"), func(context.Context, mcpgo.CallToolRequest) (*mcpgo.CallToolResult, error) {
		calls.Add(1)
		return mcpgo.NewToolResultText("found"), nil
	})
	env := start(t, searchPolicy(2), harness.Options{UpstreamHandler: mcpgoserver.NewStreamableHTTPServer(srv, mcpgoserver.WithStateLess(true))})
	raw := newRawClient(t, env.URL)

	checkPassed(t, "Method", raw.post(`{"jsonrpc":"2.0","id":1,"Method":"tools/call","params":{"name":"search","arguments":{}}}`, nil))
	if got := calls.Load(); got != 1 {
		t.Fatalf("mcp-go ran search %d times after the Method call, want 1: the test no longer shows a call it runs", got)
	}
	checkPassed(t, "plain call", raw.call("2", "search"))
	checkRejected(t, raw.post(`{"JSONRPC":"2.0","ID":3,"METHOD":"tools/call","PARAMS":{"NAME":"search","ARGUMENTS":{}}}`, nil),
		"3", "tool:search", "shared")
	if got, want := calls.Load(), int64(2); got != want {
		t.Errorf("mcp-go ran search %d times, want %d (the bucket holds 2)", got, want)
	}
}
