package processor

import (
	"unicode/utf8"

	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// decodeRequest reads a ProcessingRequest in wire form, as proto.Unmarshal and
// fromProto would, without building its protobuf objects in the usual case:
// the header list and the attributes stay bytes of msg (which the caller must
// not change), searched when a decision asks for one of them (it asks for a
// handful). proto.Unmarshal spends 7-10µs and 63 allocations on Envoy's usual
// request-headers message, nearly all of it on headers nobody reads; this,
// about 2µs and 3 (BenchmarkDecodeRequest).
//
// The fast path reads the shapes Envoy sends for the request phases: request
// headers or body, attributes whose values are strings, protocol_config, an
// empty metadata_context. Anything else (another phase, jwt_authn metadata, a
// field it does not know or seen twice where that would merge, non-string
// values, bytes proto.Unmarshal rejects) is decoded by proto.Unmarshal, so the
// result is always proto.Unmarshal's; FuzzDecodeRequest checks that.
func decodeRequest(msg []byte) (inbound, error) {
	if in, ok := decodeFast(msg); ok {
		return in, nil
	}
	req := new(extprocv3.ProcessingRequest)
	if err := proto.Unmarshal(msg, req); err != nil {
		return inbound{}, err
	}
	return fromProto(req), nil
}

// Field numbers read by the fast path.
const (
	fieldMetadataContext = 8  // ProcessingRequest.metadata_context
	fieldAttributes      = 9  // ProcessingRequest.attributes, map<string, Struct>
	fieldObservability   = 10 // ProcessingRequest.observability_mode
	fieldProtocolConfig  = 11 // ProcessingRequest.protocol_config
)

// decodeFast is decodeRequest's fast path; ok is false when msg is not a shape
// it reads (or not valid), and proto.Unmarshal must decide.
func decodeFast(b []byte) (in inbound, ok bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return inbound{}, false
		}
		b = b[n:]
		if typ == protowire.VarintType && num == fieldObservability {
			// Not read; only its encoding matters.
			if _, n = protowire.ConsumeVarint(b); n < 0 {
				return inbound{}, false
			}
			b = b[n:]
			continue
		}
		if typ != protowire.BytesType {
			return inbound{}, false
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return inbound{}, false
		}
		b = b[n:]
		switch num {
		case protowire.Number(kindRequestHeaders):
			// A second phase field would merge into or replace the first.
			if in.kind != kindNone || !in.readHeaders(v) {
				return inbound{}, false
			}
		case protowire.Number(kindRequestBody):
			if in.kind != kindNone || !in.readBody(v) {
				return inbound{}, false
			}
		case fieldAttributes:
			if !in.readAttribute(v) {
				return inbound{}, false
			}
		case fieldProtocolConfig:
			if !in.readProtocolConfig(v) {
				return inbound{}, false
			}
		case fieldMetadataContext:
			// Envoy sends it empty when no forwarded namespace is set; jwt_authn
			// payloads go to proto.Unmarshal.
			if len(v) != 0 {
				return inbound{}, false
			}
		default:
			return inbound{}, false
		}
	}
	return in, true
}

// consumeBool reads a bool field's varint from b into v, returning the rest.
func consumeBool(b []byte, v *bool) (rest []byte, ok bool) {
	x, n := protowire.ConsumeVarint(b)
	if n < 0 {
		return nil, false
	}
	*v = protowire.DecodeBool(x)
	return b[n:], true
}

// readHeaders reads an HttpHeaders: headers (field 1), end_of_stream (3).
func (in *inbound) readHeaders(b []byte) bool {
	in.kind = kindRequestHeaders
	var ok bool
	var list wireHeaders
	seen := false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType && !seen:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || !validHeaderMap(v) {
				return false
			}
			b, list, seen = b[n:], v, true
		case num == 3 && typ == protowire.VarintType:
			if b, ok = consumeBool(b, &in.endOfStream); !ok {
				return false
			}
		default:
			return false
		}
	}
	in.headers = list
	return true
}

// readBody reads an HttpBody: body (field 1), end_of_stream (2).
func (in *inbound) readBody(b []byte) bool {
	in.kind = kindRequestBody
	var ok bool
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return false
			}
			// proto.Unmarshal keeps the last and never returns nil for a set
			// bytes field; addBody treats nil and empty alike. The capacity is
			// cut so that an append to the body can never write over the rest
			// of msg (the attributes are read from it later).
			b, in.body = b[n:], v[:len(v):len(v)]
		case num == 2 && typ == protowire.VarintType:
			if b, ok = consumeBool(b, &in.endOfStream); !ok {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// readProtocolConfig reads a ProtocolConfiguration: request_body_mode (1),
// response_body_mode (2), send_body_without_waiting_for_header_response (3).
func (in *inbound) readProtocolConfig(b []byte) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.VarintType || num < 1 || num > 3 {
			return false
		}
		b = b[n:]
		x, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		if num == 1 {
			// An enum is an int32 on the wire, as proto.Unmarshal reads it.
			in.streamed = streamedMode(extprocfilterv3.ProcessingMode_BodySendMode(int32(x)))
		}
	}
	return true
}

// readAttribute reads one entry of the attributes map: key (1) and a Struct
// (2), each once. The last entry of a key replaces the ones before, as in a map.
func (in *inbound) readAttribute(b []byte) bool {
	key, val, ok := mapEntry(b)
	if !ok || !utf8.Valid(key) || !validStringStruct(val) {
		return false
	}
	if string(key) == extProcAttributes {
		in.attrs = wireStruct(val)
	}
	return true
}

