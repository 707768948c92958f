package processor

import (
	"bytes"
	"strconv"
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
	notUTF8 := []byte{0xff, 0xfe}
	for name, msg := range map[string][]byte{
		// proto.Unmarshal checks every copy of a string field, also one that a
		// second copy overwrites.
		"header key given twice, the first not UTF-8": wRequestHeaders(true, wHeaderValue(
			wBytes(nil, 1, notUTF8), wBytes(nil, 1, []byte("x-user-id")), wBytes(nil, 3, []byte("alice")))),
		"header value given twice, the first not UTF-8": wRequestHeaders(true, wHeaderValue(
			wBytes(nil, 1, []byte("x-user-id")), wBytes(nil, 2, notUTF8), wBytes(nil, 2, []byte("alice")))),
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

func TestDecodeRequestAgreesWithProtoAtTheEdges(t *testing.T) {
	for i, msg := range edgeMessages() {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			in, err := decodeRequest(msg)
			refErr := proto.Unmarshal(msg, new(extprocv3.ProcessingRequest))
			if (err != nil) != (refErr != nil) {
				t.Fatalf("%x: decodeRequest error %v, proto.Unmarshal error %v", msg, err, refErr)
			}
			if err == nil {
				compareInbound(t, msg, in)
			}
		})
	}
}

