package mcp

import (
	"encoding/json"
	"fmt"
)

// maxDepth bounds how deeply arrays and objects may nest, counting the body's own
// array and object. It is encoding/json's limit, so Parse and json.Valid agree on
// every body; the scanner is iterative, so the bound is about agreeing with the
// standard library, not about the goroutine stack.
const maxDepth = 10000

// Parse reads an HTTP request body as JSON-RPC 2.0.
//
// The body is a single JSON value surrounded by optional JSON whitespace. An
// object is one message: it must be a valid JSON-RPC 2.0 request, notification or
// response, else ErrNotJSONRPC (Body still holds it, as KindInvalid). An array is
// a batch: each element is classified on its own and an invalid element is
// KindInvalid without failing the parse, so one bad element cannot carry the
// others past the limiter. Any other JSON value is ErrNotJSONRPC, an empty array
// ErrEmptyBatch, and a body that is not JSON ErrNotJSON. A body whose first value
// is complete but is followed by more than whitespace returns ErrTrailingData
// (which matches ErrNotJSON) together with the messages of that first value.
//
// Member names match exactly and case-sensitively, after unescaping (so
// "\u006dethod" is "method" but "Method" is not). That is what the official MCP
// Go SDK v1.8.0 does (it decodes with segmentio/encoding and
// DontMatchCaseInsensitiveStructFields), and what JavaScript's JSON.parse and
// Python's json module do.
//
// When a member repeats, its last string value counts: a later null, number or
// object does not erase an earlier string. Decoders into Go structs (the Go SDK,
// encoding/json) leave a string field as it was on null, so for them
// {"jsonrpc":"2.0","jsonrpc":null} is still version 2.0 and
// {"name":"search","name":null} still names search; a decoder into maps (JSON.parse)
// takes the null and rejects the message, so for it the string charged is one it
// never runs, which costs a token and lets nothing through. For the same reason
// the names of every "params" object count, as a struct decoder merges repeated
// objects into one: Name is the last string "name" of any of them.
//
// Classification, chosen so that whatever a server could execute is charged:
// "jsonrpc" must be the string "2.0"; a "method" member makes a request (with an
// "id" of any JSON type, null included) or a notification (without), and one of
// its values must be a string; without "method", a "result" or "error" member
// makes a response. "params" is not validated beyond being JSON.
//
// Only jsonrpc, method, id and params.name are decoded; every other value, such
// as params.arguments, is checked for well-formedness and skipped without
// allocating. Message.ID aliases body: do not modify body while the result is in
// use.
func Parse(body []byte) (Body, error) {
	s := scanner{data: body}
	s.skipSpace()
	if s.pos == len(s.data) {
		return Body{}, fmt.Errorf("%w: empty body", ErrNotJSON)
	}
	var (
		b      Body
		result error
	)
	switch s.data[s.pos] {
	case '{':
		m, err := s.message()
		if err != nil {
			return Body{}, err
		}
		b.Messages = []Message{m}
		if m.Kind == KindInvalid {
			result = ErrNotJSONRPC
		}
	case '[':
		b.Batch = true
		msgs, err := s.batch()
		if err != nil {
			return Body{}, err
		}
		b.Messages = msgs
		if len(msgs) == 0 {
			result = ErrEmptyBatch
		}
	default:
		if err := s.skipValue(); err != nil {
			return Body{}, err
		}
		result = ErrNotJSONRPC
	}
	s.skipSpace()
	if s.pos != len(s.data) {
		return b, fmt.Errorf("%w at offset %d", ErrTrailingData, s.pos)
	}
	return b, result
}

// span is a value's position in the body, end exclusive; end == 0 means absent.
type span struct{ start, end int }

func (sp span) present() bool { return sp.end > 0 }

// member identifies the object members Parse reads.
type member uint8

const (
	memberOther member = iota
	memberJSONRPC
	memberMethod
	memberID
	memberParams
	memberResult
	memberError
	memberName
)

// batch reads an array of messages; s.pos is at '['.
func (s *scanner) batch() ([]Message, error) {
	if err := s.open(); err != nil {
		return nil, err
	}
	s.skipSpace()
	if s.peek() == ']' {
		s.pos++
		s.depth--
		return nil, nil
	}
	var msgs []Message
	for {
		s.skipSpace()
		if s.peek() == '{' {
			m, err := s.message()
			if err != nil {
				return nil, err
			}
			msgs = append(msgs, m)
		} else {
			if err := s.skipValue(); err != nil {
				return nil, err
			}
			msgs = append(msgs, Message{Kind: KindInvalid})
		}
		s.skipSpace()
		switch s.peek() {
		case ',':
			s.pos++
		case ']':
			s.pos++
			s.depth--
			return msgs, nil
		default:
			return nil, s.syntaxError("after array element")
		}
	}
}

// message reads one JSON-RPC object; s.pos is at '{'.
func (s *scanner) message() (Message, error) {
	var (
		version, method, id, name      span // version, method, name: last string value
		hasMethod, hasResult, hasError bool
	)
	err := s.object(func(k member) error {
		var err error
		switch k {
		case memberJSONRPC:
			err = s.stringValue(&version)
		case memberMethod:
			hasMethod = true
			err = s.stringValue(&method)
		case memberID:
			id, err = s.valueSpan()
		case memberParams:
			err = s.params(&name)
		case memberResult:
			hasResult = true
			err = s.skipValue()
		case memberError:
			hasError = true
			err = s.skipValue()
		default:
			err = s.skipValue()
		}
		return err
	}, false)
	if err != nil {
		return Message{}, err
	}

	var m Message
	if id.present() {
		m.ID = s.compactID(id)
	}
	if !version.present() || s.decodeString(version) != "2.0" {
		return m, nil
	}
	switch {
	case hasMethod:
		if !method.present() {
			return m, nil
		}
		m.Kind = KindNotification
		if id.present() {
			m.Kind = KindRequest
		}
		m.Method = s.decodeString(method)
		if name.present() {
			m.Name = s.decodeString(name)
		}
	case hasResult || hasError:
		m.Kind = KindResponse
	}
	return m, nil
}

