package processor

import (
	"context"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/mcp-ratelimit/extproc/internal/bucket"
	"github.com/mcp-ratelimit/extproc/internal/config"
	"github.com/mcp-ratelimit/extproc/internal/limiter"
)

// gateStore holds every Take until its gate opens.
type gateStore struct {
	asked chan struct{}
	gate  chan struct{}
}

func (g gateStore) Take(ctx context.Context, _ []bucket.Charge) (bucket.Result, error) {
	g.asked <- struct{}{}
	select {
	case <-g.gate:
		return bucket.Result{Allowed: true}, nil
	case <-ctx.Done():
		return bucket.Result{}, ctx.Err()
	}
}

type replyResult struct {
	resp *extprocv3.ProcessingResponse
	err  error
}

func replyTo(t *testing.T) (func([]byte, error), chan replyResult) {
	ch := make(chan replyResult, 1)
	return func(b []byte, err error) {
		var r replyResult
		if err != nil {
			r.err = err
		} else {
			r.resp = new(extprocv3.ProcessingResponse)
			if uerr := proto.Unmarshal(b, r.resp); uerr != nil {
				t.Errorf("answer does not unmarshal: %v", uerr)
			}
		}
		ch <- r
	}, ch
}

func wire(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Message may run on grpclite's reading goroutine, which serves every stream of
// the connection: a decision waiting for the store must not hold it.
func TestStreamMessageReturnsWhileTheDecisionWaitsForTheStore(t *testing.T) {
	store := gateStore{asked: make(chan struct{}, 1), gate: make(chan struct{})}
	p := policy(func(s *config.Server) {
		s.Tools = map[string]config.Tool{"search": {Name: "search", Cost: 1, PerUser: &config.Bucket{MaxTokens: 5, RefillPeriod: time.Second}}}
	})
	p.Redis.Timeout = time.Minute // the store's deadline must not end the wait first
	srv := New(limiter.New(p, limiter.Options{Store: store}), Options{})
	st := srv.OpenStream(t.Context())
	defer st.Done()

	reply, got := replyTo(t)
	st.Message(wire(t, postHeaders()), reply)
	if r := <-got; r.err != nil || !proto.Equal(r.resp, continueHeaders()) {
		t.Fatalf("headers: got %v, %v; want a continue", r.resp, r.err)
	}
	st.Message(wire(t, body(searchCall)), reply)
	<-store.asked // Message returned and the decision is waiting for the store
	select {
	case r := <-got:
		t.Fatalf("got an answer %v before the store answered", r)
	default:
	}
	close(store.gate)
	r := <-got
	want := withMetadata(continueBody(), "decision", "allowed", "method", "tools/call", "tool", "search")
	if diff := cmp.Diff(want, r.resp, protocmp.Transform()); r.err != nil || diff != "" {
		t.Fatalf("body: err %v, answer (-want +got):\n%s", r.err, diff)
	}
}

func TestStreamMessageThatDoesNotUnmarshalIsInvalidArgument(t *testing.T) {
	srv := New(limiter.New(policy(nil), limiter.Options{}), Options{})
	st := srv.OpenStream(t.Context())
	defer st.Done()
	reply, got := replyTo(t)
	st.Message([]byte{0xff, 0xff, 0xff}, reply)
	if r := <-got; status.Code(r.err) != codes.InvalidArgument {
		t.Fatalf("got %v, %v; want InvalidArgument", r.resp, r.err)
	}
}
