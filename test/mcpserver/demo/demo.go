// Package demo is a small MCP server built with the official Go SDK: the upstream that
// the integration tests and docker-compose put behind Envoy. It serves the tools echo,
// search and slow, the resource demo://readme and the prompt greeting, and counts the
// requests that reach them, so a test can tell a call the limiter let through from one
// it stopped.
package demo

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Tool names served by the demo server.
const (
	ToolEcho   = "echo"
	ToolSearch = "search"
	ToolSlow   = "slow"
)

// The demo server's resource and prompt, for method limits (resources/read,
// prompts/get).
const (
	ResourceReadme = "demo://readme"
	PromptGreeting = "greeting"
)

// maxSlow bounds the slow tool so that a test or a curl cannot hold a handler forever.
const maxSlow = 10 * time.Second

// Options configure New. The zero value is usable.
type Options struct {
	// Logger for the SDK's handler; nil: no logs.
	Logger *slog.Logger
	// Stateless runs the Streamable HTTP handler without sessions (GET and DELETE then
	// answer 405). Default false: sessions, standalone SSE GET and DELETE work.
	Stateless bool
	// AnyHost serves every Host header, as a server deployed under a public name
	// does. Default false: the Go SDK's DNS rebinding protection, which answers 403
	// to a request that reached a loopback address with another name.
	AnyHost bool
}

// Server is the demo MCP server; it is an http.Handler for the Streamable HTTP transport.
type Server struct {
	handler http.Handler

	mu    sync.Mutex
	calls map[string]int // tool name -> calls that reached a handler
	// methods counts resources/read and prompts/get requests that reached a
	// handler, apart from calls so that TotalCalls stays a count of tool calls.
	methods map[string]int
}

// EchoArgs are the echo tool's arguments.
type EchoArgs struct {
	Text string `json:"text" jsonschema:"the text to send back"`
}

// SearchArgs are the search tool's arguments.
type SearchArgs struct {
	Query string `json:"query" jsonschema:"what to look for"`
}

// SlowArgs are the slow tool's arguments.
type SlowArgs struct {
	Milliseconds int `json:"milliseconds" jsonschema:"how long to wait before answering, at most 10000"`
}

// New returns a demo server with the tools echo, search and slow.
func New(opts Options) *Server {
	s := &Server{calls: make(map[string]int), methods: make(map[string]int)}
	srv := mcp.NewServer(&mcp.Implementation{Name: "mcp-ratelimit-demo", Version: "1.0.0"}, nil)
	mcp.AddTool(srv, &mcp.Tool{Name: ToolEcho, Description: "Returns its text."}, s.echo)
	mcp.AddTool(srv, &mcp.Tool{Name: ToolSearch, Description: "Pretends to search; returns three made-up hits."}, s.search)
	mcp.AddTool(srv, &mcp.Tool{Name: ToolSlow, Description: "Waits, then answers; for timeouts and concurrency."}, s.slow)
	srv.AddResource(&mcp.Resource{URI: ResourceReadme, Name: "readme", MIMEType: "text/plain", Description: "A short text."}, s.readme)
	srv.AddPrompt(&mcp.Prompt{Name: PromptGreeting, Description: "Asks the model to greet someone."}, s.greeting)
	s.handler = mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv },
		&mcp.StreamableHTTPOptions{Logger: opts.Logger, Stateless: opts.Stateless, DisableLocalhostProtection: opts.AnyHost})
	return s
}

// ServeHTTP serves MCP's Streamable HTTP transport on every path.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Calls returns how many calls of tool reached its handler.
func (s *Server) Calls(tool string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[tool]
}

// TotalCalls returns how many tool calls reached a handler, all tools together.
func (s *Server) TotalCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.calls {
		n += c
	}
	return n
}

// MethodCalls returns how many requests of method ("resources/read" or
// "prompts/get") reached a handler.
func (s *Server) MethodCalls(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.methods[method]
}

func (s *Server) countMethod(method string) {
	s.mu.Lock()
	s.methods[method]++
	s.mu.Unlock()
}

func (s *Server) count(tool string) {
	s.mu.Lock()
	s.calls[tool]++
	s.mu.Unlock()
}

func text(s string) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
}

func (s *Server) echo(_ context.Context, _ *mcp.CallToolRequest, in EchoArgs) (*mcp.CallToolResult, any, error) {
	s.count(ToolEcho)
	return text(in.Text), nil, nil
}

func (s *Server) search(_ context.Context, _ *mcp.CallToolRequest, in SearchArgs) (*mcp.CallToolResult, any, error) {
	s.count(ToolSearch)
	hits := make([]string, 3)
	for i := range hits {
		hits[i] = fmt.Sprintf("%d. result for %q", i+1, in.Query)
	}
	return text(strings.Join(hits, "\n")), nil, nil
}

func (s *Server) slow(ctx context.Context, _ *mcp.CallToolRequest, in SlowArgs) (*mcp.CallToolResult, any, error) {
	s.count(ToolSlow)
	d := min(time.Duration(in.Milliseconds)*time.Millisecond, maxSlow)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return text(fmt.Sprintf("waited %v", d)), nil, nil
	case <-ctx.Done():
		return nil, nil, fmt.Errorf("slow: %w", ctx.Err())
	}
}

func (s *Server) readme(_ context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
	s.countMethod("resources/read")
	return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{
		{URI: req.Params.URI, MIMEType: "text/plain", Text: "This MCP server is behind a rate limiter.\n"},
	}}, nil
}

func (s *Server) greeting(_ context.Context, _ *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
	s.countMethod("prompts/get")
	return &mcp.GetPromptResult{Messages: []*mcp.PromptMessage{
		{Role: "user", Content: &mcp.TextContent{Text: "Say hello."}},
	}}, nil
}
