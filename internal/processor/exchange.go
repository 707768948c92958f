package processor

import (
	"maps"
	"slices"

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
func (x *exchange) observe(in *inbound) {
	if in.streamed {
		x.streamed = true
	}
	if in.attrs != nil {
		if v := in.attrs.attr(sourceAddressAttr); v != "" {
			x.req.SourceAddress = v
		}
		// With the headers phase skipped (request_header_mode: SKIP), what the
		// decision needs of the headers comes as request attributes instead.
		if x.req.Headers == nil {
			x.req.Authority = in.attrs.attr("request.host")
			x.req.Path = in.attrs.attr("request.path")
			x.req.Headers = headerAttributes{in.attrs}
		}
	}
	if in.jwt != nil && x.req.JWTPayloads == nil {
		// jwt_authn stores each verified payload under its payload_in_metadata
		// name. With several (two providers, or header_in_metadata too), the
		// first holding the claim wins, so walk them in name order: a map's
		// order would change the user between identical requests.
		fields := in.jwt.GetFields()
		for _, name := range slices.Sorted(maps.Keys(fields)) {
			if st := fields[name].GetStructValue(); st != nil {
				x.req.JWTPayloads = append(x.req.JWTPayloads, st.AsMap())
			}
		}
	}
}

// start records the request headers.
func (x *exchange) start(in *inbound) {
	x.req.Headers = in.headers
	x.req.Authority = in.headers.Get(":authority")
	x.req.Path = in.headers.Get(":path")
}

// addBody appends a body chunk and reports whether the request is ready to be
// decided.
func (x *exchange) addBody(in *inbound, max int) bool {
	if x.decided {
		return false
	}
	switch {
	case x.tooBig:
	case x.req.Body == nil && (!x.streamed || in.endOfStream):
		// The common case: the whole body in one message; keep Envoy's slice.
		x.req.Body = in.body
		if x.req.Body == nil {
			x.req.Body = []byte{}
		}
	case len(x.req.Body)+len(in.body) > max:
		x.tooBig, x.req.Body = true, []byte{}
	default:
		x.req.Body = append(x.req.Body, in.body...)
	}
	return !x.streamed || in.endOfStream
}