// params reads a value of "params", setting name to the span of each string
// "name" member of an object; any other value is skipped and leaves name as it
// was.
func (s *scanner) params(name *span) error {
	if s.peek() != '{' {
		return s.skipValue()
	}
	return s.object(func(k member) error {
		if k != memberName {
			return s.skipValue()
		}
		return s.stringValue(name)
	}, true)
}

// stringValue skips a value, and sets sp to it when it is a string.
func (s *scanner) stringValue(sp *span) error {
	v, err := s.valueSpan()
	if err == nil && s.isString(v) {
		*sp = v
	}
	return err
}

// object reads an object, calling value for each member with s.pos at the
// member's value; value must consume it. inParams selects the names of params
// rather than those of a message.
func (s *scanner) object(value func(member) error, inParams bool) error {
	if err := s.open(); err != nil {
		return err
	}
	s.skipSpace()
	if s.peek() == '}' {
		s.pos++
		s.depth--
		return nil
	}
	var buf [keyBufSize]byte
	for {
		s.skipSpace()
		if s.peek() != '"' {
			return s.syntaxError("looking for object key")
		}
		start := s.pos
		plain, err := s.skipString()
		if err != nil {
			return err
		}
		k := memberOther
		raw := s.data[start+1 : s.pos-1]
		switch {
		case plain:
			k = classify(raw, inParams)
		case len(raw) <= keyBufSize/2:
			// An escaped name such as "\u006dethod" means "method" to every JSON
			// decoder, so it must mean it here. Longer raw names cannot unescape to
			// any name we read (each escape is at most 6 bytes for 1 byte).
			k = classify(appendUnquoted(buf[:0], raw), inParams)
		}
		s.skipSpace()
		if s.peek() != ':' {
			return s.syntaxError("after object key")
		}
		s.pos++
		s.skipSpace()
		if err := value(k); err != nil {
			return err
		}
		s.skipSpace()
		switch s.peek() {
		case ',':
			s.pos++
		case '}':
			s.pos++
			s.depth--
			return nil
		default:
			return s.syntaxError("after object member")
		}
	}
}

// keyBufSize holds any unescaped name short enough to be one we read: the longest,
// "jsonrpc", is 7 bytes and at most 42 escaped.
const keyBufSize = 96

// classify maps a member name to the member it stands for. It is a plain
// function, not a parameter, so that the name buffer can stay on the stack.
func classify(name []byte, inParams bool) member {
	if inParams {
		if string(name) == "name" {
			return memberName
		}
		return memberOther
	}
	switch string(name) { // no allocation: the compiler compares in place
	case "jsonrpc":
		return memberJSONRPC
	case "method":
		return memberMethod
	case "id":
		return memberID
	case "params":
		return memberParams
	case "result":
		return memberResult
	case "error":
		return memberError
	}
	return memberOther
}

// valueSpan skips a value and returns where it was.
func (s *scanner) valueSpan() (span, error) {
	start := s.pos
	err := s.skipValue()
	return span{start, s.pos}, err
}

func (s *scanner) isString(sp span) bool {
	return sp.present() && s.data[sp.start] == '"'
}

// decodeString returns the string value at sp, which the scanner has validated.
// Common MCP method names come back without allocating.
func (s *scanner) decodeString(sp span) string {
	raw := s.data[sp.start+1 : sp.end-1]
	if isPlain(raw) {
		if m, ok := knownMethod(raw); ok {
			return m
		}
		return string(raw)
	}
	return string(appendUnquoted(make([]byte, 0, len(raw)), raw))
}

// compactID returns the id value as sent. Scalars (what JSON-RPC allows) are
// already compact and alias the body; an object or array id, which a lenient
// server might still accept, is compacted into a copy.
func (s *scanner) compactID(sp span) json.RawMessage {
	raw := s.data[sp.start:sp.end]
	switch raw[0] {
	case '{', '[':
		var out []byte
		for i := 0; i < len(raw); i++ {
			c := raw[i]
			switch c {
			case ' ', '\t', '\n', '\r':
				continue
			case '"':
				// Copy the string verbatim, escapes included.
				j := i + 1
				for raw[j] != '"' {
					if raw[j] == '\\' {
						j++
					}
					j++
				}
				out = append(out, raw[i:j+1]...)
				i = j
				continue
			}
			out = append(out, c)
		}
		return out
	}
	return json.RawMessage(raw[:len(raw):len(raw)])
}

// knownMethod interns the MCP methods a client sends, so reading them does not
// allocate.
func knownMethod(b []byte) (string, bool) {
	for _, m := range [...]string{
		"tools/call", "tools/list", "initialize", "notifications/initialized",
		"ping", "resources/read", "resources/list", "resources/templates/list",
		"resources/subscribe", "resources/unsubscribe", "prompts/get", "prompts/list",
		"completion/complete", "logging/setLevel", "notifications/cancelled",
		"notifications/progress", "notifications/roots/list_changed", "tasks/get",
		"tasks/result", "tasks/list", "tasks/cancel",
	} {
		if string(b) == m {
			return m, true
		}
	}
	return "", false
}
