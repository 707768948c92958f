package mcp

import (
	"encoding/json"
	"fmt"
	"unicode"
	"unicode/utf8"
)

// maxDepth bounds how deeply arrays and objects may nest, counting the body's own
// array and object. It is far above what any MCP server's parser refuses: Node's
// JSON.parse (the TypeScript SDK) has no depth limit at all, so a lower bound here
// would be a body the limiter cannot read and a TypeScript server runs. A body
// deeper than this is at least 8 MiB, twice Envoy's shipped buffer limit. The
// scanner is iterative and keeps one bit per level, so depth costs no stack.
const maxDepth = 1 << 22

// Parse reads an HTTP request body as JSON-RPC 2.0.
//
// The body is a single JSON value surrounded by optional JSON whitespace. An
// object is one message: it must be a valid JSON-RPC 2.0 request, notification or
// response, else ErrNotJSONRPC (Body still holds it, as KindInvalid). An array is
// a batch: each element is classified on its own and an invalid element is
// KindInvalid without failing the parse, so one bad element cannot carry the
// others past the limiter; a batch of more than MaxBatch elements is
// ErrNotJSONRPC, read no further. Any other JSON value is ErrNotJSONRPC, an empty array
// ErrEmptyBatch, and a body that is not JSON ErrNotJSON. A body whose first value
// is complete but is followed by more than whitespace returns ErrTrailingData
// (which matches ErrNotJSON) together with the messages of that first value.
//
// Member names are read two ways, after unescaping (so "\u006dethod" is
// "method"). Exactly and case-sensitively, as the official MCP Go SDK v1.8.0
// (segmentio/encoding with DontMatchCaseInsensitiveStructFields), JavaScript's
// JSON.parse and Python's json module read them; and case-insensitively, as Go's
// encoding/json matches struct fields (bytes.EqualFold), which servers built on
// mcp-go do: for them {"Method":"tools/call"} is a call. When the second
// reading finds a call and the first does not, the message is that call; when
// both find calls and they differ, the first is the message and the second its
// Folded, and both are charged.
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

// MaxBatch bounds the messages of a batch: ten times what the only SDK that
// still runs batches (TypeScript, 100) takes, so that a 4 MiB batch of 135,000
// tiny notifications costs no more than reading its first thousand.
const MaxBatch = 1000

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
		if len(msgs) == MaxBatch {
			return nil, fmt.Errorf("%w: a batch of more than %d messages", ErrNotJSONRPC, MaxBatch)
		}
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

// reading is what one way of matching member names finds in a message: the
// spans of the last string jsonrpc, method and params.name, and of the last id.
type reading struct {
	version, method, id, name      span
	hasMethod, hasResult, hasError bool
}

// set records the value at sp of a member read as k.
func (r *reading) set(s *scanner, k member, sp span) {
	switch k {
	case memberJSONRPC:
		if s.isString(sp) {
			r.version = sp
		}
	case memberMethod:
		r.hasMethod = true
		if s.isString(sp) {
			r.method = sp
		}
	case memberID:
		r.id = sp
	case memberResult:
		r.hasResult = true
	case memberError:
		r.hasError = true
	}
}

// message reads one JSON-RPC object; s.pos is at '{'. It reads the object twice
// over, in one pass: with member names matched exactly, and matched the way
// encoding/json matches them to struct fields, case-insensitively (mcp-go
// servers decode with it, so {"Method":"tools/call"} runs tools/call there). The
// readings differ only when some name matched that way alone.
func (s *scanner) message() (Message, error) {
	var exact, folded reading
	err := s.object(func(k, fk member) error {
		if fk == memberParams {
			var name *span
			if k == memberParams {
				name = &exact.name
			}
			return s.params(name, &folded.name)
		}
		if fk == memberOther {
			return s.skipValue()
		}
		sp, err := s.valueSpan()
		if err == nil {
			exact.set(s, k, sp)
			folded.set(s, fk, sp)
		}
		return err
	}, false)
	if err != nil {
		return Message{}, err
	}
	m := s.build(exact)
	if folded == exact {
		return m, nil
	}
	f := s.build(folded)
	switch {
	case !f.isCall():
		return m, nil
	case !m.isCall():
		// Only a case-insensitive server runs it: charge what it runs.
		return f, nil
	case m.Method == f.Method && m.Name == f.Name:
		// The same call, whatever the id: charge it once, answering the
		// reading that has an id if only one has.
		if !m.HasID() && f.HasID() {
			return f, nil
		}
		return m, nil
	default:
		// Each kind of server runs a different call: charge both.
		m.Folded = &f
		return m, nil
	}
}