func FuzzDecodeRequest(f *testing.F) {
	for _, m := range []proto.Message{envoyHeaders(false), envoyHeaders(true), body(searchCall), skippedHeaders(),
		headers(false, "x-user-id", "alice", "x-user-id", "bob", ":path", "/mcp")} {
		f.Add(marshal(f, m))
	}
	for _, msg := range edgeMessages() {
		f.Add(msg)
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
			eachElement(h, func(entry []byte) bool {
				key, _, _, _ := headerValue(entry)
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
			eachElement(a, func(entry []byte) bool {
				name, _, _ := structField(entry)
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

// Builders of hand-made wire messages, for shapes proto.Marshal never writes.

func wBytes(b []byte, num protowire.Number, v []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), v)
}

func wVarint(b []byte, num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), v)
}

func wCat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// wHeaderValue is one HeaderValue from its raw fields (each a whole field).
func wHeaderValue(fields ...[]byte) []byte { return wCat(fields...) }

// wRequestHeaders wraps HeaderValues into HeaderMap, HttpHeaders (with
// end_of_stream) and ProcessingRequest.request_headers.
func wRequestHeaders(eos bool, hvs ...[]byte) []byte {
	var hm []byte
	for _, hv := range hvs {
		hm = wBytes(hm, 1, hv)
	}
	hh := wBytes(nil, 1, hm)
	if eos {
		hh = wVarint(hh, 3, 1)
	}
	return wBytes(nil, 2, hh)
}

func wStringValue(s string) []byte { return wBytes(nil, 3, []byte(s)) }

func wStructEntry(name string, value []byte) []byte {
	return wBytes(wBytes(nil, 1, []byte(name)), 2, value)
}

// wAttributes is a ProcessingRequest.attributes entry.
func wAttributes(key string, structBytes []byte) []byte {
	return wBytes(nil, 9, wBytes(wBytes(nil, 1, []byte(key)), 2, structBytes))
}

func wStruct(entries ...[]byte) []byte {
	var b []byte
	for _, e := range entries {
		b = wBytes(b, 1, e)
	}
	return b
}

// edgeMessages are shapes at the edges of decodeFast: duplicates, groups, map
// entries missing or repeating fields, enum truncation, wire-type mismatches,
// zero-length fields, bad field numbers.
func edgeMessages() [][]byte {
	hv := func(k, v, raw string) []byte {
		b := wBytes(nil, 1, []byte(k))
		if v != "" {
			b = wBytes(b, 2, []byte(v))
		}
		if raw != "" {
			b = wBytes(b, 3, []byte(raw))
		}
		return b
	}
	attrs := wAttributes(extProcAttributes, wStruct(
		wStructEntry(sourceAddressAttr, wStringValue("1.2.3.4:5")),
		wStructEntry("request.path", wStringValue("/a")),
		wStructEntry("request.path", wStringValue("/b"))))
	group := func(num protowire.Number) []byte {
		b := protowire.AppendTag(nil, num, protowire.StartGroupType)
		b = wVarint(b, 1, 5)
		return protowire.AppendTag(b, num, protowire.EndGroupType)
	}
	pc := func(fields ...[]byte) []byte { return wBytes(nil, 11, wCat(fields...)) }
	bodyMsg := func(fields ...[]byte) []byte { return wBytes(nil, 4, wCat(fields...)) }
	return [][]byte{
		wCat(wRequestHeaders(true, hv(":path", "/mcp", ""), hv("x-user-id", "a", "b"), hv("x-user-id", "c", "")), attrs),
		// Key and value twice in one HeaderValue; raw_value empty then set.
		wRequestHeaders(false, wCat(hv("k", "v1", ""), wBytes(nil, 1, []byte("x")), wBytes(nil, 2, []byte("v2")), wBytes(nil, 3, nil))),
		// Duplicate attributes entries for the same key: last replaces.
		wCat(attrs, wAttributes(extProcAttributes, wStruct(wStructEntry("request.host", wStringValue("h"))))),
		// Map entry without value, without key, with key twice, value twice.
		wBytes(nil, 9, wBytes(nil, 1, []byte(extProcAttributes))),
		wBytes(nil, 9, wBytes(nil, 2, wStruct())),
		wBytes(nil, 9, wCat(wBytes(nil, 1, []byte("x")), wBytes(nil, 1, []byte(extProcAttributes)), wBytes(nil, 2, wStruct()))),
		wBytes(nil, 9, wCat(wBytes(nil, 1, []byte(extProcAttributes)), wBytes(nil, 2, wStruct(wStructEntry("a", wStringValue("1")))), wBytes(nil, 2, wStruct(wStructEntry("b", wStringValue("2")))))),
		// Value with string_value twice; with a number; empty.
		wAttributes(extProcAttributes, wStruct(wStructEntry("a", wCat(wStringValue("x"), wStringValue("y"))))),
		wAttributes(extProcAttributes, wStruct(wStructEntry("a", wCat(wStringValue("x"), protowire.AppendFixed64(protowire.AppendTag(nil, 2, protowire.Fixed64Type), 0))))),
		wAttributes(extProcAttributes, wStruct(wStructEntry("a", nil))),
		// Enum truncation and wire-type mismatch in protocol_config; given twice.
		pc(wVarint(nil, 1, 1<<32|1)),
		pc(wVarint(nil, 1, 0xffffffff00000001)),
		pc(wVarint(nil, 1, 1<<33|4)),
		wCat(pc(wVarint(nil, 1, 1)), pc(wVarint(nil, 2, 1)), pc(wVarint(nil, 1, 0))),
		pc(wBytes(nil, 1, []byte{1})),
		// Body given twice; body then headers; zero-length body message.
		wCat(bodyMsg(wBytes(nil, 1, []byte("a"))), bodyMsg(wVarint(nil, 2, 1))),
		wCat(bodyMsg(wBytes(nil, 1, []byte("a")), wBytes(nil, 1, nil), wVarint(nil, 2, 2), wVarint(nil, 2, 0))),
		wBytes(nil, 4, nil),
		wBytes(nil, 2, nil),
		wBytes(nil, 8, nil),
		// Groups at each level.
		wCat(wRequestHeaders(true), group(10)),
		wCat(wRequestHeaders(true), group(99)),
		wBytes(nil, 2, wCat(wBytes(nil, 1, nil), group(3))),
		pc(group(1)),
		protowire.AppendTag(nil, 2, protowire.EndGroupType),
		// observability_mode with a wrong wire type, overlong varint, fixed32.
		wBytes(nil, 10, []byte{1}),
		protowire.AppendTag(nil, 10, protowire.VarintType),
		append(protowire.AppendTag(nil, 10, protowire.VarintType), 0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00),
		// Field 0 and out-of-range field numbers.
		{0x00, 0x00},
		protowire.AppendVarint(nil, uint64(protowire.MaxValidNumber+1)<<3),
		protowire.AppendVarint(wRequestHeaders(true), uint64(1<<31)<<3|2),
		// Invalid wire types 6 and 7.
		{0x16}, {0x17},
		// Deprecated HttpHeaders.attributes (field 2).
		wBytes(nil, 2, wBytes(nil, 2, wBytes(wBytes(nil, 1, []byte("k")), 2, nil))),
		// UTF-8: invalid header key, invalid string_value, invalid attribute key.
		wRequestHeaders(true, hv("\xff", "", "")),
		wAttributes(extProcAttributes, wStruct(wStructEntry("a", wStringValue("\xc3")))),
		wAttributes("\xff", wStruct()),
	}
}
