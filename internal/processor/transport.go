package processor

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// Limits are what one extproc accepts from the gRPC connections it serves.
// Every field's zero value is the default named beside it, chosen for what
// Envoy does: one stream per HTTP request, two small messages and one body of
// at most its buffer limit, connections that live for days.
type Limits struct {
	// MaxMessageBytes bounds one ext_proc message (DefaultMaxMessageBytes):
	// the buffered body plus its headers. It must stay above Envoy's buffer
	// limit, or a body near that limit ends its stream and Envoy's
	// failure_mode_allow lets the request through undecided.
	MaxMessageBytes int
	// MaxConcurrentStreams per connection (DefaultMaxConcurrentStreams).
	// Envoy opens another connection when one is full.
	MaxConcurrentStreams uint32
	// MaxInflightBytes bounds the bytes of received, unfinished messages the
	// server holds across all its streams and connections
	// (DefaultMaxInflightBytes). Past it, the streams that have waited longest
	// for a whole message are canceled until it holds less (see inflight).
	MaxInflightBytes int64
}

// Defaults of Limits and the fixed transport settings; docs/operations.md lists them
// with their reasons.
const (
	// DefaultMaxMessageBytes is Envoy's shipped 4 MiB buffer limit plus 1 MiB
	// for the headers and attributes beside the body.
	DefaultMaxMessageBytes = 5 << 20
	// DefaultMaxConcurrentStreams is far above one Envoy worker's requests in
	// flight, and bounds what one connection holds: with the stream window,
	// at most 256 × 256 KiB of unread bytes, and at most 256 messages being
	// read at once.
	DefaultMaxConcurrentStreams = 256
	// DefaultMaxInflightBytes is 64 bodies of Envoy's 4 MiB buffer limit
	// arriving at once: Envoy sends a body in milliseconds, so far more than
	// its requests in flight ever hold, and small enough that a replica with
	// 512 MiB of memory survives clients that never finish their messages.
	DefaultMaxInflightBytes = 256 << 20

	// StreamWindowBytes is each stream's flow-control window: the bytes Envoy
	// may send ahead of the handler reading them. A 4 MiB body then takes 16
	// window updates; a request's headers, none.
	StreamWindowBytes = 256 << 10
	// ConnWindowBytes is the connection's window: a few bodies at once.
	ConnWindowBytes = 4 << 20

	// maxHeaderListBytes bounds the HTTP/2 header list of one stream. Envoy's
	// are a few hundred bytes (the request headers travel in the message,
	// not here); grpc-go's default, 16 MiB, let a CONTINUATION flood or a
	// 1 MiB header list pin about 1 MiB per stream.
	maxHeaderListBytes = 16 << 10
	// handshakeTimeout closes a connection that has not sent the HTTP/2
	// preface and SETTINGS by then (grpc-go's default is 120 s).
	handshakeTimeout = 5 * time.Second
	// maxConnectionIdle closes a connection without streams for that long; an
	// Envoy worker idle for 5 minutes reconnects when it needs to.
	maxConnectionIdle = 5 * time.Minute
	// maxConnectionAge and its grace make every connection end in about 30
	// minutes, its streams finishing first, so that Envoy's connections spread
	// over replicas added since (they are long-lived otherwise, and a scale-up
	// would take no load).
	maxConnectionAge      = 30 * time.Minute
	maxConnectionAgeGrace = 1 * time.Minute
	// keepaliveTime and keepaliveTimeout ping a quiet client after 30 s and
	// close its connection if the ping is not answered within 10 s, so that
	// the connections of vanished Envoys do not linger.
	keepaliveTime    = 30 * time.Second
	keepaliveTimeout = 10 * time.Second
	// minPingInterval is the most often a client may ping: Envoy's HTTP/2
	// keepalive may ping every few seconds, also between streams (grpc-go's
	// default, 5 minutes and never without a stream, would answer it with
	// GOAWAY too_many_pings). A client pinging more often is cut off.
	minPingInterval = 5 * time.Second
)

// MemoryLimit is the Go memory limit (runtime/debug.SetMemoryLimit) for a
// process serving with l: the in-flight budget plus twice the heap headroom.
// The heap watcher keeps the live heap under the budget plus one headroom; the
// runtime collects on its own only when the heap has doubled since its last
// collection, so without a limit the memory of shed streams would be reused
// only at about twice that. With it, the runtime collects whenever the whole
// of its memory reaches the limit, and the second headroom is the garbage it
// lets pile up in between: enough that it does not collect back to back
// while the watcher sheds.
func (l Limits) MemoryLimit() int64 {
	if l.MaxInflightBytes <= 0 {
		l.MaxInflightBytes = DefaultMaxInflightBytes
	}
	return l.MaxInflightBytes + 2*heapHeadroom
}

// TransportOptions are the grpc-go server options for serving ext_proc: the
// limits (with the bound on bytes held, which takes grpc-go's buffer pool, tap
// handle and a stream interceptor, and watches the heap while streams are
// open; see also Limits.MemoryLimit), fixed flow-control windows, keepalive enforcement, idle and age
// limits, and a handshake timeout. Fixed windows also turn off grpc-go's
// bandwidth-delay probing: with its defaults (64 KiB, then BDP estimation) a
// stream of a few hundred bytes costs extra PING and WINDOW_UPDATE frames,
// each a write on both sides.
func TransportOptions(l Limits) []grpc.ServerOption {
	if l.MaxMessageBytes <= 0 {
		l.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if l.MaxConcurrentStreams == 0 {
		l.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if l.MaxInflightBytes <= 0 {
		l.MaxInflightBytes = DefaultMaxInflightBytes
	}
	return append(newInflight(l.MaxInflightBytes).options(),
		grpc.MaxRecvMsgSize(l.MaxMessageBytes),
		grpc.MaxConcurrentStreams(l.MaxConcurrentStreams),
		grpc.MaxHeaderListSize(maxHeaderListBytes),
		grpc.InitialWindowSize(StreamWindowBytes),
		grpc.InitialConnWindowSize(ConnWindowBytes),
		grpc.ConnectionTimeout(handshakeTimeout),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             minPingInterval,
			PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle:     maxConnectionIdle,
			MaxConnectionAge:      maxConnectionAge,
			MaxConnectionAgeGrace: maxConnectionAgeGrace,
			Time:                  keepaliveTime,
			Timeout:               keepaliveTimeout,
		}),
	)
}
