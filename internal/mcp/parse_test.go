package mcp

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func req(id, method, name string) Message {
	return Message{Kind: KindRequest, ID: json.RawMessage(id), Method: method, Name: name}
}

func notif(method string) Message { return Message{Kind: KindNotification, Method: method} }

// folded returns m with f as the call a case-insensitive server reads in it.
func folded(m, f Message) Message {
	m.Folded = &f
	return m
}

func single(m Message) Body { return Body{Messages: []Message{m}} }

func batch(ms ...Message) Body { return Body{Batch: true, Messages: ms} }

// nested returns n opening brackets around a value, i.e. a value n arrays deep.
func nested(n int) string { return strings.Repeat("[", n) + "1" + strings.Repeat("]", n) }

func TestParse(t *testing.T) {
	invalid := Message{Kind: KindInvalid}
	tests := []struct {
		name    string
		body    string
		want    Body
		wantErr error
	}{
		// Single messages.
		{"tools/call request", `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"search","arguments":{"q":"x"}}}`,
			single(req("7", "tools/call", "search")), nil},
		{"members in any order", `{"params":{"arguments":{},"name":"search"},"method":"tools/call","id":1,"jsonrpc":"2.0"}`,
			single(req("1", "tools/call", "search")), nil},
		{"notification has no id", `{"jsonrpc":"2.0","method":"notifications/initialized"}`,
			single(Message{Kind: KindNotification, Method: "notifications/initialized"}), nil},
		{"tools/call notification", `{"jsonrpc":"2.0","method":"tools/call","params":{"name":"search"}}`,
			single(Message{Kind: KindNotification, Method: "tools/call", Name: "search"}), nil},
		{"prompts/get name", `{"jsonrpc":"2.0","id":2,"method":"prompts/get","params":{"name":"greet"}}`,
			single(req("2", "prompts/get", "greet")), nil},
		{"unknown method kept", `{"jsonrpc":"2.0","id":2,"method":"x/y"}`, single(req("2", "x/y", "")), nil},
		{"empty method is a method", `{"jsonrpc":"2.0","id":2,"method":""}`, single(req("2", "", "")), nil},
		{"response with result", `{"jsonrpc":"2.0","id":1,"result":{"roots":[]}}`,
			single(Message{Kind: KindResponse, ID: json.RawMessage("1")}), nil},
		{"response with error", `{"jsonrpc":"2.0","id":"s1","error":{"code":-1,"message":"no"}}`,
			single(Message{Kind: KindResponse, ID: json.RawMessage(`"s1"`)}), nil},
		{"method wins over result", `{"jsonrpc":"2.0","id":1,"result":1,"method":"ping"}`, single(req("1", "ping", "")), nil},

		// Ids, echoed exactly as sent.
		{"string id", `{"jsonrpc":"2.0","id":"abc","method":"ping"}`, single(req(`"abc"`, "ping", "")), nil},
		{"string id keeps escapes", `{"jsonrpc":"2.0","id":"a\"b\u0041\/","method":"ping"}`,
			single(req(`"a\"b\u0041\/"`, "ping", "")), nil},
		{"null id is present", `{"jsonrpc":"2.0","id":null,"method":"ping"}`, single(req("null", "ping", "")), nil},
		{"negative id", `{"jsonrpc":"2.0","id":-5,"method":"ping"}`, single(req("-5", "ping", "")), nil},
		{"float id", `{"jsonrpc":"2.0","id":1.5e3,"method":"ping"}`, single(req("1.5e3", "ping", "")), nil},
		{"huge id", `{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"ping"}`,
			single(req("123456789012345678901234567890", "ping", "")), nil},
		{"bool id still a request", `{"jsonrpc":"2.0","id":true,"method":"tools/call"}`, single(req("true", "tools/call", "")), nil},
		{"object id compacted", `{"jsonrpc":"2.0","id": { "a" : [ 1 , "x y" ] } ,"method":"ping"}`,
			single(req(`{"a":[1,"x y"]}`, "ping", "")), nil},

		// Escapes and encodings.
		{"escaped name", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"\u0073earch"}}`,
			single(req("1", "tools/call", "search")), nil},
		{"escaped method", `{"jsonrpc":"2.0","id":1,"method":"tools\/call"}`, single(req("1", "tools/call", "")), nil},
		{"escaped version", `{"jsonrpc":"2\u002e0","id":1,"method":"ping"}`, single(req("1", "ping", "")), nil},
		{"escaped member names", `{"\u006asonrpc":"2.0","\u0069d":1,"\u006dethod":"tools/call","par\u0061ms":{"n\u0061me":"s"}}`,
			single(req("1", "tools/call", "s")), nil},
		{"unicode name", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"h\u00e9llo-😀"}}`,
			single(req("1", "tools/call", "héllo-😀")), nil},
		{"surrogate pair name", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"\ud83d\ude00"}}`,
			single(req("1", "tools/call", "😀")), nil},
		{"lone surrogate becomes U+FFFD", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a\ud800b"}}`,
			single(req("1", "tools/call", "a\uFFFDb")), nil},
		{"invalid UTF-8 in name becomes U+FFFD", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"a\xffb\"}}",
			single(req("1", "tools/call", "a\uFFFDb")), nil},
		{"invalid UTF-8 in arguments", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"s\",\"arguments\":{\"q\":\"\xc3\x28\"}}}",
			single(req("1", "tools/call", "s")), nil},

		// Duplicate members: the last string value counts. A later null or other
		// non-string leaves an earlier string: the Go SDK (a struct decoder)
		// keeps {"jsonrpc":"2.0","jsonrpc":null} as 2.0 and runs the tool of
		// {"name":"echo","name":null}.
		{"duplicate method", `{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}`, single(req("1", "tools/call", "")), nil},
		{"duplicate name", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}`,
			single(req("1", "tools/call", "b")), nil},
		{"duplicate name, last not a string", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":1}}`,
			single(req("1", "tools/call", "a")), nil},
		{"duplicate name, last null", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":null}}`,
			single(req("1", "tools/call", "a")), nil},
		{"duplicate version, last null", `{"jsonrpc":"2.0","jsonrpc":null,"id":1,"method":"tools/call","params":{"name":"a"}}`,
			single(req("1", "tools/call", "a")), nil},
		{"duplicate method, last null", `{"jsonrpc":"2.0","id":1,"method":"tools/call","method":null}`,
			single(req("1", "tools/call", "")), nil},
		{"method only null", `{"jsonrpc":"2.0","id":1,"method":null}`, single(Message{ID: json.RawMessage("1")}), ErrNotJSONRPC},
		// A struct decoder merges repeated params objects: any of them may name the tool.
		{"duplicate params, last without name", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"params":{}}`,
			single(req("1", "tools/call", "a")), nil},
		{"duplicate params, last null", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"params":null}`,
			single(req("1", "tools/call", "a")), nil},
		{"duplicate params, last names another", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"params":{"name":"b"}}`,
			single(req("1", "tools/call", "b")), nil},
		{"duplicate id", `{"jsonrpc":"2.0","id":1,"id":"two","method":"ping"}`, single(req(`"two"`, "ping", "")), nil},
		{"duplicate version, last valid", `{"jsonrpc":"1.0","jsonrpc":"2.0","id":1,"method":"ping"}`, single(req("1", "ping", "")), nil},
		{"duplicate version, last invalid", `{"jsonrpc":"2.0","jsonrpc":"1.0","id":1,"method":"ping"}`,
			single(Message{ID: json.RawMessage("1")}), ErrNotJSONRPC},

		// Member names match exactly, as in the Go SDK; a server decoding with
		// encoding/json (mcp-go) also takes case variants. The call each kind of
		// server runs is charged.
		{"case variant method is a second call", `{"jsonrpc":"2.0","id":1,"method":"ping","Method":"tools/call"}`,
			single(folded(req("1", "ping", ""), req("1", "tools/call", ""))), nil},
		{"case variant alone is the call", `{"jsonrpc":"2.0","id":1,"Method":"tools/call"}`, single(req("1", "tools/call", "")), nil},
		{"every name a case variant", `{"JSONRPC":"2.0","ID":1,"METHOD":"tools/call","PARAMS":{"NAME":"x"}}`,
			single(req("1", "tools/call", "x")), nil},
		{"case variant name is a second call", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"Name":"x"}}`,
			single(folded(req("1", "tools/call", ""), req("1", "tools/call", "x"))), nil},
		{"case variant params merge with params", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"Params":{"arguments":{}}}`,
			single(req("1", "tools/call", "a")), nil},
		{"long s folds to s", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"param\u017f\":{\"name\":\"x\"}}",
			single(folded(req("1", "tools/call", ""), req("1", "tools/call", "x"))), nil},
		{"JSON-escaped long s folds too", `{"jsonrpc":"2.0","id":1,"method":"tools/call","param\u017f":{"name":"x"}}`,
			single(folded(req("1", "tools/call", ""), req("1", "tools/call", "x"))), nil},
		{"Kelvin sign folds to k, which no name we read holds", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"\u212aey":"x"}}`,
			single(req("1", "tools/call", "")), nil},
		{"dotless i does not fold to i", `{"jsonrpc":"2.0","\u0131d":1,"method":"ping"}`, single(notif("ping")), nil},
		{"case variant id alone: the same call, charged once with its id",
			`{"jsonrpc":"2.0","method":"tools/call","params":{"name":"s"},"ID":1}`, single(req("1", "tools/call", "s")), nil},
		{"two ids, the same call: charged once, the exact reading answered",
			`{"jsonrpc":"2.0","id":1,"ID":2,"method":"tools/call","params":{"name":"s"}}`, single(req("1", "tools/call", "s")), nil},
		{"case variant that runs nothing is ignored", `{"jsonrpc":"2.0","id":1,"method":"tools/call","METHOD":5}`,
			single(req("1", "tools/call", "")), nil},
		{"case variant of a response is no call", `{"jsonrpc":"2.0","id":1,"Result":{}}`,
			single(Message{ID: json.RawMessage("1")}), ErrNotJSONRPC},

		// Names only where they are.
		{"name inside arguments ignored", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{"name":"x"}}}`,
			single(req("1", "tools/call", "")), nil},
		{"name outside params ignored", `{"jsonrpc":"2.0","id":1,"method":"tools/call","name":"x"}`, single(req("1", "tools/call", "")), nil},
		{"params not an object", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["search"]}`, single(req("1", "tools/call", "")), nil},
		{"params a string", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":"search"}`, single(req("1", "tools/call", "")), nil},
		{"params null", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":null}`, single(req("1", "tools/call", "")), nil},
		{"name not a string", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":{"s":1}}}`, single(req("1", "tools/call", "")), nil},

		// Not JSON-RPC.
		{"wrong version", `{"jsonrpc":"1.0","id":1,"method":"ping"}`, single(Message{ID: json.RawMessage("1")}), ErrNotJSONRPC},
		{"version a number", `{"jsonrpc":2.0,"id":1,"method":"ping"}`, single(Message{ID: json.RawMessage("1")}), ErrNotJSONRPC},
		{"no version", `{"id":1,"method":"ping"}`, single(Message{ID: json.RawMessage("1")}), ErrNotJSONRPC},
		{"missing method", `{"jsonrpc":"2.0","id":1,"params":{}}`, single(Message{ID: json.RawMessage("1")}), ErrNotJSONRPC},
		{"method a number", `{"jsonrpc":"2.0","id":1,"method":5}`, single(Message{ID: json.RawMessage("1")}), ErrNotJSONRPC},
		{"method null", `{"jsonrpc":"2.0","method":null}`, single(invalid), ErrNotJSONRPC},
		{"empty object", `{}`, single(invalid), ErrNotJSONRPC},
		{"number", `42`, Body{}, ErrNotJSONRPC},
		{"string", `"tools/call"`, Body{}, ErrNotJSONRPC},
		{"null", ` null `, Body{}, ErrNotJSONRPC},

		// Batches.
		{"batch", `[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}},{"jsonrpc":"2.0","method":"notifications/cancelled"},{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"b"}}]`,
			batch(req("1", "tools/call", "a"), Message{Kind: KindNotification, Method: "notifications/cancelled"}, req(`"x"`, "tools/call", "b")), nil},
		{"batch of one", `[{"jsonrpc":"2.0","id":1,"method":"ping"}]`, batch(req("1", "ping", "")), nil},
		{"batch keeps invalid elements in place", `[1,{"jsonrpc":"2.0","id":1,"method":"tools/call"},{"id":2,"method":"tools/call"},[],"x",null,{"jsonrpc":"2.0","id":3,"result":{}}]`,
			batch(invalid, req("1", "tools/call", ""), Message{ID: json.RawMessage("2")}, invalid, invalid, invalid, Message{Kind: KindResponse, ID: json.RawMessage("3")}), nil},
		{"empty batch", `[]`, Body{Batch: true}, ErrEmptyBatch},
		{"empty batch with space", " [ \n ] ", Body{Batch: true}, ErrEmptyBatch},

		// Whitespace and trailing data.
		{"surrounding whitespace", " \t\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"} \n\t\r", single(req("1", "ping", "")), nil},
		{"space inside", "{ \"jsonrpc\" : \"2.0\" ,\n\"id\" : 1 , \"method\" :\t\"ping\" }", single(req("1", "ping", "")), nil},
		{"trailing garbage returns the message", `{"jsonrpc":"2.0","id":1,"method":"tools/call"} x`, single(req("1", "tools/call", "")), ErrTrailingData},
		{"second object", `{"jsonrpc":"2.0","id":1,"method":"tools/call"}{"jsonrpc":"2.0","id":2,"method":"ping"}`,
			single(req("1", "tools/call", "")), ErrTrailingData},
		{"trailing after batch", `[{"jsonrpc":"2.0","id":1,"method":"ping"}]]`, batch(req("1", "ping", "")), ErrTrailingData},
		{"trailing NUL", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\x00", single(req("1", "ping", "")), ErrTrailingData},
		{"trailing after scalar", `1 2`, Body{}, ErrTrailingData},

		// Not JSON.
		{"empty body", ``, Body{}, ErrNotJSON},
		{"whitespace only", " \n\t\r ", Body{}, ErrNotJSON},
		{"truncated", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"`, Body{}, ErrNotJSON},
		{"trailing comma", `{"jsonrpc":"2.0","id":1,}`, Body{}, ErrNotJSON},
		{"missing colon", `{"jsonrpc" "2.0"}`, Body{}, ErrNotJSON},
		{"unquoted key", `{jsonrpc:"2.0"}`, Body{}, ErrNotJSON},
		{"single quotes", `{'jsonrpc':'2.0'}`, Body{}, ErrNotJSON},
		{"unterminated string", `{"jsonrpc":"2.0`, Body{}, ErrNotJSON},
		{"control character in string", "{\"jsonrpc\":\"2.\n0\"}", Body{}, ErrNotJSON},
		{"bad escape", `{"jsonrpc":"\x32.0"}`, Body{}, ErrNotJSON},
		{"short unicode escape", `{"jsonrpc":"\u32"}`, Body{}, ErrNotJSON},
		{"leading zero", `{"jsonrpc":"2.0","id":01,"method":"ping"}`, Body{}, ErrNotJSON},
		{"bare decimal point", `{"jsonrpc":"2.0","id":1.,"method":"ping"}`, Body{}, ErrNotJSON},
		{"bare minus", `[-]`, Body{}, ErrNotJSON},
		{"bad exponent", `[1e]`, Body{}, ErrNotJSON},
		{"plus sign", `[+1]`, Body{}, ErrNotJSON},
		{"bad literal", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{"x":tru}}}`, Body{}, ErrNotJSON},
		{"bad value in skipped array", `{"jsonrpc":"2.0","id":1,"method":"ping","x":[1,2,]}`, Body{}, ErrNotJSON},
		{"mismatched brackets", `{"jsonrpc":"2.0","x":[1,2}}`, Body{}, ErrNotJSON},
		{"batch trailing comma", `[{"jsonrpc":"2.0","id":1,"method":"ping"},]`, Body{}, ErrNotJSON},
		{"byte order mark", "\xef\xbb\xbf{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}", Body{}, ErrNotJSON},
		// NaN, Infinity and -Infinity are values to the Python SDK
		// (pydantic_core.from_json), which runs the call: they are read as JSON.
		{"NaN in arguments", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"s","arguments":{"x":NaN}}}`,
			single(req("1", "tools/call", "s")), nil},
		{"Infinity and -Infinity beside params", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"s"},"z":[Infinity,-Infinity]}`,
			single(req("1", "tools/call", "s")), nil},
		{"NaN as a batch element", `[NaN]`, batch(invalid), nil},
		{"NaN as the method is no method", `{"jsonrpc":"2.0","id":1,"method":NaN}`, single(Message{ID: json.RawMessage("1")}), ErrNotJSONRPC},
		{"lower-case nan", `[nan]`, Body{}, ErrNotJSON},
		{"plus Infinity", `[+Infinity]`, Body{}, ErrNotJSON},
		{"minus NaN", `[-NaN]`, Body{}, ErrNotJSON},
		{"NaN run into a digit", `[NaN1]`, Body{}, ErrNotJSON},
		{"Inf", `[Inf]`, Body{}, ErrNotJSON},

		// Nesting.
		{"deepest allowed nesting", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"s","arguments":` +
			nested(maxDepth-2) + `}}`, single(req("1", "tools/call", "s")), nil},
		{"nesting one too deep", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"s","arguments":` +
			nested(maxDepth-1) + `}}`, Body{}, ErrNotJSON},
		{"deep nesting, no stack overflow", strings.Repeat("[", 1_000_000), Body{}, ErrNotJSON},
		{"deep objects", strings.Repeat(`{"a":`, 20_000), Body{}, ErrNotJSON},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.body))
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("Parse error: got %v, want %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Parse body mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestParseReadsNestingNodeReads: JSON.parse (the TypeScript SDK) reads any
// depth, so a call whose arguments nest deeper than encoding/json's 10,000 is
// still a call, not a body to wave through.
func TestParseReadsNestingNodeReads(t *testing.T) {
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"s","arguments":{"pad":` + nested(10_001) + `}}}`
	if json.Valid([]byte(body)) {
		t.Fatal("encoding/json reads 10,001 levels; the test no longer shows what it is for")
	}
	got, err := Parse([]byte(body))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if diff := cmp.Diff(single(req("1", "tools/call", "s")), got); diff != "" {
		t.Errorf("Parse body mismatch (-want +got):\n%s", diff)
	}
}

