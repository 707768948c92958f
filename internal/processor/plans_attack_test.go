package processor

import (
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/mcp-ratelimit/extproc/internal/limiter"
)

// docs/policy.md (Plans) says a plan name is "the plan value in Envoy's
// dynamic metadata": decisions of users on different plans must carry their
// plan there, and the cached answers must not hand one plan's metadata to
// another's decision.
func TestDynamicMetadataCarriesThePlan(t *testing.T) {
	s := New(nil, Options{})
	for _, allow := range []bool{true, false} {
		for _, plan := range []string{"pro", "free"} {
			d := limiter.Decision{Allow: allow, Outcome: limiter.OutcomeAllowed, Method: "tools/call", Tool: "search", Plan: plan}
			if !allow {
				d.Outcome, d.Status, d.Limit, d.Scope = limiter.OutcomeLimited, 429, "server", "perUser"
			}
			md := s.render(d, bodyPhase).(*extprocv3.ProcessingResponse).GetDynamicMetadata().GetFields()[MetadataNamespace].GetStructValue().GetFields()
			if got := md["plan"].GetStringValue(); got != plan {
				t.Errorf("allow %v, plan %q: metadata plan %q, want %q (metadata %v)", allow, plan, got, plan, md)
			}
		}
	}
}
