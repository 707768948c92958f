package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"

	"github.com/mcp-ratelimit/extproc/internal/processor"
)

// runNullProcessor is the "nullproc" subcommand: an ext_proc server that answers
// every message with a bare continue, doing nothing else but unmarshal it. It is
// what an ext_proc server on a given transport costs at the least (stream
// set-up, two messages in, two answers out), so configuration (n) separates the
// price of the ext_proc protocol from the price of extproc's own work.
// -transport picks extproc's own (grpc-go with its options) or connect-go on
// net/http's HTTP/2 server (n-connect), the other maintained Go gRPC server,
// with the same windows and stream limit. /readyz on -admin-addr answers 200
// once the gRPC listener is open, as extproc's does.
func runNullProcessor(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("nullproc", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "gRPC listen address")
	admin := fs.String("admin-addr", "127.0.0.1:0", "HTTP /readyz listen address")
	transport := fs.String("transport", transportGRPCGo, "grpc-go (extproc's) or connect (connect-go on net/http's HTTP/2 server)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *transport != transportGRPCGo && *transport != transportConnect {
		return fmt.Errorf("-transport %q: want %s or %s", *transport, transportGRPCGo, transportConnect)
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
	np := newNullProcessor()
	var serve func(net.Listener) error
	var stop func()
	if *transport == transportConnect {
		cs := newConnectServer(np)
		serve, stop = cs.Serve, func() { cs.Close() }
	} else {
		// extproc's transport options, so that (n) is the floor of the same
		// transport, not of grpc-go's defaults.
		gs := grpc.NewServer(processor.TransportOptions(processor.Limits{})...)
		extprocv3.RegisterExternalProcessorServer(gs, np)
		serve, stop = gs.Serve, gs.Stop
	}
	hs := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }),
		ReadHeaderTimeout: 10 * time.Second,
	}
	errc := make(chan error, 2)
	go func() { errc <- serve(ln) }()
	go func() { errc <- hs.Serve(aln) }()
	select {
	case err := <-errc:
		stop()
		hs.Close()
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	stop()
	if err := hs.Close(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// nullProcessor answers each ext_proc message with a continue of its kind,
// built once and shared.
type nullProcessor struct {
	extprocv3.UnimplementedExternalProcessorServer
	headers, body, trailers *extprocv3.ProcessingResponse
}

func newNullProcessor() *nullProcessor {
	return &nullProcessor{
		headers: &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
			RequestHeaders: &extprocv3.HeadersResponse{}}},
		body: &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{
			RequestBody: &extprocv3.BodyResponse{}}},
		trailers: &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{
			RequestTrailers: &extprocv3.TrailersResponse{}}},
	}
}

// answer picks the continue for req.
func (p *nullProcessor) answer(req *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
	switch req.Request.(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		return p.headers
	case *extprocv3.ProcessingRequest_RequestTrailers:
		return p.trailers
	}
	return p.body
}

func (p *nullProcessor) Process(stream extprocv3.ExternalProcessor_ProcessServer) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(p.answer(req)); err != nil {
			return err
		}
	}
}
