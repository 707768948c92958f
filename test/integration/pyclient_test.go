package integration

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcp-ratelimit/extproc/internal/testtools"
	"github.com/mcp-ratelimit/extproc/test/integration/harness"
	"github.com/mcp-ratelimit/extproc/test/mcpserver/demo"
)

// pySDKVersion is the Python MCP SDK the table in docs/responses.md describes;
// scripts/test.sh installs it.
const pySDKVersion = "2.3.0"

// pyMCPVersion asks python3 once per test binary for the installed mcp version
// ("" when python3 has no mcp package).
var pyMCPVersion = sync.OnceValues(func() (string, error) {
	if _, err := exec.LookPath("python3"); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "python3", "-c", `
import importlib.metadata as m
try:
    print(m.version("mcp"))
except m.PackageNotFoundError:
    print("")
`).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("python3: %w\n%s", err, out)
	}
	return strings.TrimSpace(string(out)), nil
})

// pyClientDir returns test/pyclient once python3 with the pinned mcp package is
// on PATH. Without them the test is skipped, or fails under CI.
func pyClientDir(t *testing.T) string {
	t.Helper()
	missing := func(msg string) {
		t.Helper()
		if testtools.InCI() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	got, err := pyMCPVersion()
	switch {
	case err != nil:
		missing(fmt.Sprintf("python3 not usable (%v); install Python 3.10 or later and run python3 -m pip install 'mcp==%s'", err, pySDKVersion))
	case got == "":
		missing(fmt.Sprintf("python3 has no mcp package; run python3 -m pip install 'mcp==%s'", pySDKVersion))
	case got != pySDKVersion:
		missing(fmt.Sprintf("python3 has mcp %s, the test pins %s (scripts/test.sh installs it)", got, pySDKVersion))
	}
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "test", "pyclient")
}

// runPyClient runs limited.py against url and decodes its outcome.
func runPyClient(t *testing.T, dir, url string) clientOutcome {
	t.Helper()
	return runClientScript(t, "Python", dir, "python3", "limited.py", url)
}

// wantPyMCPError checks that the caller got mcp's MCPError carrying the
// rejection's JSON-RPC error: code -32029, its message, and data with the retry
// time and the bucket.
func wantPyMCPError(t *testing.T, o clientOutcome) {
	t.Helper()
	l := o.Limited
	if l.Kind != "error" || l.Class != "MCPError" || l.Code != float64(-32029) {
		t.Fatalf("got %s %s code %v message %q, want a raised MCPError with code -32029", l.Kind, l.Class, l.Code, l.Message)
	}
	if l.Message != "Rate limit exceeded" {
		t.Errorf("message: got %q, want %q", l.Message, "Rate limit exceeded")
	}
	if secs, ok := l.Data["retryAfterSeconds"].(float64); !ok || secs < 1 {
		t.Errorf("data: got %v, want retryAfterSeconds >= 1", l.Data)
	}
	if l.Data["limit"] != "server" || l.Data["scope"] != "shared" {
		t.Errorf("data: got %v, want limit server, scope shared", l.Data)
	}
}

// What the Python SDK client (PyPI mcp) shows its caller when a call is limited
// (the table in docs/responses.md).
func TestWhatThePythonSDKClientSeesWhenLimited(t *testing.T) {
	dir := pyClientDir(t)
	tests := []struct {
		name     string
		response string
		check    func(t *testing.T, o clientOutcome)
	}{
		{
			// mcp 2.x reads a non-2xx answer whose content-type is
			// application/json as a JSON-RPC error before it falls back to a
			// status-derived one (mcp/client/streamable_http.py).
			name:     "httpStatus 429: MCPError with the code and data, parsed from the body",
			response: "response: {httpStatus: 429}\n",
			check:    wantPyMCPError,
		},
		{
			name:     "httpStatus 400: MCPError with the code and data, parsed from the body",
			response: "response: {httpStatus: 400}\n",
			check:    wantPyMCPError,
		},
		{
			name:     "httpStatus 200: MCPError with the code and data",
			response: "response: {httpStatus: 200}\n",
			check:    wantPyMCPError,
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
			o := runPyClient(t, dir, env.URL)
			if o.SDKVersion != pySDKVersion {
				t.Errorf("sdkVersion: got %q, want %q", o.SDKVersion, pySDKVersion)
			}
			if o.OKCalls != 1 || o.Limited == nil {
				t.Fatalf("got %d calls through and limited %+v, want 1 call through, then a limited one", o.OKCalls, o.Limited)
			}
			tt.check(t, o)
			if !o.AfterList.OK || o.AfterList.Tools != 3 {
				t.Errorf("tools/list after the rejection: got %+v, want the session to still work (3 tools)", o.AfterList)
			}
			if got := env.Upstream.Calls(demo.ToolEcho); got != 1 {
				t.Errorf("upstream echo calls: got %d, want 1 (only the admitted call)", got)
			}
		})
	}
}
