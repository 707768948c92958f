package processor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/mcp-ratelimit/extproc/internal/config"
	"github.com/mcp-ratelimit/extproc/internal/limiter"
)

// BenchmarkDecision is one full decision as the processor makes it: headers
// phase, then the buffered body parsed, charged (in-memory store), rendered
// and marshalled as Codec sends it (then freed, as gRPC does after the
// write). The server-wide and the tool's shared slots each hold buckets=N
// buckets, all large enough that every call is allowed. headersOnAllowed=on
// adds the ratelimit values of the emptiest bucket to the metadata, which
// makes the answer a quotaAnswer written per request rather than the cached
// bytes of a shared one.
func BenchmarkDecision(b *testing.B) {
	periods := []time.Duration{time.Hour, 24 * time.Hour, 7 * 24 * time.Hour, 30 * 24 * time.Hour}
	for _, n := range []int{1, 2, 4} {
		slot := make([]config.Bucket, n)
		for i := range slot {
			slot[i] = config.Bucket{MaxTokens: 1 << 30, RefillPeriod: periods[i]}
		}
		for _, on := range []bool{false, true} {
			name := fmt.Sprintf("buckets=%d/headersOnAllowed=off", n)
			if on {
				name = fmt.Sprintf("buckets=%d/headersOnAllowed=on", n)
			}
			b.Run(name, func(b *testing.B) {
				p := policy(func(s *config.Server) {
					s.Shared = slot
					s.Tools = map[string]config.Tool{"search": {Name: "search", Cost: 1, Shared: slot}}
					s.Response.HeadersOnAllowed = on
				})
				s := New(limiter.New(p, limiter.Options{}), Options{})
				c := s.Codec()
				hdr, bdy := fromProto(postHeaders()), fromProto(body(searchCall))
				ctx := context.Background()
				decide := func() mem.BufferSlice {
					var x exchange
					if _, err := s.handle(ctx, &x, &hdr); err != nil {
						b.Fatal(err)
					}
					resp, err := s.handle(ctx, &x, &bdy)
					if err != nil {
						b.Fatal(err)
					}
					bufs, err := c.Marshal(resp)
					if err != nil {
						b.Fatal(err)
					}
					return bufs
				}
				// The answer is checked once, outside the measured loop.
				got := &extprocv3.ProcessingResponse{}
				if err := proto.Unmarshal(decide().Materialize(), got); err != nil || got.GetRequestBody() == nil {
					b.Fatalf("got %v %v, want a continue", got, err)
				}
				_, hasQuota := got.GetDynamicMetadata().GetFields()[MetadataNamespace].GetStructValue().GetFields()[keyRateLimit]
				if hasQuota != on {
					b.Fatalf("answer carries ratelimit: %v, want %v", hasQuota, on)
				}
				b.ReportAllocs()
				for b.Loop() {
					decide().Free()
				}
			})
		}
	}
}

// BenchmarkDecisionRejected measures the rejection path (body and headers built).
func BenchmarkDecisionRejected(b *testing.B) {
	s := New(limiter.New(policy(nil), limiter.Options{}), Options{})
	hdr, bdy := fromProto(postHeaders()), fromProto(body(searchCall))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		var x exchange
		_, _ = s.handle(ctx, &x, &hdr)
		_, _ = s.handle(ctx, &x, &bdy)
	}
}

// BenchmarkStream is one whole ext_proc stream as Envoy drives it (headers,
// buffered body, half-close), from a grpc-go client over loopback TCP, with 8
// streams at a time on one connection, served as cmd/extproc serves them. The
// client's work is in the figure too.
func BenchmarkStream(b *testing.B) {
	p := policy(func(s *config.Server) {
		s.Shared = []config.Bucket{{MaxTokens: 1 << 30, RefillPeriod: time.Hour}}
		s.Tools = map[string]config.Tool{"search": {Name: "search", Cost: 1, Shared: []config.Bucket{{MaxTokens: 1 << 30, RefillPeriod: time.Hour}}}}
	})
	s := New(limiter.New(p, limiter.Options{}), Options{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	gs := grpc.NewServer(append(TransportOptions(Limits{}), grpc.ForceServerCodecV2(s.Codec()))...)
	s.Register(gs)
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()
	conn, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	c := extprocv3.NewExternalProcessorClient(conn)
	hdr, bdy := postHeaders(), body(searchCall)
	b.ReportAllocs()
	b.SetParallelism(4) // 8 streams at a time with GOMAXPROCS 2
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			stream, err := c.Process(ctx)
			if err != nil {
				b.Error(err)
				return
			}
			for _, m := range []*extprocv3.ProcessingRequest{hdr, bdy} {
				if err := stream.Send(m); err != nil {
					b.Error(err)
					return
				}
				if _, err := stream.Recv(); err != nil {
					b.Error(err)
					return
				}
			}
			if err := stream.CloseSend(); err != nil {
				b.Error(err)
				return
			}
			if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
				b.Errorf("after the body: got %v, want io.EOF", err)
				return
			}
		}
	})
}
