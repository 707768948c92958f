package processor

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/mcp-ratelimit/extproc/internal/config"
	"github.com/mcp-ratelimit/extproc/internal/limiter"
)

// BenchmarkDecision is one full decision as the processor makes it: headers
// phase, then the buffered body parsed, charged (in-memory store) and rendered.
// The bucket is large enough that every call is allowed. headersOnAllowed=on
// adds the ratelimit values of the emptiest bucket to the metadata, which makes
// the answer one built per request rather than a cached one.
func BenchmarkDecision(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "headersOnAllowed=off"
		if on {
			name = "headersOnAllowed=on"
		}
		b.Run(name, func(b *testing.B) {
			p := policy(func(s *config.Server) {
				s.Shared = []config.Bucket{{MaxTokens: 1 << 30, RefillPeriod: time.Hour}}
				s.Tools = map[string]config.Tool{"search": {Name: "search", Cost: 1, Shared: []config.Bucket{{MaxTokens: 1 << 30, RefillPeriod: time.Hour}}}}
				s.Response.HeadersOnAllowed = on
			})
			s := New(limiter.New(p, limiter.Options{}), Options{})
			hdr, bdy := fromProto(postHeaders()), fromProto(body(searchCall))
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				var x exchange
				if _, err := s.handle(ctx, &x, &hdr); err != nil {
					b.Fatal(err)
				}
				resp, err := s.handle(ctx, &x, &bdy)
				if err != nil || resp.GetRequestBody() == nil {
					b.Fatalf("got %v %v, want a continue", resp, err)
				}
			}
		})
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
