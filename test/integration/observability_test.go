package integration

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/mcp-ratelimit/extproc/test/integration/harness"
	"github.com/mcp-ratelimit/extproc/test/mcpserver/demo"
)

// echoOncePolicy lets one echo call through per hour and 100 search calls;
// every other tool and method is unlimited.
const echoOncePolicy = `server: it
rateLimiting:
  tools:
    - name: echo
      shared: {maxTokens: 1, refillPeriod: 1h}
    - name: search
      shared: {maxTokens: 100, refillPeriod: 1h}
`

func TestEnvoyAccessLogShowsTheDecisionMetadata(t *testing.T) {
	env := start(t, echoOncePolicy, harness.Options{})
	raw := newRawClient(t, env.URL)
	checkPassed(t, "echo 1", raw.call("1", demo.ToolEcho))
	checkRejected(t, raw.call("2", demo.ToolEcho), "2", "tool:echo", "shared")
	checkPassed(t, "tools/list", raw.post(`{"jsonrpc":"2.0","id":3,"method":"tools/list"}`, nil))

	// initialize, notifications/initialized and the three requests above.
	entries, err := env.Envoy.WaitAccessLog(t.Context(), 5, func(e map[string]any) bool {
		return e["path"] == "/mcp" && e["method"] == "POST"
	})
	if err != nil {
		t.Fatal(err)
	}
	// null in the JSON line (the metadata is absent) decodes as nil.
	tests := []struct {
		name                 string
		status               float64
		details              string
		mcpMethod, tool, dec any
		limit                any
	}{
		{"initialize", 200, "via_upstream", "other", nil, "unlimited", nil},
		{"notifications/initialized", 202, "via_upstream", "other", nil, "unlimited", nil},
		{"echo allowed", 200, "via_upstream", "tools/call", "echo", "allowed", nil},
		{"echo limited", 429, "mcp_rate_limited", "tools/call", "echo", "limited", "tool:echo"},
		{"tools/list", 200, "via_upstream", "other", nil, "unlimited", nil},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := entries[i]
			got := []any{e["status"], e["details"], e["mcp_method"], e["mcp_tool"], e["mcp_decision"], e["mcp_limit"]}
			want := []any{tt.status, tt.details, tt.mcpMethod, tt.tool, tt.dec, tt.limit}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("access log entry %v\n got status, details, mcp_method, mcp_tool, mcp_decision, mcp_limit = %v\nwant %v", e, got, want)
			}
		})
	}
}

