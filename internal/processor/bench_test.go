package processor

import (
	"context"
	"testing"
	"time"

	"github.com/mcp-ratelimit/extproc/internal/config"
	"github.com/mcp-ratelimit/extproc/internal/limiter"
)

// BenchmarkDecision is one full decision as the processor makes it: headers
// phase, then the buffered body parsed, charged (in-memory store) and rendered.
// The bucket is large enough that every call is allowed.
func BenchmarkDecision(b *testing.B) {
	p := policy(func(s *config.Server) {
		s.Shared = &config.Bucket{MaxTokens: 1 << 30, RefillPeriod: time.Hour}
		s.Tools = map[string]config.Tool{"search": {Name: "search", Cost: 1, Shared: &config.Bucket{MaxTokens: 1 << 30, RefillPeriod: time.Hour}}}
	})
	s := New(limiter.New(p, limiter.Options{}), Options{})
	hdr, bdy := postHeaders(), body(searchCall)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		var x exchange
		if _, err := s.handle(ctx, &x, hdr); err != nil {
			b.Fatal(err)
		}
		resp, err := s.handle(ctx, &x, bdy)
		if err != nil || resp.GetRequestBody() == nil {
			b.Fatalf("got %v %v, want a continue", resp, err)
		}
	}
}

// BenchmarkDecisionRejected measures the rejection path (body and headers built).
func BenchmarkDecisionRejected(b *testing.B) {
	s := New(limiter.New(policy(nil), limiter.Options{}), Options{})
	hdr, bdy := postHeaders(), body(searchCall)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		var x exchange
		_, _ = s.handle(ctx, &x, hdr)
		_, _ = s.handle(ctx, &x, bdy)
	}
}
