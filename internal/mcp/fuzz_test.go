package mcp

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzParse checks that Parse never panics, agrees with json.Valid on what is
// JSON, and on JSON reads the same messages as a reference built on
// encoding/json's Decoder, which walks each object's members in order with
// their names unescaped, repeats included, so that it can apply Parse's rules
// (the last string value of a repeated member counts; names read exactly, and
// as strings.EqualFold matches them, which is encoding/json's rule for struct
// fields).
// Run: go test -run=^$ -fuzz=FuzzParse ./internal/mcp/
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"search","arguments":{"q":"x"}}}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`{"jsonrpc":"2.0","id":"a\"b\u0041","result":{}}`,
		`{"jsonrpc":"2.0","id":null,"error":{"code":1,"message":"x"}}`,
		`[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"\u0073earch"}},1,{"id":2}]`,
		`{"jsonrpc":"2.0","id":1,"method":"a","method":"b","Method":"c","params":{"name":"x","name":2}}`,
		`{"\u006asonrpc":"2\u002e0","id":-1.5e-3,"method":"tools\/call","params":{"name":"\ud83d\ude00\ud800"}}`,
		"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\xff\",\"params\":{\"name\":\"\xc3\x28\"}}",
		`{"jsonrpc":"2.0","id":{ "a" : [1, 2] },"method":"ping"} x`,
		`{"jsonrpc":"2.0","jsonrpc":null,"id":1,"method":"tools/call","method":7,"params":{"name":"s","name":null},"params":[1]}`,
		`{"JSONRPC":"2.0","\u0131d":1,"Method":"tools/call","method":"ping","PARAMS":{"Name":"s"},"params":{"name":"t"}}`,
		"{\"jsonrpc\":\"2.0\",\"id\":1,\"me\u212athod\":\"x\",\"param\u017f\":{\"nAmE\":\"k\"},\"method\":\"tools/call\"}",
		`{"jsonrpc":"2.0","id":{"a":[NaN, -Infinity]},"method":"tools/call","params":{"name":"s","arguments":{"x":Infinity,"y":"NaN"}}}`,
		`[NaN,-Infinity ,Infinity, NaN1,"NaN"]`,
		`[]`, ` `, `1`, `[[[[[]]]]]`, `{"a":[1,2,}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if bytes.Count(body, []byte(",")) >= MaxBatch {
			// A batch past MaxBatch is refused unread, valid JSON or not
			// (TestParseRefusesBatchesPastMaxBatch); the reference reads on.
			return
		}
		got, err := Parse(body)
		// Parse also reads NaN, Infinity and -Infinity as values; encoding/json
		// reads the body with each of them as 0.
		clean := withoutNonFinite(body)
		if !json.Valid(clean) {
			if !errors.Is(err, ErrNotJSON) {
				t.Fatalf("Parse(%q) on invalid JSON: got error %v, want ErrNotJSON", body, err)
			}
			return
		}
		if !bytes.Equal(clean, body) {
			cleanIDs(t, got.Messages)
		}
		want, wantErr := referenceParse(t, clean)
		if !errors.Is(err, wantErr) || (wantErr == nil && err != nil) {
			t.Fatalf("Parse(%q) error: got %v, want %v", body, err, wantErr)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("Parse(%q) mismatch (-reference +got):\n%s", body, diff)
		}
	})
}

// referenceParse classifies a valid JSON body with encoding/json.
func referenceParse(t *testing.T, body []byte) (Body, error) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	switch trimmed[0] {
	case '{':
		m := referenceMessage(t, trimmed)
		if m.Kind == KindInvalid {
			return Body{Messages: []Message{m}}, ErrNotJSONRPC
		}
		return Body{Messages: []Message{m}}, nil
	case '[':
		var elems []json.RawMessage
		if err := json.Unmarshal(body, &elems); err != nil {
			t.Fatalf("reference: %v", err)
		}
		b := Body{Batch: true}
		for _, e := range elems {
			if e[0] == '{' {
				b.Messages = append(b.Messages, referenceMessage(t, e))
			} else {
				b.Messages = append(b.Messages, Message{Kind: KindInvalid})
			}
		}
		if len(b.Messages) == 0 {
			return b, ErrEmptyBatch
		}
		return b, nil
	}
	return Body{}, ErrNotJSONRPC
}

// referenceMessage reads raw with names matched exactly and with names matched
// by strings.EqualFold (encoding/json's rule for struct fields), and picks
// between the two readings as Parse documents.
func referenceMessage(t *testing.T, raw []byte) Message {
	exact := referenceReading(t, raw, func(a, b string) bool { return a == b })
	folded := referenceReading(t, raw, strings.EqualFold)
	isCall := func(m Message) bool { return m.Kind == KindRequest || m.Kind == KindNotification }
	switch {
	case !isCall(folded):
		return exact
	case !isCall(exact):
		return folded
	case folded.Method == exact.Method && folded.Name == exact.Name:
		if !exact.HasID() && folded.HasID() {
			return folded
		}
		return exact
	default:
		exact.Folded = &folded
		return exact
	}
}

// referenceReading classifies raw, matching member names with match.
func referenceReading(t *testing.T, raw []byte, match func(got, want string) bool) Message {
	var (
		m                            Message
		version, method, name        string
		hasVersion, hasMethod        bool
		hasMethodString, hasName     bool
		hasResult, hasError, isValid bool
	)
	for _, mb := range objectMembers(t, raw) {
		switch {
		case match(mb.key, "id"):
			var buf bytes.Buffer
			if err := json.Compact(&buf, mb.val); err != nil {
				t.Fatalf("reference: %v", err)
			}
			m.ID = buf.Bytes()
		case match(mb.key, "jsonrpc"):
			if refString(t, mb.val, &version) {
				hasVersion = true
			}
		case match(mb.key, "method"):
			hasMethod = true
			if refString(t, mb.val, &method) {
				hasMethodString = true
			}
		case match(mb.key, "params"):
			if mb.val[0] == '{' {
				for _, p := range objectMembers(t, mb.val) {
					if match(p.key, "name") && refString(t, p.val, &name) {
						hasName = true
					}
				}
			}
		case match(mb.key, "result"):
			hasResult = true
		case match(mb.key, "error"):
			hasError = true
		}
	}
	isValid = hasVersion && version == "2.0"
	switch {
	case !isValid:
	case hasMethod:
		if !hasMethodString {
			return m
		}
		m.Method = method
		m.Kind = KindNotification
		if m.HasID() {
			m.Kind = KindRequest
		}
		if hasName {
			m.Name = name
		}
	case hasResult || hasError:
		m.Kind = KindResponse
	}
	return m
}

// withoutNonFinite returns body with each NaN, Infinity and -Infinity that
// stands where a value may (after '[', ':', ',' or at the start, outside
// strings) replaced by 0 and spaces, so that it keeps its length.
func withoutNonFinite(body []byte) []byte {
	out := bytes.Clone(body)
	inString, escaped := false, false
	var prev byte // the last byte outside strings that is not whitespace
	for i := 0; i < len(out); i++ {
		c := out[i]
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
				prev = c
			}
			continue
		}
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		case '"':
			inString = true
			continue
		}
		if prev == 0 || prev == '[' || prev == ':' || prev == ',' {
			for _, lit := range []string{"NaN", "Infinity", "-Infinity"} {
				if bytes.HasPrefix(out[i:], []byte(lit)) {
					out[i] = '0'
					for j := 1; j < len(lit); j++ {
						out[i+j] = ' '
					}
					i += len(lit) - 1
					c = '0'
					break
				}
			}
		}
		prev = c
	}
	return out
}

// cleanIDs rewrites each id as withoutNonFinite and encoding/json's Compact
// would, as the reference reads it.
func cleanIDs(t *testing.T, msgs []Message) {
	for i := range msgs {
		for m := &msgs[i]; m != nil; m = m.Folded {
			if m.ID == nil {
				continue
			}
			var buf bytes.Buffer
			if err := json.Compact(&buf, withoutNonFinite(m.ID)); err != nil {
				t.Fatalf("id %q: %v", m.ID, err)
			}
			m.ID = buf.Bytes()
		}
	}
}

// refMember is an object member as encoding/json reads it: name unescaped, value
// raw.
type refMember struct {
	key string
	val json.RawMessage
}

// objectMembers lists the members of the object raw in order, repeats included
// (a map would keep only the last of each name).
func objectMembers(t *testing.T, raw []byte) []refMember {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil {
		t.Fatalf("reference: %v", err)
	}
	var out []refMember
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			t.Fatalf("reference: %v", err)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("reference: %v", err)
		}
		out = append(out, refMember{key: k.(string), val: v})
	}
	return out
}

// refString decodes v into s if it is a JSON string.
func refString(t *testing.T, v json.RawMessage, s *string) bool {
	if v[0] != '"' {
		return false
	}
	if err := json.Unmarshal(v, s); err != nil {
		t.Fatalf("reference: %v", err)
	}
	return true
}
