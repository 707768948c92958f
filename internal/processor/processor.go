// Package processor serves Envoy's ext_proc protocol, translating each HTTP
// request into a limiter.Request and each limiter.Decision into protos.
package processor

import (
	"context"
	"log/slog"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mcp-ratelimit/extproc/internal/limiter"
)

// Decider makes the rate-limit decision; *limiter.Limiter implements it.
type Decider interface {
	Decide(ctx context.Context, r limiter.Request) limiter.Decision
}

// Observer is told about streams and decisions (metrics). Methods must be safe
// for concurrent use.
type Observer interface {
	StreamStarted()
	StreamEnded()
	Decided(d limiter.Decision, elapsed time.Duration)
}

// Options configure a Server. The zero value of each field is usable.
type Options struct {
	// Logger; nil: slog.Default().
	Logger *slog.Logger
	// Observer; nil: nothing is observed.
	Observer Observer
	// MaxBodyBytes bounds a body gathered from several chunks (STREAMED mode, which
	// the shipped configs do not use). Zero: 8 MiB. Past it the request continues
	// undecided and is counted as a parse error, rather than growing without bound.
	MaxBodyBytes int
}

// Server serves Envoy's ext_proc service on grpc-go (Register).
type Server struct {
	decider Decider
	log     *slog.Logger
	obs     Observer
	maxBody int
	answers answers
	// Answers that carry nothing request-specific, built once and shared.
	headersContinue, bodyContinue *extprocv3.ProcessingResponse
}

// New returns a Server asking d for each decision.
func New(d Decider, opts Options) *Server {
	s := &Server{decider: d, log: opts.Logger, obs: opts.Observer, maxBody: opts.MaxBodyBytes,
		headersContinue: continueHeaders(), bodyContinue: continueBody()}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.obs == nil {
		s.obs = nopObserver{}
	}
	if s.maxBody <= 0 {
		s.maxBody = 8 << 20
	}
	s.answers.encode(s.headersContinue)
	s.answers.encode(s.bodyContinue)
	return s
}

// handle answers one message: a *extprocv3.ProcessingResponse, or a
// *quotaAnswer (see render), for stream.SendMsg.
func (s *Server) handle(ctx context.Context, x *exchange, in *inbound) (any, error) {
	x.observe(in)
	switch in.kind {
	case kindRequestHeaders:
		x.start(in)
		if in.endOfStream {
			// No body (GET for SSE, DELETE): decided here, never limited: no server runs a call without a body.
			return s.decide(ctx, x, headersPhase), nil
		}
		return s.headersContinue, nil
	case kindRequestBody:
		if x.addBody(in, s.maxBody) {
			return s.decide(ctx, x, bodyPhase), nil
		}
		return s.bodyContinue, nil
	case kindRequestTrailers:
		if !x.decided && x.req.Body != nil {
			// A streamed body ended by trailers: decide now with what arrived.
			return s.decide(ctx, x, trailersPhase), nil
		}
		return continueTrailers(), nil
	case kindResponseHeaders:
		// Only sent if Envoy is configured to (the shipped configs skip it).
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{
			ResponseHeaders: &extprocv3.HeadersResponse{}}}, nil
	case kindResponseBody:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
			ResponseBody: &extprocv3.BodyResponse{}}}, nil
	case kindResponseTrailers:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{
			ResponseTrailers: &extprocv3.TrailersResponse{}}}, nil
	default:
		// Nothing sensible to answer; ending the stream makes Envoy apply its
		// failure_mode_allow, which is the documented backstop.
		return nil, status.Errorf(codes.InvalidArgument, "unsupported ext_proc message: %v", in.kind)
	}
}

// decide asks the decider and renders its answer for the phase being processed.
func (s *Server) decide(ctx context.Context, x *exchange, ph phase) any {
	x.decided = true
	start := time.Now()
	d := s.decider.Decide(ctx, x.req)
	s.obs.Decided(d, time.Since(start))
	return s.render(d, ph)
}

type nopObserver struct{}

func (nopObserver) StreamStarted()                          {}
func (nopObserver) StreamEnded()                            {}
func (nopObserver) Decided(limiter.Decision, time.Duration) {}
