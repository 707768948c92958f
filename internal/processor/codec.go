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
// not marshalled again for every request. Any other message, of any service
// on the same server (gRPC health), goes to the proto codec.
func (s *Server) Codec() encoding.CodecV2 {
	return codec{base: encoding.GetCodecV2(proto.Name), answers: &s.answers}
}

type codec struct {
	base    encoding.CodecV2
	answers *answers
}

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if resp, ok := v.(*extprocv3.ProcessingResponse); ok {
		if b, ok := c.answers.encoded.Load(resp); ok {
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