func TestMetricsCountRealTraffic(t *testing.T) {
	env := start(t, echoOncePolicy, harness.Options{})
	ex := env.Extprocs[0]
	raw := newRawClient(t, env.URL) // initialize + notifications/initialized: 2 unlimited
	checkPassed(t, "echo 1", raw.call("1", demo.ToolEcho))
	checkRejected(t, raw.call("2", demo.ToolEcho), "2", "tool:echo", "shared")
	checkPassed(t, "tools/list", raw.post(`{"jsonrpc":"2.0","id":3,"method":"tools/list"}`, nil))
	if r := raw.post("not json", nil); r.Status != http.StatusBadRequest {
		t.Errorf("a body that is not JSON: got %d %q, want 400 from the limiter", r.Status, r.Body)
	}

	if err := env.Redis.Stop(); err != nil {
		t.Fatal(err)
	}
	// With Redis down failureMode open lets calls through. (search, not echo: a
	// bucket known to be empty may be denied without asking Redis.)
	for _, id := range []string{"4", "5"} {
		checkPassed(t, "search with Redis down", raw.call(id, demo.ToolSearch))
	}

	// A reload through SIGHUP, then a rejected one.
	if err := os.WriteFile(env.PolicyPath, []byte(strings.Replace(echoOncePolicy, "maxTokens: 1", "maxTokens: 5", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	reloadAndWait(t, ex, `mcp_ratelimit_config_reloads_total{result="success"}`, 1)
	if err := os.WriteFile(env.PolicyPath, []byte("server: it\nrateLimiting: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	reloadAndWait(t, ex, `mcp_ratelimit_config_reloads_total{result="failure"}`, 1)

	// Envoy closes each ext_proc stream when its HTTP request ends, a moment after
	// the client has the answer.
	if err := harness.WaitFor(t.Context(), "active_streams back to 0", ex, func(context.Context) error {
		if got := scrape(t, ex)["mcp_ratelimit_active_streams"]; got != 0 {
			return fmt.Errorf("active_streams: got %v, want 0", got)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	m := scrape(t, ex)
	tests := []struct {
		series string
		want   float64
	}{
		{`mcp_ratelimit_decisions_total{decision="allowed",limit="",method="tools/call",server="it"}`, 1},
		{`mcp_ratelimit_decisions_total{decision="limited",limit="tool:echo",method="tools/call",server="it"}`, 1},
		{`mcp_ratelimit_decisions_total{decision="failed_open",limit="",method="tools/call",server="it"}`, 2},
		// initialize, notifications/initialized, tools/list.
		{`mcp_ratelimit_decisions_total{decision="unlimited",limit="",method="other",server="it"}`, 3},
		// The body that is not JSON has no method, and is refused.
		{`mcp_ratelimit_decisions_total{decision="unreadable",limit="",method="",server="it"}`, 1},
		{`mcp_ratelimit_parse_errors_total`, 1},
		{`mcp_ratelimit_decision_duration_seconds_count`, 8},
		{`mcp_ratelimit_active_streams`, 0},
		{`mcp_ratelimit_config_reloads_total{result="success"}`, 1},
		{`mcp_ratelimit_config_reloads_total{result="failure"}`, 1},
	}
	for _, tt := range tests {
		if got := m[tt.series]; got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.series, got, tt.want)
		}
	}
	// A refused connection is an error, or a timeout when go-redis's retries
	// outlast the decision deadline: the kinds together count both decisions.
	if got := m.sum("mcp_ratelimit_store_errors_total"); got != 2 {
		t.Errorf("mcp_ratelimit_store_errors_total over every kind: got %v, want 2 (%v)", got, m.lines("mcp_ratelimit_store_errors_total"))
	}
	if n := len(m.lines("mcp_ratelimit_decisions_total")); n != 5 {
		t.Errorf("decisions_total series: got %d %v, want the 5 above", n, m.lines("mcp_ratelimit_decisions_total"))
	}
}

// reloadAndWait sends SIGHUP to ex and waits until series reaches want.
func reloadAndWait(t *testing.T, ex *harness.Extproc, series string, want float64) {
	t.Helper()
	if err := ex.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if err := harness.WaitFor(t.Context(), series, ex, func(context.Context) error {
		if got := scrape(t, ex)[series]; got != want {
			return fmt.Errorf("%s: got %v, want %v", series, got, want)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// scraped is one scrape of /metrics: each sample line's series
// (`name{l1="v1",...}`, labels sorted by name as client_golang prints them) and
// value.
type scraped map[string]float64

// scrape reads ex's /metrics.
func scrape(t *testing.T, ex *harness.Extproc) scraped {
	t.Helper()
	resp, err := http.Get("http://" + ex.AdminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	s := scraped{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("/metrics line %q: want `series value`", line)
		}
		s[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read /metrics: %v", err)
	}
	return s
}

// sum adds the samples of every series of metric name (histograms: use name_count).
func (s scraped) sum(name string) float64 {
	var total float64
	for series, v := range s {
		if series == name || strings.HasPrefix(series, name+"{") {
			total += v
		}
	}
	return total
}

// lines lists the series of metric name with their values, for failure messages.
func (s scraped) lines(name string) []string {
	var out []string
	for series, v := range s {
		if series == name || strings.HasPrefix(series, name+"{") {
			out = append(out, fmt.Sprintf("%s %v", series, v))
		}
	}
	slices.Sort(out)
	return out
}
