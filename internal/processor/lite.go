package processor

import (
	"context"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Stream serves one ext_proc stream message by message, for a transport that
// hands over each request message and takes each answer as bytes
// (internal/grpclite); Process is the same for grpc-go's stream API. Both
// answer through handle.
type Stream struct {
	s   *Server
	ctx context.Context
	x   exchange
}

// OpenStream starts serving a stream; ctx ends with it.
func (s *Server) OpenStream(ctx context.Context) *Stream {
	s.obs.StreamStarted()
	return &Stream{s: s, ctx: ctx}
}

// Message answers one ProcessingRequest, in wire form, through reply. A message
// that may need a decision is answered on a goroutine of its own, since the
// decision may wait for the store; the others (request headers with a body to
// follow, the response phases) are answered at once.
func (st *Stream) Message(msg []byte, reply func([]byte, error)) {
	in, err := decodeRequest(msg)
	if err != nil {
		reply(nil, status.Errorf(codes.InvalidArgument, "unreadable ProcessingRequest: %v", err))
		return
	}
	if !mayDecide(&in) {
		st.answer(&in, reply)
		return
	}
	go func() {
		growStack()
		st.answer(&in, reply)
	}()
}

// Done ends the stream.
func (st *Stream) Done() { st.s.obs.StreamEnded() }

func (st *Stream) answer(in *inbound, reply func([]byte, error)) {
	resp, err := st.s.handle(st.ctx, &st.x, in)
	if err != nil {
		reply(nil, err)
		return
	}
	reply(st.s.answers.wire(resp))
}

// mayDecide reports whether answering in may ask the decider.
func mayDecide(in *inbound) bool {
	switch in.kind {
	case kindRequestHeaders:
		return in.endOfStream
	case kindRequestBody, kindRequestTrailers:
		return true
	default:
		return false
	}
}

// wire returns resp's proto encoding: the bytes kept for a shared answer, or
// resp marshalled now.
func (a *answers) wire(resp *extprocv3.ProcessingResponse) ([]byte, error) {
	if b, ok := a.encoded.Load(resp); ok {
		return b.(mem.BufferSlice)[0].ReadOnlyData(), nil
	}
	b, err := proto.Marshal(resp)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "marshalling the answer: %v", err)
	}
	return b, nil
}
