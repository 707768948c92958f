package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// TSServer is test/tsserver/server.mjs: a stateless MCP server built with the
// TypeScript SDK (@modelcontextprotocol/sdk), serving the demo server's tools
// echo, search and slow, and counting the calls that reached each tool's handler.
// Put it behind Envoy with Options.UpstreamAddr set to its Addr.
type TSServer struct {
	*Process
	// Addr is 127.0.0.1:port; the server serves MCP on every path but /healthz
	// and /calls.
	Addr string
}

// StartTSServer installs test/tsserver's node modules (NodeProject), starts the
// server on a free port and waits until GET /healthz answers 200. It stops in
// tb.Cleanup; its log is printed if tb fails. Without node or npm the test is
// skipped, or fails under CI.
func StartTSServer(tb testing.TB) *TSServer {
	tb.Helper()
	dir := NodeProject(tb, "test/tsserver")
	node, err := exec.LookPath("node")
	if err != nil {
		tb.Fatal(err) // NodeProject found it a moment ago
	}
	port := FreePort(tb)
	s := &TSServer{Addr: Addr(port)}
	s.Process = startProcess(tb, "tsserver", node, filepath.Join(dir, "server.mjs"), strconv.Itoa(port))
	if err := WaitFor(context.Background(), s.Name, s.Process, func(ctx context.Context) error {
		return HTTPOK(ctx, "http://"+s.Addr+"/healthz")
	}); err != nil {
		tb.Fatal(err)
	}
	return s
}

// URL is the MCP endpoint served directly, without Envoy: http://127.0.0.1:port/mcp.
func (s *TSServer) URL() string { return "http://" + s.Addr + "/mcp" }

// Calls returns how many calls reached each tool's handler so far; a tool never
// called is absent from the map.
func (s *TSServer) Calls(ctx context.Context) (map[string]int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.Addr+"/calls", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("tsserver calls: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return nil, fmt.Errorf("tsserver calls: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("tsserver calls: got %d %q, want 200", resp.StatusCode, body)
	}
	var calls map[string]int
	if err := json.Unmarshal(body, &calls); err != nil {
		return nil, fmt.Errorf("tsserver calls: decode %q: %w", body, err)
	}
	return calls, nil
}

// TotalCalls returns how many tool calls reached a handler, all tools together.
func (s *TSServer) TotalCalls(ctx context.Context) (int, error) {
	calls, err := s.Calls(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, c := range calls {
		n += c
	}
	return n, nil
}
