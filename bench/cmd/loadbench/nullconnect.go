package main

import (
	"context"
	"errors"
	"io"
	"net/http"

	"connectrpc.com/connect"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/mcp-ratelimit/extproc/internal/processor"
)

// nullproc's -transport values.
const (
	transportGRPCGo  = "grpc-go"
	transportConnect = "connect"
)

// processProcedure is the gRPC path Envoy's ext_proc filter calls.
// go-control-plane ships no Connect handlers, so the one handler is built here
// from the generated message types.
const processProcedure = extprocv3.ExternalProcessor_Process_FullMethodName

// connectMaxHeaderBytes is what extproc's grpc-go server accepts as one
// stream's header list (16 KiB); net/http applies MaxHeaderBytes to HTTP/2
// header lists too.
const connectMaxHeaderBytes = 16 << 10

// newConnectServer serves p's Process on connect-go over prior-knowledge
// HTTP/2 without TLS (h2c), which is what Envoy's ext_proc cluster speaks, on
// net/http's own HTTP/2 server. Its limits are extproc's grpc-go ones
// (processor.TransportOptions), so that (n) and (n-connect) differ in the
// transport's code, not in its settings: the same stream and connection
// windows, at most 256 streams per connection, 5 MiB messages, and no
// compression (grpc-go's server compresses nothing unless told; connect
// would gzip its answers for a client that offered gzip).
func newConnectServer(p *nullProcessor) *http.Server {
	mux := http.NewServeMux()
	mux.Handle(processProcedure, connect.NewBidiStreamHandler(processProcedure, p.processConnect,
		connect.WithReadMaxBytes(processor.DefaultMaxMessageBytes),
		connect.WithCompression("gzip", nil, nil)))
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:   mux,
		Protocols: &protocols,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams:          processor.DefaultMaxConcurrentStreams,
			MaxReceiveBufferPerStream:     processor.StreamWindowBytes,
			MaxReceiveBufferPerConnection: processor.ConnWindowBytes,
		},
		MaxHeaderBytes: connectMaxHeaderBytes,
	}
}

// processConnect is Process on connect-go's stream API.
func (p *nullProcessor) processConnect(_ context.Context, stream *connect.BidiStream[extprocv3.ProcessingRequest, extprocv3.ProcessingResponse]) error {
	for {
		req, err := stream.Receive()
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
