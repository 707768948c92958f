package processor

import "google.golang.org/grpc"

// The gRPC flow-control windows, for grpc-go and grpclite alike: per stream,
// enough for a shipped-size body in a few updates; per connection (one Envoy
// worker's streams together), a few such bodies. They bound what an Envoy can
// send ahead of the handlers.
const (
	StreamWindowBytes = 1 << 20
	ConnWindowBytes   = 4 << 20
)

// TransportOptions are the gRPC server options for serving ext_proc streams:
// fixed flow-control windows, which turn off grpc-go's bandwidth-delay probing.
// With its defaults (64 KiB, then BDP estimation) a stream of a few hundred
// bytes costs extra PING and WINDOW_UPDATE frames, each a write on both sides;
// paired bench/ runs measured ~6% less extproc CPU and ~2% less Envoy CPU per
// request without them. A body of several MiB takes a few window updates.
func TransportOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.InitialWindowSize(StreamWindowBytes),
		grpc.InitialConnWindowSize(ConnWindowBytes),
	}
}
