// Package processor serves Envoy's ext_proc protocol, translating each HTTP
// request into a limiter.Request and each limiter.Decision into protos.
package processor

import (
	"context"
	"log/slog"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/mcp-ratelimit/extproc/internal/limiter"
)

// Decider makes the rate-limit decision; *limiter.Limiter implements it.
type Decider interface {
	Decide(ctx context.Context, r limiter.Request) limiter.Decision
}

// Options configure a Server. The zero value of each field is usable.
type Options struct {
	// Logger; nil: slog.Default().
	Logger *slog.Logger
}

// Server implements extprocv3.ExternalProcessorServer.
type Server struct {
	extprocv3.UnimplementedExternalProcessorServer
	decider Decider
	log     *slog.Logger
}

// New returns a Server asking d for each decision.
func New(d Decider, opts Options) *Server {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Server{decider: d, log: log}
}
