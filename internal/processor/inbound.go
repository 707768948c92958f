package processor

import (
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/mcp-ratelimit/extproc/internal/limiter"
)

// kind is which phase a ProcessingRequest carries: the field number of its
// request oneof, 0 when none is set.
type kind uint8

const (
	kindNone             kind = 0
	kindRequestHeaders   kind = 2
	kindResponseHeaders  kind = 3
	kindRequestBody      kind = 4
	kindResponseBody     kind = 5
	kindRequestTrailers  kind = 6
	kindResponseTrailers kind = 7
)

func (k kind) String() string {
	switch k {
	case kindNone:
		return "no phase"
	case kindRequestHeaders:
		return "request_headers"
	case kindResponseHeaders:
		return "response_headers"
	case kindRequestBody:
		return "request_body"
	case kindResponseBody:
		return "response_body"
	case kindRequestTrailers:
		return "request_trailers"
	case kindResponseTrailers:
		return "response_trailers"
	}
	return fmt.Sprintf("kind %d", uint8(k))
}

// inbound is what the processor reads of one ProcessingRequest: straight from
// the wire (decodeRequest, through the server's codec), where the header list
// and the attributes stay bytes until a decision asks for one of them, or from
// a decoded proto (fromProto) for the shapes decodeRequest leaves to
// proto.Unmarshal.
type inbound struct {
	kind kind
	// endOfStream is the phase's end_of_stream (request headers and bodies).
	endOfStream bool
	// headers is the request_headers' header list.
	headers limiter.Headers
	// body is the request_body's bytes.
	body []byte
	// streamed: protocol_config names a STREAMED or FULL_DUPLEX_STREAMED request
	// body mode.
	streamed bool
	// attrs holds the attributes under extProcAttributes, if that entry is set.
	attrs attributes
	// jwt is metadata_context's jwt_authn namespace, if set.
	jwt *structpb.Struct
}

// attributes looks up one of Envoy's request attributes by name: its string
// value, "" when it is absent or not a string.
type attributes interface {
	attr(name string) string
}

// fromProto reads req.
func fromProto(req *extprocv3.ProcessingRequest) inbound {
	var in inbound
	switch v := req.Request.(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		in.kind = kindRequestHeaders
		in.headers = headerList(v.RequestHeaders.GetHeaders().GetHeaders())
		in.endOfStream = v.RequestHeaders.GetEndOfStream()
	case *extprocv3.ProcessingRequest_RequestBody:
		in.kind = kindRequestBody
		in.body = v.RequestBody.GetBody()
		in.endOfStream = v.RequestBody.GetEndOfStream()
	case *extprocv3.ProcessingRequest_RequestTrailers:
		in.kind = kindRequestTrailers
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		in.kind = kindResponseHeaders
	case *extprocv3.ProcessingRequest_ResponseBody:
		in.kind = kindResponseBody
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		in.kind = kindResponseTrailers
	}
	if pc := req.GetProtocolConfig(); pc != nil {
		in.streamed = streamedMode(pc.GetRequestBodyMode())
	}
	if a := req.GetAttributes()[extProcAttributes]; a != nil {
		in.attrs = structAttributes(a.GetFields())
	}
	in.jwt = req.GetMetadataContext().GetFilterMetadata()[jwtAuthnNamespace]
	return in
}

func streamedMode(m extprocfilterv3.ProcessingMode_BodySendMode) bool {
	return m == extprocfilterv3.ProcessingMode_STREAMED || m == extprocfilterv3.ProcessingMode_FULL_DUPLEX_STREAMED
}

// structAttributes is attributes from a decoded Struct.
type structAttributes map[string]*structpb.Value

func (sa structAttributes) attr(name string) string { return sa[name].GetStringValue() }

// headerAttributes serves limiter.Headers from request attributes named
// request.headers['<name>'], each of which the Envoy config must list.
type headerAttributes struct{ attrs attributes }

func (ha headerAttributes) Get(name string) string {
	return ha.attrs.attr("request.headers['" + name + "']")
}

// GetAll is Get: Envoy gives an attribute one value.
func (ha headerAttributes) GetAll(name string) string { return ha.Get(name) }

// headerList serves limiter.Headers from Envoy's header list as it came, so
// that only the headers a decision asks for are converted to strings. Envoy
// lower-cases names; a repeated header gives its first value.
type headerList []*corev3.HeaderValue

func (hl headerList) Get(name string) string {
	for _, h := range hl {
		if h.GetKey() == name {
			return headerText(h)
		}
	}
	return ""
}

// GetAll joins every value of name with "\n"; one value comes back as it is.
func (hl headerList) GetAll(name string) string {
	var all string
	n := 0
	for _, h := range hl {
		if h.GetKey() == name {
			if n > 0 {
				all += "\n"
			}
			all += headerText(h)
			n++
		}
	}
	return all
}

// headerText is a header's raw_value unless empty, else its value.
func headerText(h *corev3.HeaderValue) string {
	if raw := h.GetRawValue(); len(raw) > 0 {
		return string(raw)
	}
	return h.GetValue()
}
