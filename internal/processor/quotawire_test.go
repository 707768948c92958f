package processor

import (
	"math"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/mcp-ratelimit/extproc/internal/limiter"
)

// wantAnswer is the allowed answer to d as a proto built the ordinary way:
// the continue of phase ph with metadata(d) as a structpb.Struct.
func wantAnswer(d limiter.Decision, ph phase) *extprocv3.ProcessingResponse {
	resp := continueFor(ph)
	resp.DynamicMetadata = metadata(d)
	return resp
}

// sendQuotaAnswer renders d for phase ph on s and marshals it as Codec does,
// with buffers from pool; it fails unless the answer is a hand-written one.
func sendQuotaAnswer(t testing.TB, s *Server, pool mem.BufferPool, d limiter.Decision, ph phase) mem.BufferSlice {
	t.Helper()
	qa, ok := s.render(d, ph).(*quotaAnswer)
	if !ok {
		t.Fatalf("rendered %T, want a *quotaAnswer", s.render(d, ph))
	}
	c := s.Codec().(codec)
	c.pool = pool
	bufs, err := c.Marshal(qa)
	if err != nil {
		t.Fatal(err)
	}
	return bufs
}

// checkQuotaAnswer asserts that bufs unmarshal to exactly wantAnswer(d, ph).
func checkQuotaAnswer(t testing.TB, bufs mem.BufferSlice, d limiter.Decision, ph phase) {
	t.Helper()
	got := &extprocv3.ProcessingResponse{}
	if err := proto.Unmarshal(bufs.Materialize(), got); err != nil {
		t.Fatalf("the written bytes do not unmarshal: %v", err)
	}
	if want := wantAnswer(d, ph); !proto.Equal(got, want) {
		t.Errorf("written answer differs from the proto built with structpb (-want +got):\n%s",
			cmp.Diff(want, got, protocmp.Transform()))
	}
}

func TestQuotaAnswerBytesAreTheProtoOfTheAnswer(t *testing.T) {
	long := strings.Repeat("x", 200)      // a length of two varint bytes
	longer := strings.Repeat("y", 17_000) // three: the namespace's lengths too
	header := func(policy, name string) *limiter.QuotaHeader {
		return &limiter.QuotaHeader{Policy: policy, Name: name}
	}
	single := header(`"tool:search";q=10;w=60`, `"tool:search"`)
	windows := header(`"user";q=2;w=60, "user#w1";q=3;w=86400`, `"user#w1"`)
	decisions := map[string]limiter.Decision{
		"method and tool":      {Method: "tools/call", Tool: "search", Quota: limiter.Quota{Header: single, Remaining: 9, Reset: 6}},
		"method only":          {Method: "prompts/get", Quota: limiter.Quota{Header: single, Remaining: 0, Reset: 0}},
		"no labels":            {Quota: limiter.Quota{Header: single, Remaining: 1, Reset: 1}},
		"limit and plan":       {Method: "tools/call", Tool: "other", Limit: "server", Plan: "pro", Quota: limiter.Quota{Header: windows, Remaining: 1, Reset: 86400}},
		"plan only":            {Method: "tools/call", Plan: "free", Quota: limiter.Quota{Header: windows, Remaining: 2, Reset: 30}},
		"largest numbers":      {Method: "tools/call", Tool: "search", Quota: limiter.Quota{Header: single, Remaining: math.MaxInt64, Reset: math.MinInt64}},
		"long labels":          {Method: long, Tool: long, Limit: long, Plan: long, Quota: limiter.Quota{Header: single, Remaining: 5, Reset: 7}},
		"long quota values":    {Method: "tools/call", Quota: limiter.Quota{Header: header(long, long), Remaining: 1_000_000_000, Reset: 2_678_400}},
		"very long everything": {Method: longer, Tool: long, Plan: longer, Quota: limiter.Quota{Header: header(longer, longer), Remaining: 3, Reset: 4}},
	}
	for name, d := range decisions {
		d.Allow, d.Outcome = true, limiter.OutcomeAllowed
		for _, ph := range []phase{headersPhase, bodyPhase, trailersPhase} {
			t.Run(name, func(t *testing.T) {
				s := New(nil, Options{})
				for range 2 { // the second answer comes from the cached fixed part
					bufs := sendQuotaAnswer(t, s, wireBuffers, d, ph)
					checkQuotaAnswer(t, bufs, d, ph)
					bufs.Free()
				}
			})
		}
	}
}

