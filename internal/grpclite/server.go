// Package grpclite serves one bidirectional-streaming gRPC method over
// cleartext HTTP/2 (h2c) with far less work per stream than grpc-go, and hands
// every other connection to a grpc-go server.
//
// Why it exists: Envoy's ext_proc filter opens one gRPC stream per HTTP
// request, so the processor's cost per stream is paid on every request. grpc-go
// runs each stream on its own goroutine and each write through a separate
// writer goroutine; measured through Envoy (bench/), a server that unmarshals
// each message and answers "continue" cost 0.17-0.19 ms of CPU per request on
// grpc-go, 0.08-0.11 on this package. Here a connection's frames are read by one
// goroutine that also assembles each stream's messages and hands them to the
// handler in order, answers are written straight to the connection under a
// mutex, and the writes of one read batch go out in one flush.
//
// What it implements of HTTP/2 (RFC 9113): the connection preface, SETTINGS,
// PING, both directions of flow control, HEADERS with CONTINUATION (through
// x/net/http2's Framer and HPACK), DATA, RST_STREAM and GOAWAY with a graceful
// two-step drain. It does not implement server push, priorities, TLS or gRPC
// compression (a compressed message ends its stream with UNIMPLEMENTED). gRPC
// deadlines (grpc-timeout) are not read; Envoy's ext_proc sends none and
// enforces its own message_timeout. It sends no keepalive PINGs of its own (it
// answers the client's): a vanished client is found by TCP keepalive, which Go
// turns on for accepted TCP connections.
//
// Connections are routed by their first stream: if it calls Method, this
// package serves the connection; otherwise (gRPC health checks from Envoy or
// the kubelet, reflection, anything else) the bytes read so far are replayed to
// the listener returned by Fallback, which a grpc-go server serves. A later
// stream on a connection served here that calls another method is answered
// UNIMPLEMENTED.
package grpclite

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"
)

// StreamHandler serves the messages of one stream, one at a time: Message is
// not called again until reply has been called for the message before.
type StreamHandler interface {
	// Message handles one request message (without gRPC's 5-byte prefix; msg is
	// the handler's to keep) and calls reply exactly once, on any goroutine:
	// with the response message, or with an error, which ends the stream with
	// the error's gRPC status (google.golang.org/grpc/status.FromError).
	// Message must not block on I/O: a handler that waits (for a store, say)
	// does so on a goroutine of its own, because Message may run on the
	// connection's reading goroutine.
	Message(msg []byte, reply func(resp []byte, err error))
	// Done is called once when the stream has ended, after the last reply. It
	// must not block.
	Done()
}

// Handler opens a StreamHandler for each new stream of Method. ctx is
// cancelled when the stream ends, is reset by the client, or its connection
// closes.
type Handler func(ctx context.Context) StreamHandler

// Options configure a Server. Method and Handler are required; the zero value
// of every other field is usable.
type Options struct {
	// Method is the full method name served, "/package.Service/Method".
	Method string
	// Handler opens the handler of each stream.
	Handler Handler
	// MaxMessageBytes bounds one request message; a larger one ends its stream
	// with RESOURCE_EXHAUSTED. Zero: 4 MiB, grpc-go's default.
	MaxMessageBytes int
	// StreamWindow and ConnWindow are the flow-control windows granted to the
	// client, per stream and per connection. Zero: 1 MiB and 4 MiB.
	StreamWindow, ConnWindow uint32
	// MaxConcurrentStreams per connection; past it a new stream is refused
	// (REFUSED_STREAM, which clients retry). Zero: 10,000.
	MaxConcurrentStreams uint32
	// DrainTimeout bounds how long a drain waits for the client to acknowledge
	// its PING before sending the final GOAWAY anyway, so that a client that
	// never answers does not hold Shutdown to its deadline. Zero: 5 s, as
	// grpc-go.
	DrainTimeout time.Duration
	// Logger for connection-level errors; nil: slog.Default().
	Logger *slog.Logger
}

// Server serves Method. Create one with New.
type Server struct {
	opts     Options
	log      *slog.Logger
	fallback *fallbackListener

	mu       sync.Mutex
	lis      map[net.Listener]struct{}
	conns    map[*conn]struct{}
	draining bool
	wg       sync.WaitGroup // one per connection goroutine
}

// New returns a Server for opts.
func New(opts Options) *Server {
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = 4 << 20
	}
	if opts.StreamWindow == 0 {
		opts.StreamWindow = 1 << 20
	}
	// A client may send 65535 bytes on a stream before our SETTINGS reach it
	// (RFC 9113 §6.9.2), and the window is enforced from the stream's first
	// byte: a smaller window reset streams of conforming clients with
	// FLOW_CONTROL_ERROR. (ConnWindow is likewise never below 65535; see start.)
	opts.StreamWindow = max(opts.StreamWindow, 65535)
	if opts.ConnWindow == 0 {
		opts.ConnWindow = 4 << 20
	}
	if opts.MaxConcurrentStreams == 0 {
		opts.MaxConcurrentStreams = 10000
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = 5 * time.Second
	}
	s := &Server{opts: opts, log: opts.Logger, lis: map[net.Listener]struct{}{}, conns: map[*conn]struct{}{}}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.fallback = newFallbackListener()
	return s
}

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("grpclite: server closed")

// Fallback is the listener on which connections for other methods arrive; serve
// it with a grpc-go server. It is closed by Shutdown and Close.
func (s *Server) Fallback() net.Listener { return s.fallback }

// Serve accepts connections on ln until Shutdown or Close, which make it return
// ErrServerClosed. Any other error from Accept is returned as it is.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.lis[ln] = struct{}{}
	s.mu.Unlock()
	for {
		nc, err := ln.Accept()
		if err != nil {
			// EMFILE and the like: back off as net/http does, rather than spin.
			// (They are Temporary but not Timeout errors; testing Timeout alone
			// made Serve return on EMFILE.)
			var ne interface{ Temporary() bool }
			retry := errors.As(err, &ne) && ne.Temporary()
			s.mu.Lock()
			draining := s.draining
			// ln stays in s.lis while it is served: deleted before a retry, it
			// was never closed by Shutdown or Close, and Serve never returned.
			if draining || !retry {
				delete(s.lis, ln)
			}
			s.mu.Unlock()
			if draining {
				return ErrServerClosed
			}
			if retry {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		c := newConn(s, nc)
		s.mu.Lock()
		if s.draining {
			s.mu.Unlock()
			nc.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			c.serve()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// Shutdown stops accepting, tells every client to open no more streams (GOAWAY)
// and waits until the streams in flight have ended and their handlers are
// done. If ctx ends first, it closes the connections, cancelling the streams'
// contexts, still waits for their handlers to reply, and returns ctx's error.
// Connections already handed to Fallback are the grpc-go server's to stop.
func (s *Server) Shutdown(ctx context.Context) error {
	conns := s.startDrain()
	done := make(chan struct{})
	go func() {
		// goAway writes under the connection's mutex, which a write blocked on
		// a client that stopped reading holds: on this goroutine, so that
		// ctx still bounds Shutdown (closeConns unblocks such writes).
		for _, c := range conns {
			c.goAway()
		}
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.closeConns()
		<-done
		return ctx.Err()
	}
}

// Close closes the listeners and every connection at once, cancelling the
// streams' contexts, and waits for their handlers to reply.
func (s *Server) Close() {
	s.startDrain()
	s.closeConns()
	s.wg.Wait()
}

func (s *Server) startDrain() []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.draining = true
	for ln := range s.lis {
		ln.Close()
	}
	s.fallback.Close()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	return conns
}

func (s *Server) closeConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.close()
	}
}
