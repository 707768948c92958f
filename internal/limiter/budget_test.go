package limiter

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcp-ratelimit/extproc/internal/config"
)

// largeCall is a tools/call of search whose arguments make it n bytes long.
func largeCall(n int) []byte {
	head := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"pad":"`
	return []byte(head + strings.Repeat("a", n-len(head)-5) + `"}}}`)
}

// TestLargeBodyThatFindsNoRoomIsRefusedSmallOnesPass: with the read budget
// taken, a large body is refused with 503 once ReadWait runs out, while a
// small body is decided at once.
func TestLargeBodyThatFindsNoRoomIsRefusedSmallOnesPass(t *testing.T) {
	l := New(server(func(s *config.Server) { s.Shared = perMinute(100) }), Options{ReadBudget: 1 << 20, ReadWait: 20 * time.Millisecond})
	release, ok := l.reads.acquire(context.Background(), 1<<20)
	if !ok {
		t.Fatal("could not take the whole budget")
	}
	d := l.Decide(context.Background(), post(largeCall(100<<10)))
	if d.Allow || d.Outcome != OutcomeOverloaded || d.Status != 503 || !slices.Contains(d.Headers, Header{"retry-after", "1"}) {
		t.Fatalf("large body: got allow %v outcome %q status %d headers %v, want 503 overloaded with retry-after 1", d.Allow, d.Outcome, d.Status, d.Headers)
	}
	var got struct{ Error struct{ Code int } }
	if err := json.Unmarshal(d.Body, &got); err != nil || got.Error.Code != -32603 {
		t.Errorf("body %s: want a JSON-RPC error -32603", d.Body)
	}
	if d := l.Decide(context.Background(), post(call("2", "search"))); d.Outcome != OutcomeAllowed {
		t.Errorf("small body: got %q, want allowed while the budget is taken", d.Outcome)
	}
	release()
	if d := l.Decide(context.Background(), post(largeCall(100<<10))); d.Outcome != OutcomeAllowed {
		t.Errorf("large body after release: got %q, want allowed", d.Outcome)
	}
}

// TestCompressedBodyIsBudgetedAtItsInflatedSize: a small gzip body may inflate
// to maxRatio times its size, so it waits for room as a body of that size does.
func TestCompressedBodyIsBudgetedAtItsInflatedSize(t *testing.T) {
	l := New(server(func(s *config.Server) {
		s.Shared = perMinute(100)
		s.Compression = &config.Compression{Codings: []string{"gzip"}, MaxInflatedBytes: 4 << 20, MaxRatio: 100}
	}), Options{ReadBudget: 4 << 20, ReadWait: 20 * time.Millisecond})
	release, _ := l.reads.acquire(context.Background(), 4<<20-32<<10)
	defer release()
	gz := compress(t, "gzip", largeCall(100<<10))
	if len(gz) >= 32<<10 {
		t.Fatalf("the compressed body is %d bytes; the test needs one that fits in the 32 KiB left", len(gz))
	}
	if d := l.Decide(context.Background(), post(gz, "content-encoding", "gzip")); d.Outcome != OutcomeOverloaded {
		t.Errorf("got %q, want overloaded: %d compressed bytes may inflate past the room left", d.Outcome, len(gz))
	}
}

// BenchmarkProbeUnderFlood: 64 clients send the most expensive body the
// limiter reads (4 MiB of nesting) without pause, while a probe sends an
// ordinary tools/call; probe-p99-ms is its 99th percentile decision time,
// flood-ms-per-body the floods'. Budget "bounded" is the shipped read budget,
// "unbounded" none, as a baseline of the same run.
//
// Run: go test -run='^$' -bench=BenchmarkProbeUnderFlood -benchtime=200x ./internal/limiter/
func BenchmarkProbeUnderFlood(b *testing.B) {
	depth := (4<<20 - 200) / 2
	flood := []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"pad":` +
		strings.Repeat("[", depth) + strings.Repeat("]", depth) + `}}}`)
	for _, bc := range []struct {
		name   string
		budget int64
	}{{"bounded", 0}, {"unbounded", -1}} {
		b.Run(bc.name, func(b *testing.B) {
			l := New(server(func(s *config.Server) { s.Shared = []config.Bucket{{MaxTokens: 1 << 30, RefillPeriod: time.Hour}} }),
				Options{ReadBudget: bc.budget})
			ctx, stop := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			var floods, floodNanos atomic.Int64
			for range 64 {
				wg.Go(func() {
					for ctx.Err() == nil {
						start := time.Now()
						l.Decide(ctx, post(flood))
						floods.Add(1)
						floodNanos.Add(int64(time.Since(start)))
					}
				})
			}
			probe := post(call("7", "search"))
			var lat []time.Duration
			for b.Loop() {
				start := time.Now()
				if d := l.Decide(context.Background(), probe); d.Outcome != OutcomeAllowed {
					b.Fatalf("probe: got %q", d.Outcome)
				}
				lat = append(lat, time.Since(start))
				time.Sleep(time.Millisecond) // a probe, not a second flood
			}
			stop()
			wg.Wait()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "probe-p99-ms")
			if n := floods.Load(); n > 0 {
				b.ReportMetric(float64(floodNanos.Load()/n)/1e6, "flood-ms-per-body")
			}
		})
	}
}
