package processor

import (
	"bytes"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// envoyHeaders is a request-headers message as Envoy 1.40 sends it with the
// shipped config: every header as raw_value, source.address as an attribute,
// the protocol configuration and an empty metadata context.
func envoyHeaders(endOfStream bool) *extprocv3.ProcessingRequest {
	kv := []string{":authority", "127.0.0.1:10000", ":path", "/mcp", ":method", "POST", ":scheme", "http",
		"content-type", "application/json", "accept", "application/json, text/event-stream",
		"mcp-protocol-version", "2025-06-18", "x-user-id", "user-7", "user-agent", "Go-http-client/1.1",
		"content-length", "120", "x-forwarded-proto", "http", "x-request-id", "6f1c7f0e-3c6a-4a7e-9f0e-1d2c3b4a5f6e"}
	var hv []*corev3.HeaderValue
	for i := 0; i < len(kv); i += 2 {
		hv = append(hv, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
	}
	return &extprocv3.ProcessingRequest{
		Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
			Headers: &corev3.HeaderMap{Headers: hv}, EndOfStream: endOfStream}},
		MetadataContext: &corev3.Metadata{},
		Attributes: map[string]*structpb.Struct{extProcAttributes: {Fields: map[string]*structpb.Value{
			sourceAddressAttr: structpb.NewStringValue("127.0.0.1:5555")}}},
		ProtocolConfig: &extprocv3.ProtocolConfiguration{RequestBodyMode: extprocfilterv3.ProcessingMode_BUFFERED},
	}
}

func marshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// skippedHeaders is the body message of a config that skips the headers phase
// and lists the headers the policy reads as attributes.
func skippedHeaders() *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{
		Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte(searchCall), EndOfStream: true}},
		Attributes: map[string]*structpb.Struct{
			extProcAttributes: {Fields: map[string]*structpb.Value{
				sourceAddressAttr:              structpb.NewStringValue("10.0.0.1:4000"),
				"request.host":                 structpb.NewStringValue("mcp.example.com"),
				"request.path":                 structpb.NewStringValue("/mcp"),
				"request.headers['x-user-id']": structpb.NewStringValue("alice"),
			}},
			"other.filter": {Fields: map[string]*structpb.Value{"k": structpb.NewStringValue("v")}},
		},
		ProtocolConfig: &extprocv3.ProtocolConfiguration{RequestBodyMode: extprocfilterv3.ProcessingMode_STREAMED},
	}
}

func TestDecodeRequestReadsEnvoysMessagesWithoutProtoObjects(t *testing.T) {
	tests := []struct {
		name string
		req  *extprocv3.ProcessingRequest
	}{
		{"request headers with a body to follow", envoyHeaders(false)},
		{"request headers without a body", envoyHeaders(true)},
		{"buffered body", body(searchCall)},
		{"empty body", &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{EndOfStream: true}}}},
		{"body with the headers as attributes", skippedHeaders()},
		{"value instead of raw_value, and both", &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
			Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
				{Key: ":path", Value: "/mcp"},
				{Key: "x-user-id", Value: "ignored", RawValue: []byte("alice")},
				{Key: "x-empty"},
			}}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := marshal(t, tt.req)
			in, ok := decodeFast(msg)
			if !ok {
				t.Fatalf("decodeFast refused Envoy's shape; it would cost proto.Unmarshal on every request")
			}
			compareInbound(t, msg, in)
		})
	}
}

func TestDecodeRequestLeavesOtherShapesToProto(t *testing.T) {
	jwt := envoyHeaders(false)
	jwt.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{jwtAuthnNamespace: {Fields: map[string]*structpb.Value{
		"payload": structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{"sub": structpb.NewStringValue("alice")}})}}}}
	numeric := envoyHeaders(false)
	numeric.Attributes[extProcAttributes].Fields["port"] = structpb.NewNumberValue(80)
	first := marshal(t, headers(false, "x-user-id", "alice", ":path", "/first"))
	second := marshal(t, headers(true, "x-user-id", "mallory", ":path", "/second"))
	tests := []struct {
		name string
		msg  []byte
	}{
		{"jwt_authn metadata", marshal(t, jwt)},
		{"an attribute that is not a string", marshal(t, numeric)},
		{"request trailers", marshal(t, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestTrailers{RequestTrailers: &extprocv3.HttpTrailers{}}})},
		{"response headers", marshal(t, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{}}})},
		// Two request_headers fields merge: the header lists are concatenated.
		{"request headers given twice", append(append([]byte{}, first...), second...)},
		{"a body, then headers", append(marshal(t, body(searchCall)), first...)},
		{"an unknown field", protowire.AppendVarint(protowire.AppendTag(append([]byte{}, first...), 99, protowire.VarintType), 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, ok := decodeFast(tt.msg); ok {
				t.Fatalf("decodeFast read a shape it does not know")
			}
			in, err := decodeRequest(tt.msg)
			if err != nil {
				t.Fatalf("decodeRequest: %v", err)
			}
			compareInbound(t, tt.msg, in)
		})
	}
}