// An answer's bytes stay its own until gRPC frees them, however many other
// answers are written meanwhile; freed buffers are reused.
func TestQuotaAnswersInFlightDoNotShareBuffers(t *testing.T) {
	s := New(nil, Options{})
	h := &limiter.QuotaHeader{Policy: `"shared";q=100;w=60`, Name: `"shared"`}
	var pending []mem.BufferSlice
	var ds []limiter.Decision
	for i := range 50 {
		d := limiter.Decision{Allow: true, Outcome: limiter.OutcomeAllowed, Method: "tools/call",
			Quota: limiter.Quota{Header: h, Remaining: int64(i), Reset: int64(100 - i)}}
		pending = append(pending, sendQuotaAnswer(t, s, wireBuffers, d, bodyPhase))
		ds = append(ds, d)
		if i%3 == 0 { // free some early, so later answers reuse their buffers
			checkQuotaAnswer(t, pending[0], ds[0], bodyPhase)
			pending[0].Free()
			pending, ds = pending[1:], ds[1:]
		}
	}
	for i := range pending {
		checkQuotaAnswer(t, pending[i], ds[i], bodyPhase)
		pending[i].Free()
	}
}

// countingPool records what gRPC gives back to a pool.
type countingPool struct {
	mu   sync.Mutex
	puts int
	wirePool
}

func (p *countingPool) Put(b *[]byte) {
	p.mu.Lock()
	p.puts++
	p.mu.Unlock()
	p.wirePool.Put(b)
}

// gRPC only returns a buffer to its pool when it is above its pooling
// threshold; wirePool's are, so each one comes back when the write is done.
func TestQuotaAnswerBufferReturnsToThePoolWhenFreed(t *testing.T) {
	s := New(nil, Options{})
	pool := &countingPool{}
	d := limiter.Decision{Allow: true, Outcome: limiter.OutcomeAllowed, Method: "tools/call",
		Quota: limiter.Quota{Header: &limiter.QuotaHeader{Policy: `"shared";q=1;w=1`, Name: `"shared"`}, Remaining: 0, Reset: 1}}
	for i := range 3 {
		bufs := sendQuotaAnswer(t, s, pool, d, bodyPhase)
		bufs.Free()
		if pool.puts != i+1 {
			t.Fatalf("after %d frees the pool got %d buffers back, want %d", i+1, pool.puts, i+1)
		}
	}
}

// Without quota values the answer stays the shared, pre-encoded one.
func TestAllowedAnswerWithoutQuotaIsShared(t *testing.T) {
	s := New(nil, Options{})
	d := limiter.Decision{Allow: true, Outcome: limiter.OutcomeAllowed, Method: "tools/call", Tool: "search", Plan: "pro"}
	first, ok := s.render(d, bodyPhase).(*extprocv3.ProcessingResponse)
	if !ok || s.render(d, bodyPhase) != first {
		t.Fatalf("rendered %T, want the same shared *ProcessingResponse twice", s.render(d, bodyPhase))
	}
	if !proto.Equal(first, wantAnswer(d, bodyPhase)) {
		t.Errorf("answer %v, want %v", first, wantAnswer(d, bodyPhase))
	}
	if other := s.render(limiter.Decision{Allow: true, Outcome: limiter.OutcomeAllowed, Method: "tools/call", Tool: "search", Plan: "free"}, bodyPhase); other == first {
		t.Error("another plan's answer is the same proto, want its own (plan is in the metadata)")
	}
}

func FuzzQuotaAnswerBytes(f *testing.F) {
	f.Add(uint8(1), "tools/call", "search", "", "", `"tool:search";q=10;w=60`, `"tool:search"`, int64(9), int64(6))
	f.Add(uint8(0), "", "", "server", "pro", strings.Repeat("p", 130), strings.Repeat("n", 300), int64(-1), int64(1<<40))
	f.Fuzz(func(t *testing.T, ph uint8, method, tool, limit, plan, policy, name string, remaining, reset int64) {
		for _, s := range []string{method, tool, limit, plan, policy, name} {
			if !utf8.ValidString(s) {
				return // proto strings are UTF-8; the policy's names are
			}
		}
		d := limiter.Decision{Allow: true, Outcome: limiter.OutcomeAllowed, Method: method, Tool: tool, Limit: limit, Plan: plan,
			Quota: limiter.Quota{Header: &limiter.QuotaHeader{Policy: policy, Name: name}, Remaining: remaining, Reset: reset}}
		p := phase(ph % 3)
		bufs := sendQuotaAnswer(t, New(nil, Options{}), wireBuffers, d, p)
		checkQuotaAnswer(t, bufs, d, p)
		bufs.Free()
	})
}
