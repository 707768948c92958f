package processor

import (
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
)

// Codec returns the gRPC codec to serve s with (grpc.ForceServerCodecV2): gRPC's
// proto codec, except that an ext_proc request is read into an *inbound by
// decodeRequest (see serviceDesc), and the answers s builds once and shares
// (continues and their dynamic metadata) are sent as bytes marshalled once,
// not marshalled again for every request, and an allowed answer with quota
// values (*quotaAnswer) is written from those bytes and its two values. Any
// other message, of any service on the same server (gRPC health), goes to the
// proto codec.
func (s *Server) Codec() encoding.CodecV2 {
	return codec{base: encoding.GetCodecV2(proto.Name), answers: &s.answers, pool: wireBuffers}
}

type codec struct {
	base    encoding.CodecV2
	answers *answers
	// pool holds the buffers quota answers are written into.
	pool mem.BufferPool
}

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	switch m := v.(type) {
	case *quotaAnswer:
		return m.marshal(c.pool), nil
	case *extprocv3.ProcessingResponse:
		if b, ok := c.answers.encoded.Load(m); ok {
			return b.(mem.BufferSlice), nil
		}
	}
	return c.base.Marshal(v)
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	in, ok := v.(*inbound)
	if !ok {
		return c.base.Unmarshal(data, v)
	}
	// A copy: grpc-go reuses data's buffers once Unmarshal returns, and the
	// inbound keeps pointing into the message.
	decoded, err := decodeRequest(data.Materialize())
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "unreadable ProcessingRequest: %v", err)
	}
	*in = decoded
	return nil
}

func (c codec) Name() string { return c.base.Name() }
