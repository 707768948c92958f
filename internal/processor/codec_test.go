package processor

import (
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/mcp-ratelimit/extproc/internal/limiter"
)

func TestCodecSendsSharedAnswersAsTheirProtoEncoding(t *testing.T) {
	s := New(nil, Options{})
	allowed := limiter.Decision{Allow: true, Outcome: limiter.OutcomeAllowed, Method: "tools/call", Tool: "search", Limit: "tool:search"}
	shared := s.render(allowed, bodyPhase)
	if again := s.render(allowed, bodyPhase); again != shared {
		t.Fatal("the same decision rendered twice gave two protos, want the shared one")
	}
	fresh := continueBody() // same content, but not one of s's shared answers
	fresh.DynamicMetadata = metadata(allowed)

	c := s.Codec()
	for _, tc := range []struct {
		name string
		msg  *extprocv3.ProcessingResponse
	}{
		{"headers continue", s.headersContinue},
		{"body continue", s.bodyContinue},
		{"shared decision with metadata", shared},
		{"message the server did not build", fresh},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bufs, err := c.Marshal(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			got := &extprocv3.ProcessingResponse{}
			if err := proto.Unmarshal(bufs.Materialize(), got); err != nil {
				t.Fatalf("codec output does not unmarshal: %v", err)
			}
			if diff := cmp.Diff(tc.msg, got, protocmp.Transform()); diff != "" {
				t.Errorf("round trip (-sent +decoded):\n%s", diff)
			}
			bufs.Free()
			// Freeing what gRPC wrote must leave the shared bytes intact.
			again, err := c.Marshal(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			if err := proto.Unmarshal(again.Materialize(), got); err != nil {
				t.Fatalf("second marshal does not unmarshal: %v", err)
			}
		})
	}
	if _, ok := s.answers.encoded.Load(shared); !ok {
		t.Error("the shared decision's bytes were not kept")
	}
	if _, ok := s.answers.encoded.Load(fresh); ok {
		t.Error("bytes kept for a message the server did not build")
	}
}
