package processor

import (
	"testing"
	"time"

	"github.com/mcp-ratelimit/extproc/internal/config"
	"github.com/mcp-ratelimit/extproc/internal/limiter"
)

// An allowed answer carries the ratelimit and ratelimit-policy values of its
// emptiest bucket in the metadata, fresh on each request; others do not.
func TestQuotaMetadataOnAllowedAnswers(t *testing.T) {
	p := policy(func(s *config.Server) {
		s.Tools["search"] = config.Tool{Name: "search", Cost: 1, Shared: []config.Bucket{{MaxTokens: 2, RefillPeriod: 20 * time.Second}}}
		s.Response.HeadersOnAllowed = true
	})
	c := serve(t, New(limiter.New(p, limiter.Options{}), Options{}))
	allowed := func(r string) exchangeStep {
		return exchangeStep{body(searchCall), withMetadata(continueBody(), "decision", "allowed", "method", "tools/call", "tool", "search",
			"ratelimit", r, "ratelimit-policy", `"tool:search";q=2;w=20`)}
	}
	replay(t, c, []exchangeStep{{postHeaders(), continueHeaders()}, allowed(`"tool:search";r=1;t=10`)})
	replay(t, c, []exchangeStep{{postHeaders(), continueHeaders()}, allowed(`"tool:search";r=0;t=20`)})

	limited := rejection(429,
		`{"jsonrpc":"2.0","id":7,"error":{"code":-32029,"message":"Rate limit exceeded","data":{"retryAfterSeconds":10,"retryAfterMs":10000,"limit":"tool:search","scope":"shared"}}}`,
		"content-type", "application/json", "retry-after", "10",
		"ratelimit-policy", `"tool:search";q=2;w=20`, "ratelimit", `"tool:search";r=0;t=10`)
	replay(t, c, []exchangeStep{{postHeaders(), continueHeaders()},
		{body(searchCall), withMetadata(limited, "decision", "limited", "method", "tools/call", "tool", "search", "limit", "tool:search")}})
	replay(t, c, []exchangeStep{{postHeaders(), continueHeaders()},
		{body(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`), withMetadata(continueBody(), "decision", "unlimited", "method", "other")}})
}
