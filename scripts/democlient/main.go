// Command democlient is the client half of scripts/demo.sh: it opens an MCP session
// through Envoy with the Go SDK, calls one tool until the rate limiter refuses it,
// repeats the refused call as a raw HTTP POST to show the whole answer (the SDK
// drops a 429's body), and prints the metric that counted it.
//
//	democlient --url http://127.0.0.1:10000/mcp --metrics http://127.0.0.1:8081/metrics [--check]
//
// With --check it exits 1 unless the refusal is the documented one: HTTP 429, a
// retry-after header, and a JSON-RPC error -32029 carrying the request's id.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "democlient:", err)
		}
		os.Exit(1)
	}
}

// The refusal scripts/demo.sh documents; examples/policy.yaml's response block.
const (
	wantStatus    = http.StatusTooManyRequests
	wantErrorCode = -32029
	// rawID is the id of the raw POST, recognisable in the answer.
	rawID = 4242
)

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("democlient", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "", "the MCP endpoint behind Envoy, e.g. http://127.0.0.1:10000/mcp")
	metricsURL := fs.String("metrics", "", "extproc's /metrics URL")
	tool := fs.String("tool", "search", "the tool to call until it is limited")
	query := fs.String("query", "rate limits", "the tool's query argument")
	maxCalls := fs.Int("max-calls", 10, "give up when this many calls are all allowed")
	check := fs.Bool("check", false, "exit 1 unless the refusal is HTTP 429 with retry-after and JSON-RPC error -32029 with the request's id")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *url == "" || *metricsURL == "" {
		return errors.New("--url and --metrics are required")
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	p := printer{w: stdout}

	p.section("1. An MCP session through Envoy (Go SDK client)")
	client := mcp.NewClient(&mcp.Implementation{Name: "mcp-ratelimit-demo-client", Version: "1"}, nil)
	// MaxRetries -1: the SDK would otherwise retry a 429 as a transient failure;
	// the demo wants to see the refusal, not hide it.
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: *url, MaxRetries: -1}, nil)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", *url, err)
	}
	defer cs.Close()
	info := cs.InitializeResult()
	p.linef("initialized: server %q %s, protocol %s, session %s",
		info.ServerInfo.Name, info.ServerInfo.Version, info.ProtocolVersion, cs.ID())
	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		return fmt.Errorf("tools/list: %w", err)
	}
	names := make([]string, len(tools.Tools))
	for i, t := range tools.Tools {
		names[i] = t.Name
	}
	p.linef("tools/list: %s (tools/list itself is not limited)", strings.Join(names, ", "))

	p.section(fmt.Sprintf("2. Calling %q until the limiter says no", *tool))
	callArgs := map[string]any{"query": *query}
	limited := false
	for i := 1; i <= *maxCalls && !limited; i++ {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: *tool, Arguments: callArgs})
		switch {
		case err != nil:
			limited = true
			p.linef("call %d: REFUSED; the Go SDK returned the error:", i)
			p.linef("        %v", err)
			p.linef("        (the SDK keeps only the status of a 429, not its body: step 3 shows the whole answer)")
		default:
			p.linef("call %d: allowed: %s", i, summary(res))
		}
	}
	if !limited {
		return fmt.Errorf("%d calls of %q were all allowed; is the policy's limit higher than that?", *maxCalls, *tool)
	}

	p.section("3. The same call as a raw HTTP POST, to show the whole refusal")
	resp, err := rawCall(ctx, *url, cs, *tool, callArgs)
	if err != nil {
		return err
	}
	p.linef("> POST %s  {\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"tools/call\",\"params\":{\"name\":%q,...}}", *url, rawID, *tool)
	p.linef("< %s %s", resp.proto, resp.status)
	for _, h := range resp.headers {
		p.linef("< %s", h)
	}
	p.linef("<")
	p.linef("< %s", resp.body)

	p.section("4. extproc's /metrics: the decisions it counted")
	lines, err := decisionLines(ctx, *metricsURL)
	if err != nil {
		return err
	}
	for _, l := range lines {
		if strings.Contains(l, `decision="limited"`) {
			l += "   <- the refused calls (step 2's last and step 3's)"
		}
		p.linef("%s", l)
	}

	if !*check {
		return nil
	}
	p.section("Check")
	if err := checkRefusal(resp, lines); err != nil {
		return fmt.Errorf("check failed: %w", err)
	}
	p.linef("ok: HTTP %d, retry-after, JSON-RPC error %d with id %d, counted as decision=\"limited\"", wantStatus, wantErrorCode, rawID)
	return nil
}

