package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/mcp-ratelimit/extproc/test/integration/harness"
	"github.com/mcp-ratelimit/extproc/test/mcpserver/demo"
)

// clientOutcome is the JSON line test/tsclient/limited.mjs and
// test/pyclient/limited.py print.
type clientOutcome struct {
	SDKVersion string `json:"sdkVersion"`
	OKCalls    int    `json:"okCalls"`
	Limited    *struct {
		Kind    string         `json:"kind"` // "error" or "result"
		Class   string         `json:"class"`
		Message string         `json:"message"`
		Code    any            `json:"code"`
		Data    map[string]any `json:"data"`
		IsError bool           `json:"isError"`
		Text    string         `json:"text"`
		Meta    map[string]any `json:"meta"`
	} `json:"limited"`
	AfterList struct {
		OK    bool            `json:"ok"`
		Tools int             `json:"tools"`
		Error json.RawMessage `json:"error"`
	} `json:"afterList"`
}

// tsClientDir returns test/tsclient with its node modules installed
// (harness.NodeProject: skipped without node or npm, failed when CI=true).
func tsClientDir(t *testing.T) string {
	t.Helper()
	return harness.NodeProject(t, "test/tsclient")
}

// runTSClient runs limited.mjs against url and decodes its outcome.
func runTSClient(t *testing.T, dir, url string) clientOutcome {
	t.Helper()
	return runClientScript(t, "TypeScript", dir, "node", "limited.mjs", url)
}

// runClientScript runs an SDK client script (interpreter script url tool
// calls) in dir and decodes the one JSON line it prints: what the SDK gave
// its caller for the limited call.
func runClientScript(t *testing.T, sdk, dir, interpreter, script, url string) clientOutcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, interpreter, script, url, demo.ToolEcho, "5")
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout: %s\nstderr: %s", interpreter, script, err, stdout.Bytes(), stderr.Bytes())
	}
	t.Logf("%s client: %s", sdk, bytes.TrimSpace(stdout.Bytes()))
	var o clientOutcome
	if err := json.Unmarshal(stdout.Bytes(), &o); err != nil {
		t.Fatalf("decode %q: %v", stdout.Bytes(), err)
	}
	return o
}

// What the TypeScript SDK client (npm @modelcontextprotocol/sdk) shows its caller
// when a call is limited (the table in docs/responses.md).
func TestWhatTheTypeScriptSDKClientSeesWhenLimited(t *testing.T) {
	dir := tsClientDir(t)
	tests := []struct {
		name     string
		response string
		check    func(t *testing.T, o clientOutcome)
	}{
		{
			name:     "httpStatus 429: StreamableHTTPError 429 whose message holds the body text",
			response: "response: {httpStatus: 429}\n",
			check: func(t *testing.T, o clientOutcome) {
				l := o.Limited
				if l.Kind != "error" || l.Class != "StreamableHTTPError" || l.Code != float64(429) {
					t.Errorf("got %s %s code %v, want a thrown StreamableHTTPError with code 429", l.Kind, l.Class, l.Code)
				}
				// The SDK reads the body into the message text (unparsed): the code
				// and retry time are there for a human, not as fields.
				if !strings.Contains(l.Message, `"code":-32029`) || !strings.Contains(l.Message, `"retryAfterSeconds":`) {
					t.Errorf("message: got %q, want the rejection body in it", l.Message)
				}
				if l.Data != nil {
					t.Errorf("data: got %v, want none", l.Data)
				}
			},
		},
		{
			name:     "httpStatus 200: McpError with the code and data",
			response: "response: {httpStatus: 200}\n",
			check: func(t *testing.T, o clientOutcome) {
				l := o.Limited
				if l.Kind != "error" || l.Class != "McpError" || l.Code != float64(-32029) {
					t.Errorf("got %s %s code %v, want a thrown McpError with code -32029", l.Kind, l.Class, l.Code)
				}
				if secs, ok := l.Data["retryAfterSeconds"].(float64); !ok || secs < 1 {
					t.Errorf("data: got %v, want retryAfterSeconds >= 1", l.Data)
				}
			},
		},
		{
			name:     "format toolResult: an isError result with _meta.retryAfterSeconds",
			response: "response: {format: toolResult}\n",
			check:    wantToolResultHint,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := start(t, sharedPolicy(1)+tt.response, harness.Options{})
			o := runTSClient(t, dir, env.URL)
			if o.OKCalls != 1 || o.Limited == nil {
				t.Fatalf("got %d calls through and limited %+v, want 1 call through, then a limited one", o.OKCalls, o.Limited)
			}
			tt.check(t, o)
			if !o.AfterList.OK || o.AfterList.Tools != 3 {
				t.Errorf("tools/list after the rejection: got %+v, want the session to still work (3 tools)", o.AfterList)
			}
			if got := env.Upstream.Calls(demo.ToolEcho); got != 1 {
				t.Errorf("upstream echo calls: got %d, want 1", got)
			}
		})
	}
}

// wantToolResultHint checks what an SDK client gives its caller for the
// toolResult format: an isError result with the retry hint in _meta and text.
func wantToolResultHint(t *testing.T, o clientOutcome) {
	t.Helper()
	l := o.Limited
	if l.Kind != "result" || !l.IsError {
		t.Fatalf("got %+v, want an isError result", l)
	}
	if secs, ok := l.Meta["retryAfterSeconds"].(float64); !ok || secs < 1 {
		t.Errorf("_meta: got %v, want retryAfterSeconds >= 1", l.Meta)
	}
	if !strings.HasPrefix(l.Text, "Rate limit exceeded; retry after ") {
		t.Errorf("text: got %q, want the retry hint", l.Text)
	}
}
