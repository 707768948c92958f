package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"

	"github.com/mcp-ratelimit/extproc/internal/processor"
)

// runNullRLS is the "nullrls" subcommand: an envoy.service.ratelimit.v3
// RateLimitService that answers OK to every ShouldRateLimit call without looking
// at the descriptors. Behind Envoy's ratelimit filter, configuration (r), it is
// the floor of Envoy's global rate-limit path (one unary gRPC call per request)
// before any counting or Redis work, the baseline a limiter built on that path
// could at best reach. It is grpc-go with extproc's flow-control windows, as
// (n)'s null processor is, so the two differ only in the protocol: one
// unary call against one bidirectional stream of two messages. /readyz on
// -admin-addr answers 200 once the gRPC listener is open, as nullproc's does.
func runNullRLS(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("nullrls", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "gRPC listen address")
	admin := fs.String("admin-addr", "127.0.0.1:0", "HTTP /readyz listen address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	aln, err := net.Listen("tcp", *admin)
	if err != nil {
		ln.Close()
		return fmt.Errorf("listen: %w", err)
	}
	gs := grpc.NewServer(processor.TransportOptions(processor.Limits{})...)
	rlsv3.RegisterRateLimitServiceServer(gs, nullRLS{})
	hs := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }),
		ReadHeaderTimeout: 10 * time.Second,
	}
	errc := make(chan error, 2)
	go func() { errc <- gs.Serve(ln) }()
	go func() { errc <- hs.Serve(aln) }()
	select {
	case err := <-errc:
		gs.Stop()
		hs.Close()
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	gs.Stop()
	if err := hs.Close(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// rlsOK is the one answer nullRLS gives. It is shared, never modified: grpc-go
// only reads a response to marshal it.
var rlsOK = &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK}

// nullRLS answers OK to every call.
type nullRLS struct {
	rlsv3.UnimplementedRateLimitServiceServer
}

func (nullRLS) ShouldRateLimit(context.Context, *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	return rlsOK, nil
}