// build classifies a message from one reading of it.
func (s *scanner) build(r reading) Message {
	var m Message
	if r.id.present() {
		m.ID = s.compactID(r.id)
	}
	if !r.version.present() || s.decodeString(r.version) != "2.0" {
		return m
	}
	switch {
	case r.hasMethod:
		if !r.method.present() {
			return m
		}
		m.Kind = KindNotification
		if r.id.present() {
			m.Kind = KindRequest
		}
		m.Method = s.decodeString(r.method)
		if r.name.present() {
			m.Name = s.decodeString(r.name)
		}
	case r.hasResult || r.hasError:
		m.Kind = KindResponse
	}
	return m
}

// isCall reports whether m asks the server to run something.
func (m Message) isCall() bool { return m.Kind == KindRequest || m.Kind == KindNotification }

// params reads a value of "params". For each string "name" member of an object
// it sets exact (when not nil) to its span, and folded for a name that matches
// "name" case-insensitively; any other value is skipped and leaves both as they
// were.
func (s *scanner) params(exact, folded *span) error {
	if s.peek() != '{' {
		return s.skipValue()
	}
	return s.object(func(k, fk member) error {
		if fk != memberName {
			return s.skipValue()
		}
		sp, err := s.valueSpan()
		if err != nil || !s.isString(sp) {
			return err
		}
		if k == memberName && exact != nil {
			*exact = sp
		}
		*folded = sp
		return nil
	}, true)
}

// object reads an object, calling value for each member with s.pos at the
// member's value; value must consume it. It gets the member the name stands for
// matched exactly, and matched case-insensitively as encoding/json matches
// struct fields (the same member when the exact match found one). inParams
// selects the names of params rather than those of a message.
func (s *scanner) object(value func(exact, folded member) error, inParams bool) error {
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
		k, fk := memberOther, memberOther
		raw := s.data[start+1 : s.pos-1]
		switch {
		case plain:
			k = classify(raw, inParams)
			fk = k
			if k == memberOther {
				fk = classifyFolded(raw, inParams)
			}
		case len(raw) <= keyBufSize/2:
			// An escaped name such as "\u006dethod" means "method" to every JSON
			// decoder, so it must mean it here. Longer raw names cannot unescape to
			// any name we read (each escape is at most 6 bytes for 1 byte).
			name := appendUnquoted(buf[:0], raw)
			k = classify(name, inParams)
			fk = k
			if k == memberOther {
				fk = classifyFolded(name, inParams)
			}
		}
		s.skipSpace()
		if s.peek() != ':' {
			return s.syntaxError("after object key")
		}
		s.pos++
		s.skipSpace()
		if err := value(k, fk); err != nil {
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

// classifyFolded maps a member name to the member it stands for when names
// match as encoding/json matches them to struct fields, as bytes.EqualFold
// does: each rune folds to the smallest rune of its Unicode simple-folding
// orbit, so "METHOD" and "Method" match "method", and so does "paramſ" (long s,
// whose orbit holds S). Only ASCII results can match a name we read.
func classifyFolded(name []byte, inParams bool) member {
	// The longest name we read has 7 letters, each at most 3 bytes of UTF-8.
	if len(name) > 21 {
		return memberOther
	}
	var buf [7]byte
	n := 0
	for i := 0; i < len(name); {
		c := name[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRune(name[i:])
			f := foldRune(r)
			if f >= utf8.RuneSelf {
				return memberOther
			}
			c = byte(f)
			i += size
		} else {
			i++
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if n == len(buf) {
			return memberOther
		}
		buf[n] = c
		n++
	}
	return classify(buf[:n], inParams)
}

// foldRune returns the smallest rune of r's simple-folding orbit, as
// encoding/json folds names.
func foldRune(r rune) rune {
	for {
		next := unicode.SimpleFold(r)
		if next <= r {
			return next
		}
		r = next
	}
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
