package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
)

// probeResult is what an ext_proc server sees of one request when Envoy skips the
// request headers phase: whether Envoy accepts the configuration, which message
// comes first, and the attributes it carries.
type probeResult struct {
	Messages   []string // message kinds, in order: request_headers, request_body, ...
	Attributes string   // attributes["envoy.filters.http.ext_proc"] of the first message, as JSON
}

// recorder is a minimal ext_proc server: it continues everything and records what
// it received.
type recorder struct {
	extprocv3.UnimplementedExternalProcessorServer
	mu   sync.Mutex
	msgs []*extprocv3.ProcessingRequest
}

func (r *recorder) Process(stream extprocv3.ExternalProcessor_ProcessServer) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			return nil // Envoy closed the stream; nothing to answer
		}
		r.mu.Lock()
		r.msgs = append(r.msgs, req)
		r.mu.Unlock()
		var resp extprocv3.ProcessingResponse
		switch req.Request.(type) {
		case *extprocv3.ProcessingRequest_RequestHeaders:
			resp.Response = &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{}}
		case *extprocv3.ProcessingRequest_RequestBody:
			resp.Response = &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{}}
		case *extprocv3.ProcessingRequest_RequestTrailers:
			resp.Response = &extprocv3.ProcessingResponse_RequestTrailers{RequestTrailers: &extprocv3.TrailersResponse{}}
		default:
			return fmt.Errorf("probe: unexpected %T", req.Request)
		}
		if err := stream.Send(&resp); err != nil {
			return err
		}
	}
}

// runProbe starts Envoy in the headers-SKIP configuration (e) in front of the
// upstream, with the recorder as its processor, sends one MCP POST with the headers
// the limiter reads, and reports what the processor received.
func runProbe(ctx context.Context, r *runner, attrs []string) (probeResult, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return probeResult{}, err
	}
	rec := &recorder{}
	gs := grpc.NewServer()
	extprocv3.RegisterExternalProcessorServer(gs, rec)
	go func() { _ = gs.Serve(ln) }()
	defer gs.Stop()

	env, err := r.startEnvoy(ctx, "probe", envoyParams{
		Filter: filterExtproc, SkipHeaders: true, Attributes: attrs,
		ExtprocPort: ln.Addr().(*net.TCPAddr).Port,
	})
	if err != nil {
		return probeResult{}, err
	}
	defer env.stop()

	body := toolsCall(nil, 7, toolEcho)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+env.listen+"/github/mcp", bytes.NewReader(body))
	if err != nil {
		return probeResult{}, err
	}
	req.Host = "mcp.example.com"
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	req.Header.Set("X-User-Id", "alice")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return probeResult{}, err
	}
	// The status does not matter: the Go SDK answers 403 to a Host that is not the
	// loopback it listens on (DNS rebinding protection); the processor saw the request.
	resp.Body.Close()

	var res probeResult
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for i, m := range rec.msgs {
		kind := fmt.Sprintf("%T", m.Request)
		switch m.Request.(type) {
		case *extprocv3.ProcessingRequest_RequestHeaders:
			kind = "request_headers"
		case *extprocv3.ProcessingRequest_RequestBody:
			kind = "request_body"
		case *extprocv3.ProcessingRequest_RequestTrailers:
			kind = "request_trailers"
		}
		res.Messages = append(res.Messages, kind)
		if i == 0 {
			if a := m.GetAttributes()["envoy.filters.http.ext_proc"]; a != nil {
				b, err := protojson.Marshal(a)
				if err != nil {
					return probeResult{}, err
				}
				res.Attributes = string(b)
			}
		}
	}
	return res, nil
}