// TestParseRefusesBatchesPastMaxBatch: a batch is read up to MaxBatch
// messages; one more, and the body is no JSON-RPC message the limiter reads.
func TestParseRefusesBatchesPastMaxBatch(t *testing.T) {
	note := `{"jsonrpc":"2.0","method":"x"}`
	for n, want := range map[int]error{MaxBatch: nil, MaxBatch + 1: ErrNotJSONRPC} {
		b, err := Parse([]byte("[" + strings.TrimSuffix(strings.Repeat(note+",", n), ",") + "]"))
		if !errors.Is(err, want) || (want == nil && (err != nil || len(b.Messages) != n)) {
			t.Errorf("batch of %d: got %d messages, error %v; want error %v", n, len(b.Messages), err, want)
		}
	}
}

func TestParseTrailingDataIsNotJSON(t *testing.T) {
	_, err := Parse([]byte(`{"jsonrpc":"2.0","id":1,"method":"ping"} x`))
	if !errors.Is(err, ErrNotJSON) || !errors.Is(err, ErrTrailingData) {
		t.Errorf("got %v, want an error matching both ErrNotJSON and ErrTrailingData", err)
	}
}

// TestParseLargeBody checks a 10 MB argument is read, and that reading it costs
// no more allocations than a tiny one: arguments are skipped, never decoded.
func TestParseLargeBody(t *testing.T) {
	small := toolsCall(16)
	large := toolsCall(10 << 20)
	for _, b := range [][]byte{small, large} {
		got, err := Parse(b)
		if err != nil {
			t.Fatalf("Parse(%d bytes): got error %v, want nil", len(b), err)
		}
		if want := single(req("7", "tools/call", "search")); !cmp.Equal(got, want) {
			t.Fatalf("Parse(%d bytes): got %+v, want %+v", len(b), got, want)
		}
	}
	smallAllocs := testing.AllocsPerRun(10, func() { _, _ = Parse(small) })
	largeAllocs := testing.AllocsPerRun(10, func() { _, _ = Parse(large) })
	if largeAllocs != smallAllocs {
		t.Errorf("allocations for a 10 MB body: got %v, want %v (as for a small body)", largeAllocs, smallAllocs)
	}
}

// toolsCall returns a tools/call of tool "search" whose arguments hold about n
// bytes, mixing strings, escapes, numbers and nesting.
func toolsCall(n int) []byte {
	var sb strings.Builder
	sb.WriteString(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"search","arguments":{"items":[`)
	for i := 0; sb.Len() < n; i++ {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(`{"text":"lorem ipsum dolor sit amet \"quoted\" \u00e9","n":-12.5e3,"ok":true,"tags":["a","b",null]}`)
	}
	sb.WriteString(`]}}}`)
	return []byte(sb.String())
}
