package metrics

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mcp-ratelimit/extproc/internal/limiter"
)

func TestMetricsCountDecisions(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.StreamStarted()
	m.StreamStarted()
	m.StreamEnded()
	m.Decided(limiter.Decision{Server: "github", Method: "tools/call", Outcome: limiter.OutcomeAllowed}, time.Millisecond)
	m.Decided(limiter.Decision{Server: "github", Method: "tools/call", Outcome: limiter.OutcomeLimited, Limit: "tool:search"}, time.Millisecond)
	m.Decided(limiter.Decision{Server: "github", Method: "tools/call", Outcome: limiter.OutcomeFailedOpen, StoreError: context.DeadlineExceeded}, time.Millisecond)
	m.Decided(limiter.Decision{Server: "github", Method: "tools/call", Outcome: limiter.OutcomeFailedOpen, StoreError: errors.New("refused")}, time.Millisecond)
	m.Decided(limiter.Decision{Server: "github", Method: "tools/call", Outcome: limiter.OutcomeFailedOpen, StoreError: fmt.Errorf("read tcp: %w", os.ErrDeadlineExceeded)}, time.Millisecond)
	m.Decided(limiter.Decision{Server: "github", Outcome: limiter.OutcomeUnlimited, ParseError: true}, time.Millisecond)
	m.Decided(limiter.Decision{Outcome: limiter.OutcomeUnlimited}, time.Millisecond)
	m.Decided(limiter.Decision{Server: "github", Method: "tools/call", Outcome: limiter.OutcomeAllowed, Plan: "pro"}, time.Millisecond)
	m.Decided(limiter.Decision{Server: "github", Method: "tools/call", Outcome: limiter.OutcomeLimited, Limit: "server", Plan: "free"}, time.Millisecond)
	m.ConfigReloaded(true)
	m.ConfigReloaded(false)

	want := `
# HELP mcp_ratelimit_active_streams ext_proc streams open now.
# TYPE mcp_ratelimit_active_streams gauge
mcp_ratelimit_active_streams 1
# HELP mcp_ratelimit_config_reloads_total Policy reloads by result (success, failure).
# TYPE mcp_ratelimit_config_reloads_total counter
mcp_ratelimit_config_reloads_total{result="failure"} 1
mcp_ratelimit_config_reloads_total{result="success"} 1
# HELP mcp_ratelimit_decisions_total Rate-limit decisions by server, method, decision and denying limit.
# TYPE mcp_ratelimit_decisions_total counter
mcp_ratelimit_decisions_total{decision="allowed",limit="",method="tools/call",server="github"} 2
mcp_ratelimit_decisions_total{decision="failed_open",limit="",method="tools/call",server="github"} 3
mcp_ratelimit_decisions_total{decision="limited",limit="server",method="tools/call",server="github"} 1
mcp_ratelimit_decisions_total{decision="limited",limit="tool:search",method="tools/call",server="github"} 1
mcp_ratelimit_decisions_total{decision="unlimited",limit="",method="",server="github"} 1
mcp_ratelimit_decisions_total{decision="unlimited",limit="",method="",server="none"} 1
# HELP mcp_ratelimit_plan_decisions_total Rate-limit decisions of users on a plan, by server, plan and decision.
# TYPE mcp_ratelimit_plan_decisions_total counter
mcp_ratelimit_plan_decisions_total{decision="allowed",plan="pro",server="github"} 1
mcp_ratelimit_plan_decisions_total{decision="limited",plan="free",server="github"} 1
# HELP mcp_ratelimit_parse_errors_total Request bodies that were not JSON-RPC and continued unlimited.
# TYPE mcp_ratelimit_parse_errors_total counter
mcp_ratelimit_parse_errors_total 1
# HELP mcp_ratelimit_store_errors_total Decisions whose store call failed, by kind (timeout, error).
# TYPE mcp_ratelimit_store_errors_total counter
mcp_ratelimit_store_errors_total{kind="error"} 1
mcp_ratelimit_store_errors_total{kind="timeout"} 2
`
	names := []string{"mcp_ratelimit_active_streams", "mcp_ratelimit_config_reloads_total", "mcp_ratelimit_decisions_total",
		"mcp_ratelimit_plan_decisions_total", "mcp_ratelimit_parse_errors_total", "mcp_ratelimit_store_errors_total"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(reg, "mcp_ratelimit_decision_duration_seconds"); n != 1 {
		t.Errorf("got %d duration histograms, want 1", n)
	}
}