func TestDecodeRequestRejectsWhatProtoRejects(t *testing.T) {
	badUTF8 := marshal(t, headers(false, "x-user-id", "alice"))
	// Corrupt the key's first byte: it stays a string field, now not UTF-8.
	i := bytes.Index(badUTF8, []byte("x-user-id"))
	badUTF8[i] = 0xff
	for name, msg := range map[string][]byte{
		"truncated":            marshal(t, envoyHeaders(false))[:40],
		"header key not UTF-8": badUTF8,
		"a bare tag":           {0x12},
	} {
		t.Run(name, func(t *testing.T) {
			if err := proto.Unmarshal(msg, new(extprocv3.ProcessingRequest)); err == nil {
				t.Fatal("proto.Unmarshal accepted the test's input: the test is wrong")
			}
			if _, err := decodeRequest(msg); err == nil {
				t.Fatal("decodeRequest accepted what proto.Unmarshal rejects")
			}
		})
	}
}

func FuzzDecodeRequest(f *testing.F) {
	for _, m := range []proto.Message{envoyHeaders(false), envoyHeaders(true), body(searchCall), skippedHeaders(),
		headers(false, "x-user-id", "alice", "x-user-id", "bob", ":path", "/mcp")} {
		f.Add(marshal(f, m))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		in, err := decodeRequest(msg)
		ref := new(extprocv3.ProcessingRequest)
		refErr := proto.Unmarshal(msg, ref)
		if (err != nil) != (refErr != nil) {
			t.Fatalf("decodeRequest error %v, proto.Unmarshal error %v", err, refErr)
		}
		if err == nil {
			compareInbound(t, msg, in)
		}
	})
}

// compareInbound fails t unless got is what fromProto reads of msg decoded by
// proto.Unmarshal.
func compareInbound(t *testing.T, msg []byte, got inbound) {
	t.Helper()
	req := new(extprocv3.ProcessingRequest)
	if err := proto.Unmarshal(msg, req); err != nil {
		t.Fatalf("proto.Unmarshal: %v", err)
	}
	want := fromProto(req)
	if got.kind != want.kind || got.endOfStream != want.endOfStream || got.streamed != want.streamed {
		t.Errorf("got kind %v end %v streamed %v, want %v %v %v", got.kind, got.endOfStream, got.streamed, want.kind, want.endOfStream, want.streamed)
	}
	if !bytes.Equal(got.body, want.body) {
		t.Errorf("got body %q, want %q", got.body, want.body)
	}
	if !proto.Equal(got.jwt, want.jwt) {
		t.Errorf("got jwt metadata %v, want %v", got.jwt, want.jwt)
	}
	if (got.headers == nil) != (want.headers == nil) {
		t.Fatalf("got headers %v, want %v", got.headers, want.headers)
	}
	if want.headers != nil {
		for _, name := range headerNames(got.headers, want.headers) {
			if g, w := got.headers.Get(name), want.headers.Get(name); g != w {
				t.Errorf("header %q: got %q, want %q", name, g, w)
			}
		}
	}
	if (got.attrs == nil) != (want.attrs == nil) {
		t.Fatalf("got attributes %v, want %v", got.attrs, want.attrs)
	}
	if want.attrs != nil {
		for _, name := range attrNames(got.attrs, want.attrs) {
			if g, w := got.attrs.attr(name), want.attrs.attr(name); g != w {
				t.Errorf("attribute %q: got %q, want %q", name, g, w)
			}
		}
	}
}

// headerNames lists every name either view holds, and a few that neither does.
func headerNames(views ...any) []string {
	names := []string{"", ":path", ":authority", "x-user-id", "absent"}
	for _, v := range views {
		switch h := v.(type) {
		case headerList:
			for _, hv := range h {
				names = append(names, hv.GetKey())
			}
		case wireHeaders:
			h.each(func(key, _, _ []byte, _ bool) bool {
				names = append(names, string(key))
				return true
			})
		}
	}
	return names
}

// attrNames lists every name either view holds, and a few that neither does.
func attrNames(views ...attributes) []string {
	names := []string{"", sourceAddressAttr, "request.path", "absent"}
	for _, v := range views {
		switch a := v.(type) {
		case structAttributes:
			for k := range a {
				names = append(names, k)
			}
		case wireStruct:
			eachStructField(a, func(name, _ []byte, _ bool) bool {
				names = append(names, string(name))
				return true
			})
		}
	}
	return names
}

// BenchmarkDecodeRequest compares decodeRequest with proto.Unmarshal (and
// fromProto) on Envoy's two messages of a request.
func BenchmarkDecodeRequest(b *testing.B) {
	for _, m := range []struct {
		name string
		req  *extprocv3.ProcessingRequest
	}{{"headers", envoyHeaders(false)}, {"body", body(searchCall)}} {
		msg := marshal(b, m.req)
		b.Run(m.name+"/proto", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				req := new(extprocv3.ProcessingRequest)
				if err := proto.Unmarshal(msg, req); err != nil {
					b.Fatal(err)
				}
				in := fromProto(req)
				if in.headers != nil {
					_ = in.headers.Get("x-user-id")
				}
			}
		})
		b.Run(m.name+"/wire", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				in, err := decodeRequest(msg)
				if err != nil {
					b.Fatal(err)
				}
				if in.headers != nil {
					_ = in.headers.Get("x-user-id")
				}
			}
		})
	}
}
