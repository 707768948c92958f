package processor

import (
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/mcp-ratelimit/extproc/internal/limiter"
)

func TestCodecSendsSharedAnswersAsBytesMarshalledOnce(t *testing.T) {
	s := New(nil, Options{})
	allowed := limiter.Decision{Allow: true, Outcome: limiter.OutcomeAllowed, Method: "tools/call", Tool: "search", Limit: "tool:search"}
	shared := s.render(allowed, bodyPhase).(*extprocv3.ProcessingResponse)
	if again := s.render(allowed, bodyPhase); again != shared {
		t.Fatal("the same decision rendered twice gave two protos, want the shared one")
	}
	fresh := continueBody() // same content, but not one of s's shared answers
	fresh.DynamicMetadata = metadata(allowed)

	c := s.Codec()
	for _, tc := range []struct {
		name   string
		msg    *extprocv3.ProcessingResponse
		shared bool // sent as the bytes kept for it
	}{
		{"headers continue", s.headersContinue, true},
		{"body continue", s.bodyContinue, true},
		{"shared decision with metadata", shared, true},
		{"message the server did not build", fresh, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i := range 2 { // the second send must be as good as the first
				bufs, err := c.Marshal(tc.msg)
				if err != nil {
					t.Fatal(err)
				}
				got := &extprocv3.ProcessingResponse{}
				if err := proto.Unmarshal(bufs.Materialize(), got); err != nil {
					t.Fatalf("send %d: codec output does not unmarshal: %v", i, err)
				}
				if diff := cmp.Diff(tc.msg, got, protocmp.Transform()); diff != "" {
					t.Errorf("send %d: round trip (-sent +decoded):\n%s", i, diff)
				}
				if sent := sameBytes(t, s, tc.msg, bufs); sent != tc.shared {
					t.Errorf("send %d: sent the kept bytes: %v, want %v", i, sent, tc.shared)
				}
				bufs.Free() // as gRPC does after the write
			}
		})
	}
}

// sameBytes reports whether bufs is the very memory s keeps for msg.
func sameBytes(t *testing.T, s *Server, msg *extprocv3.ProcessingResponse, bufs mem.BufferSlice) bool {
	t.Helper()
	kept, ok := s.answers.encoded.Load(msg)
	if !ok {
		return false
	}
	k := kept.(mem.BufferSlice)
	if len(k) != 1 || len(bufs) != 1 {
		t.Fatalf("got %d kept and %d sent buffers, want 1 each", len(k), len(bufs))
	}
	a, b := k[0].ReadOnlyData(), bufs[0].ReadOnlyData()
	return len(a) > 0 && len(a) == len(b) && &a[0] == &b[0]
}

func TestCodecMarshalOfASharedAnswerAllocatesNothing(t *testing.T) {
	s := New(nil, Options{})
	c := s.Codec()
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := c.Marshal(s.bodyContinue); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("got %v allocations per Marshal, want 0", allocs)
	}
}
