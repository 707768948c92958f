package mcp

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzParse checks that Parse never panics, agrees with json.Valid on what is
// JSON, and on JSON reads the same messages as a reference built on
// encoding/json (maps give last-key-wins and case-sensitive names, the rules
// Parse follows). Run: go test -run=^$ -fuzz=FuzzParse ./internal/mcp/
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
		`[]`, ` `, `1`, `[[[[[]]]]]`, `{"a":[1,2,}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := Parse(body)
		if !json.Valid(body) {
			if !errors.Is(err, ErrNotJSON) {
				t.Fatalf("Parse(%q) on invalid JSON: got error %v, want ErrNotJSON", body, err)
			}
			return
		}
		want, wantErr := referenceParse(t, body)
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

func referenceMessage(t *testing.T, raw []byte) Message {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		t.Fatalf("reference: %v", err)
	}
	var m Message
	if id, ok := obj["id"]; ok {
		var buf bytes.Buffer
		if err := json.Compact(&buf, id); err != nil {
			t.Fatalf("reference: %v", err)
		}
		m.ID = buf.Bytes()
	}
	var version string
	if v := obj["jsonrpc"]; len(v) == 0 || v[0] != '"' || json.Unmarshal(v, &version) != nil || version != "2.0" {
		return m
	}
	method, hasMethod := obj["method"]
	_, hasResult := obj["result"]
	_, hasError := obj["error"]
	switch {
	case hasMethod:
		if method[0] != '"' {
			return m
		}
		if err := json.Unmarshal(method, &m.Method); err != nil {
			t.Fatalf("reference: %v", err)
		}
		m.Kind = KindNotification
		if m.HasID() {
			m.Kind = KindRequest
		}
		if p := obj["params"]; len(p) > 0 && p[0] == '{' {
			var params map[string]json.RawMessage
			if err := json.Unmarshal(p, &params); err != nil {
				t.Fatalf("reference: %v", err)
			}
			if n := params["name"]; len(n) > 0 && n[0] == '"' {
				if err := json.Unmarshal(n, &m.Name); err != nil {
					t.Fatalf("reference: %v", err)
				}
			}
		}
	case hasResult || hasError:
		m.Kind = KindResponse
	}
	return m
}
