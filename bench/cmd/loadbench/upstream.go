package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Upstream kinds (-upstream).
const (
	// upstreamSDK is a Go SDK Streamable HTTP server, stateless, answering with
	// application/json: a real MCP server doing the least an MCP server does.
	upstreamSDK = "sdk"
	// upstreamSDKSSE is the same server answering with text/event-stream, the SDK's
	// default.
	upstreamSDKSSE = "sdk-sse"
	// upstreamFixed is a bare net/http handler answering every POST with a fixed
	// JSON-RPC result (the request's id echoed): the floor, where the proxy and the
	// limiter are most of the cost.
	upstreamFixed = "fixed"
)

// runUpstream is the "upstream" subcommand: loadbench re-executes itself with it, so
// that the upstream is a process of its own whose CPU time is measured apart from the
// load generator's.
func runUpstream(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("upstream", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	kind := fs.String("kind", upstreamSDK, "sdk, sdk-sse or fixed")
	if err := fs.Parse(args); err != nil {
		return err
	}
	h, err := upstreamHandler(*kind)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

// echoArgs are the arguments of the tools echo and search.
type echoArgs struct {
	Text string `json:"text,omitempty" jsonschema:"the text to send back"`
}

func upstreamHandler(kind string) (http.Handler, error) {
	switch kind {
	case upstreamSDK, upstreamSDKSSE:
		srv := mcp.NewServer(&mcp.Implementation{Name: "loadbench-upstream", Version: "1.0.0"}, nil)
		tool := func(_ context.Context, _ *mcp.CallToolRequest, in echoArgs) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Text}}}, nil, nil
		}
		mcp.AddTool(srv, &mcp.Tool{Name: toolEcho, Description: "Returns its text."}, tool)
		mcp.AddTool(srv, &mcp.Tool{Name: toolSearch, Description: "Returns its text."}, tool)
		return mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv },
			&mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: kind == upstreamSDK}), nil
	case upstreamFixed:
		return http.HandlerFunc(fixedResult), nil
	default:
		return nil, fmt.Errorf("upstream kind %q: want sdk, sdk-sse or fixed", kind)
	}
}

// fixedResult answers a JSON-RPC request with a constant tool result and its id.
func fixedResult(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var msg struct {
		ID json.RawMessage `json:"id"`
	}
	if err := json.Unmarshal(body, &msg); err != nil || len(msg.ID) == 0 {
		http.Error(w, "want a JSON-RPC request", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"hello"}]}}`, msg.ID)
}