type printer struct{ w io.Writer }

func (p printer) section(title string) { fmt.Fprintf(p.w, "\n== %s\n", title) }
func (p printer) linef(format string, args ...any) {
	fmt.Fprintf(p.w, format+"\n", args...)
}

// summary is the first text of a tool result, on one short line.
func summary(res *mcp.CallToolResult) string {
	for _, c := range res.Content {
		if t, ok := c.(*mcp.TextContent); ok {
			s := strings.Join(strings.Fields(t.Text), " ")
			if len(s) > 70 {
				s = s[:70] + "..."
			}
			return s
		}
	}
	return fmt.Sprintf("a result with %d content items", len(res.Content))
}

// rawResponse is what the raw POST got back, as printed.
type rawResponse struct {
	proto, status string
	code          int
	header        http.Header
	headers       []string // "name: value", sorted
	body          string
}

// rawCall sends one tools/call on the session as plain HTTP, with the headers a
// Streamable HTTP client sends, so that it is charged like the SDK's calls.
func rawCall(ctx context.Context, url string, cs *mcp.ClientSession, tool string, args map[string]any) (*rawResponse, error) {
	body, err := json.Marshal(map[string]any{
		"jsonrpc": "2.0", "id": rawID, "method": "tools/call",
		"params": map[string]any{"name": tool, "arguments": args},
	})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Session-Id", cs.ID())
	req.Header.Set("Mcp-Protocol-Version", cs.InitializeResult().ProtocolVersion)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("raw POST: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("raw POST: reading the body: %w", err)
	}
	r := &rawResponse{proto: resp.Proto, status: resp.Status, code: resp.StatusCode, header: resp.Header,
		body: strings.TrimSpace(string(b))}
	for name, values := range resp.Header {
		for _, v := range values {
			r.headers = append(r.headers, strings.ToLower(name)+": "+v)
		}
	}
	sort.Strings(r.headers)
	return r, nil
}

// decisionLines are the mcp_ratelimit_decisions_total samples of extproc's /metrics.
func decisionLines(ctx context.Context, url string) ([]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	var lines []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "mcp_ratelimit_decisions_total{") {
			lines = append(lines, sc.Text())
		}
	}
	return lines, sc.Err()
}

// checkRefusal reports every way the refusal differs from the documented one.
func checkRefusal(r *rawResponse, metricLines []string) error {
	var errs []error
	if r.code != wantStatus {
		errs = append(errs, fmt.Errorf("HTTP status: got %d, want %d", r.code, wantStatus))
	}
	if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 {
		errs = append(errs, fmt.Errorf("retry-after: got %q, want whole seconds >= 1", r.header.Get("Retry-After")))
	}
	var msg struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   *struct {
			Code int `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(r.body), &msg); err != nil {
		errs = append(errs, fmt.Errorf("body: not JSON: %v", err))
	} else {
		if msg.JSONRPC != "2.0" {
			errs = append(errs, fmt.Errorf("body: jsonrpc: got %q, want \"2.0\"", msg.JSONRPC))
		}
		if got := string(msg.ID); got != strconv.Itoa(rawID) {
			errs = append(errs, fmt.Errorf("body: id: got %s, want %d", got, rawID))
		}
		if msg.Error == nil || msg.Error.Code != wantErrorCode {
			errs = append(errs, fmt.Errorf("body: got %s, want error.code %d", r.body, wantErrorCode))
		}
	}
	counted := false
	for _, l := range metricLines {
		if strings.Contains(l, `decision="limited"`) && !strings.HasSuffix(l, " 0") {
			counted = true
		}
	}
	if !counted {
		errs = append(errs, errors.New(`metrics: no mcp_ratelimit_decisions_total{decision="limited"} sample above 0`))
	}
	return errors.Join(errs...)
}