// mapEntry splits a map entry into its key (field 1) and value (field 2), both
// length-delimited and each present once; ok is false for any other shape.
func mapEntry(b []byte) (key, val []byte, ok bool) {
	var haveKey, haveVal bool
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.BytesType {
			return nil, nil, false
		}
		v, m := protowire.ConsumeBytes(b[n:])
		if m < 0 {
			return nil, nil, false
		}
		b = b[n+m:]
		switch {
		case num == 1 && !haveKey:
			key, haveKey = v, true
		case num == 2 && !haveVal:
			val, haveVal = v, true
		default:
			return nil, nil, false
		}
	}
	return key, val, haveKey && haveVal
}

// validStringStruct reports whether b is a Struct (field 1: entries of a name
// and a Value) whose every Value is a string_value (field 3), all valid UTF-8.
func validStringStruct(b []byte) bool {
	valid := true
	return eachElement(b, func(entry []byte) bool {
		name, value, ok := structField(entry)
		valid = ok && utf8.Valid(name) && utf8.Valid(value)
		return valid
	}) && valid
}

// structField reads one entry of a Struct's fields: its name and the string
// of a Value holding exactly one string_value; ok is false for any other shape.
func structField(entry []byte) (name, value []byte, ok bool) {
	name, v, ok := mapEntry(entry)
	if !ok {
		return nil, nil, false
	}
	num, typ, n := protowire.ConsumeTag(v)
	if n < 0 || num != 3 || typ != protowire.BytesType {
		return nil, nil, false
	}
	value, m := protowire.ConsumeBytes(v[n:])
	if m < 0 || n+m != len(v) {
		return nil, nil, false
	}
	return name, value, true
}

// eachElement calls fn with each element of the one repeated message field
// (number 1) that b holds, in wire order, until fn returns false. It reports
// false if b holds anything else or is malformed.
func eachElement(b []byte, fn func(elem []byte) bool) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num != 1 || typ != protowire.BytesType {
			return false
		}
		elem, m := protowire.ConsumeBytes(b[n:])
		if m < 0 {
			return false
		}
		b = b[n+m:]
		if !fn(elem) {
			return true
		}
	}
	return true
}

// wireStruct is attributes from a Struct's bytes that validStringStruct
// accepted. A name given twice takes its last value, as in a map.
type wireStruct []byte

func (ws wireStruct) attr(name string) string {
	var found []byte
	eachElement(ws, func(entry []byte) bool {
		if k, v, _ := structField(entry); string(k) == name {
			found = v
		}
		return true
	})
	return string(found)
}

// validHeaderMap reports whether b is a HeaderMap (field 1: HeaderValues) whose
// every HeaderValue headerValue reads, with key and value valid UTF-8.
func validHeaderMap(b []byte) bool {
	valid := true
	return eachElement(b, func(entry []byte) bool {
		key, value, _, ok := headerValue(entry)
		valid = ok && utf8.Valid(key) && utf8.Valid(value)
		return valid
	}) && valid
}

// headerValue reads a HeaderValue: key (1), value (2), raw_value (3), and
// nothing else. ok is false for a key or value given twice: proto.Unmarshal
// checks the UTF-8 of the copy the second one overwrites, so it must decide.
// raw_value given twice takes its last, as proto.Unmarshal does.
func headerValue(b []byte) (key, value, raw []byte, ok bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.BytesType {
			return nil, nil, nil, false
		}
		v, m := protowire.ConsumeBytes(b[n:])
		if m < 0 {
			return nil, nil, nil, false
		}
		b = b[n+m:]
		// ConsumeBytes never returns nil, even for an empty field.
		switch {
		case num == 1 && key == nil:
			key = v
		case num == 2 && value == nil:
			value = v
		case num == 3:
			raw = v
		default:
			return nil, nil, nil, false
		}
	}
	return key, value, raw, true
}

// wireHeaders serves limiter.Headers from a HeaderMap's bytes that
// validHeaderMap accepted, with headerList's rules: the first entry of a name,
// its raw_value unless empty, else its value.
type wireHeaders []byte

func (wh wireHeaders) Get(name string) string {
	var got string
	eachElement(wh, func(entry []byte) bool {
		key, value, raw, _ := headerValue(entry)
		if string(key) != name {
			return true
		}
		got = string(pickRaw(value, raw))
		return false
	})
	return got
}

// GetAll joins every value of name with "\n"; one value comes back as it is,
// with no more copying than Get.
func (wh wireHeaders) GetAll(name string) string {
	var first, all []byte
	n := 0
	eachElement(wh, func(entry []byte) bool {
		key, value, raw, _ := headerValue(entry)
		if string(key) != name {
			return true
		}
		v := pickRaw(value, raw)
		switch n {
		case 0:
			first = v
		case 1:
			all = append(append(append(all, first...), '\n'), v...)
		default:
			all = append(append(all, '\n'), v...)
		}
		n++
		return true
	})
	if n > 1 {
		return string(all)
	}
	return string(first)
}

// pickRaw is a header's raw_value unless empty, else its value.
func pickRaw(value, raw []byte) []byte {
	if len(raw) > 0 {
		return raw
	}
	return value
}
