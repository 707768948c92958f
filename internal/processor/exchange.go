package processor

import (
	"maps"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/mcp-ratelimit/extproc/internal/limiter"
)

// Metadata and attribute names Envoy uses. The shipped Envoy configs forward
// these: request_attributes [source.address] and
// metadata_options.forwarding_namespaces.untyped [envoy.filters.http.jwt_authn].
const (
	extProcAttributes = "envoy.filters.http.ext_proc"
	sourceAddressAttr = "source.address"
	jwtAuthnNamespace = "envoy.filters.http.jwt_authn"
)

// exchange is the state of the one HTTP request an ext_proc stream carries.
type exchange struct {
	req     limiter.Request
	decided bool
	// streamed is true when Envoy sends the body in chunks (STREAMED modes). It is
	// false for BUFFERED, where the first body message holds the whole body and is
	// decided even without end_of_stream (which stays false when trailers follow).
	streamed bool
	tooBig   bool
}

// observe records what any message may carry: Envoy sends the protocol
// configuration, attributes and metadata with the first message of the stream,
// which is the body when the headers phase is skipped.
func (x *exchange) observe(req *extprocv3.ProcessingRequest) {
	if pc := req.GetProtocolConfig(); pc != nil {
		switch pc.GetRequestBodyMode() {
		case extprocfilterv3.ProcessingMode_STREAMED, extprocfilterv3.ProcessingMode_FULL_DUPLEX_STREAMED:
			x.streamed = true
		}
	}
	if a := req.GetAttributes()[extProcAttributes]; a != nil {
		attrs := a.GetFields()
		if v := attrs[sourceAddressAttr].GetStringValue(); v != "" {
			x.req.SourceAddress = v
		}
		// With the headers phase skipped (request_header_mode: SKIP), what the
		// decision needs of the headers comes as request attributes instead.
		if x.req.Headers == nil {
			x.req.Authority = attrs["request.host"].GetStringValue()
			x.req.Path = attrs["request.path"].GetStringValue()
			x.req.Headers = headerAttributes(attrs)
		}
	}
	if md := req.GetMetadataContext().GetFilterMetadata()[jwtAuthnNamespace]; md != nil && x.req.JWTPayloads == nil {
		// jwt_authn stores each verified payload under its payload_in_metadata
		// name. With several (two providers, or header_in_metadata too), the
		// first holding the claim wins, so walk them in name order: a map's
		// order would change the user between identical requests.
		fields := md.GetFields()
		for _, name := range slices.Sorted(maps.Keys(fields)) {
			if st := fields[name].GetStructValue(); st != nil {
				x.req.JWTPayloads = append(x.req.JWTPayloads, st.AsMap())
			}
		}
	}
}

// start records the request headers.
func (x *exchange) start(h *extprocv3.HttpHeaders) {
	headers := h.GetHeaders().GetHeaders()
	x.req.Headers = headerList(headers)
	x.req.Authority = headerList(headers).Get(":authority")
	x.req.Path = headerList(headers).Get(":path")
}

// addBody appends a body chunk and reports whether the request is ready to be
// decided.
func (x *exchange) addBody(b *extprocv3.HttpBody, max int) bool {
	if x.decided {
		return false
	}
	switch {
	case x.tooBig:
	case x.req.Body == nil && (!x.streamed || b.GetEndOfStream()):
		// The common case: the whole body in one message; keep Envoy's slice.
		x.req.Body = b.GetBody()
		if x.req.Body == nil {
			x.req.Body = []byte{}
		}
	case len(x.req.Body)+len(b.GetBody()) > max:
		x.tooBig, x.req.Body = true, []byte{}
	default:
		x.req.Body = append(x.req.Body, b.GetBody()...)
	}
	return !x.streamed || b.GetEndOfStream()
}

// headerAttributes serves limiter.Headers from request attributes named
// request.headers['<name>'], each of which the Envoy config must list.
type headerAttributes map[string]*structpb.Value

func (ha headerAttributes) Get(name string) string {
	return ha["request.headers['"+name+"']"].GetStringValue()
}

// headerList serves limiter.Headers from Envoy's header list as it came, so
// that only the headers a decision asks for are converted to strings. Envoy
// lower-cases names; a repeated header gives its first value.
type headerList []*corev3.HeaderValue

func (hl headerList) Get(name string) string {
	for _, h := range hl {
		if h.GetKey() == name {
			if raw := h.GetRawValue(); len(raw) > 0 {
				return string(raw)
			}
			return h.GetValue()
		}
	}
	return ""
}
