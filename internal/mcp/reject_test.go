package mcp

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func mustParse(t *testing.T, body string) Body {
	t.Helper()
	b, err := Parse([]byte(body))
	if err != nil {
		t.Fatalf("Parse(%s): got error %v, want nil", body, err)
	}
	return b
}

func TestRejectionBody(t *testing.T) {
	perUser := Rejection{Code: -32029, Message: "Rate limit exceeded", RetryAfterSeconds: 20, RetryAfterMs: 19500, Limit: "tool:search", Scope: "perUser"}
	asToolResult := perUser
	asToolResult.Format = FormatToolResult
	oneSecond := asToolResult
	oneSecond.RetryAfterSeconds, oneSecond.RetryAfterMs = 1, 250
	custom := Rejection{Code: 429, Message: `Slow "down" — ½ <now> & then` + "\n\t\x01\u2028", RetryAfterSeconds: 3, RetryAfterMs: 2001, Limit: "method:resources/read", Scope: "shared"}
	customTool := custom
	customTool.Format = FormatToolResult
	zero := Rejection{Limit: "shared", Scope: "shared"}
	rateLimited := perUser
	rateLimited.Code, rateLimited.MaxTokens, rateLimited.Remaining = CodeRateLimited, 5, 0
	rateLimitedTool := rateLimited
	rateLimitedTool.Format = FormatToolResult

	const (
		call         = `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"search"}}`
		errorSearch  = `"error":{"code":-32029,"message":"Rate limit exceeded","data":{"retryAfterSeconds":20,"retryAfterMs":19500,"limit":"tool:search","scope":"perUser"}}}`
		resultSearch = `"result":{"content":[{"type":"text","text":"Rate limit exceeded; retry after 20 seconds"}],"isError":true,"resultType":"complete","_meta":{"retryAfterSeconds":20,"retryAfterMs":19500,"limit":"tool:search","scope":"perUser"}}}`
		batchBody    = `[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}},` +
			`{"jsonrpc":"2.0","method":"tools/call","params":{"name":"search"}},` +
			`{"jsonrpc":"2.0","id":"r","method":"resources/read"},` +
			`{"jsonrpc":"2.0","id":9,"result":{}},` +
			`{"id":10,"method":"tools/call"},` +
			`{"jsonrpc":"2.0","id":null,"method":"tools/call"}]`
	)
	tests := []struct {
		name string
		body string
		r    Rejection
		want string
	}{
		{"the documented error body", call, perUser, `{"jsonrpc":"2.0","id":7,` + errorSearch},
		{"string id echoed", `{"jsonrpc":"2.0","id":"a\"b\u0041","method":"tools/call"}`, perUser, `{"jsonrpc":"2.0","id":"a\"b\u0041",` + errorSearch},
		{"big number id echoed", `{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"tools/call"}`, perUser,
			`{"jsonrpc":"2.0","id":123456789012345678901234567890,` + errorSearch},
		{"null id echoed", `{"jsonrpc":"2.0","id":null,"method":"tools/call"}`, perUser, `{"jsonrpc":"2.0","id":null,` + errorSearch},
		{"notification has no id", `{"jsonrpc":"2.0","method":"tools/call"}`, perUser, `{"jsonrpc":"2.0",` + errorSearch},
		{"NaN id answered as null", `{"jsonrpc":"2.0","id":NaN,"method":"tools/call"}`, perUser, `{"jsonrpc":"2.0","id":null,` + errorSearch},
		{"id holding -Infinity answered as null", `{"jsonrpc":"2.0","id":[1,-Infinity],"method":"tools/call"}`, perUser,
			`{"jsonrpc":"2.0","id":null,` + errorSearch},
		{"the id only a case-insensitive server reads is answered", `{"jsonrpc":"2.0","ID":5,"method":"tools/call"}`, perUser,
			`{"jsonrpc":"2.0","id":5,` + errorSearch},
		{"the documented tool result body", call, asToolResult, `{"jsonrpc":"2.0","id":7,` + resultSearch},
		{"tool result, one second", call, oneSecond,
			`{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"Rate limit exceeded; retry after 1 second"}],"isError":true,"resultType":"complete","_meta":{"retryAfterSeconds":1,"retryAfterMs":250,"limit":"tool:search","scope":"perUser"}}}`},
		{"tool result format keeps the error for other methods", `{"jsonrpc":"2.0","id":7,"method":"resources/read"}`, asToolResult,
			`{"jsonrpc":"2.0","id":7,` + errorSearch},
		{"tool result for a notification", `{"jsonrpc":"2.0","method":"tools/call"}`, asToolResult, `{"jsonrpc":"2.0",` + resultSearch},
		{"custom message escaped", `{"jsonrpc":"2.0","id":1,"method":"resources/read"}`, custom,
			`{"jsonrpc":"2.0","id":1,"error":{"code":429,"message":"Slow \"down\" — ½ <now> & then\n\t\u0001\u2028","data":{"retryAfterSeconds":3,"retryAfterMs":2001,"limit":"method:resources/read","scope":"shared"}}}`},
		{"custom message in tool result", call, customTool,
			`{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"Slow \"down\" — ½ <now> & then\n\t\u0001\u2028; retry after 3 seconds"}],"isError":true,"resultType":"complete","_meta":{"retryAfterSeconds":3,"retryAfterMs":2001,"limit":"method:resources/read","scope":"shared"}}}`},
		{"zero values take defaults", call, zero,
			`{"jsonrpc":"2.0","id":7,"error":{"code":-32029,"message":"Rate limit exceeded","data":{"retryAfterSeconds":1,"retryAfterMs":1,"limit":"shared","scope":"shared"}}}`},
		{"batch answers requests only", batchBody, perUser,
			`[{"jsonrpc":"2.0","id":1,` + errorSearch + `,{"jsonrpc":"2.0","id":"r",` + errorSearch + `,{"jsonrpc":"2.0","id":null,` + errorSearch + `]`},
		{"batch with tool results", batchBody, asToolResult,
			`[{"jsonrpc":"2.0","id":1,` + resultSearch + `,{"jsonrpc":"2.0","id":"r",` + errorSearch + `,{"jsonrpc":"2.0","id":null,` + resultSearch + `]`},
		{"batch of notifications", `[{"jsonrpc":"2.0","method":"tools/call"},{"jsonrpc":"2.0","method":"tools/call"}]`, perUser, `[]`},
		{"RateLimited (-32023): the draft's data shape", call, rateLimited,
			`{"jsonrpc":"2.0","id":7,"error":{"code":-32023,"message":"Rate limit exceeded","data":{"retryAfterMs":19500,"limit":5,"remaining":0,"retryAfterSeconds":20,"bucket":"tool:search","scope":"perUser"}}}`},
		{"RateLimited (-32023): a tool result keeps the usual _meta, other methods get the draft's error", batchBody, rateLimitedTool,
			`[{"jsonrpc":"2.0","id":1,` + resultSearch + `,{"jsonrpc":"2.0","id":"r","error":{"code":-32023,"message":"Rate limit exceeded","data":{"retryAfterMs":19500,"limit":5,"remaining":0,"retryAfterSeconds":20,"bucket":"tool:search","scope":"perUser"}}},{"jsonrpc":"2.0","id":null,` + resultSearch + `]`},
		{"batch of one stays an array", `[` + call + `]`, perUser, `[{"jsonrpc":"2.0","id":7,` + errorSearch + `]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := RejectionBody(mustParse(t, tt.body), tt.r)
			if string(got) != tt.want {
				t.Errorf("RejectionBody:\n got %s\nwant %s", got, tt.want)
			}
			checkJSON(t, got)
		})
	}
}

func TestRejectionBodyMessageRoundTrips(t *testing.T) {
	for _, msg := range []string{
		`plain`, `"quoted"`, `back\slash`, "tab\tnewline\ncr\r", "\x00\x1f\x7f", "ünïcödé 😀", "\u2028\u2029", `</script>&`,
	} {
		t.Run(msg, func(t *testing.T) {
			body := RejectionBody(mustParse(t, `{"jsonrpc":"2.0","id":1,"method":"tools/call"}`),
				Rejection{Message: msg, RetryAfterSeconds: 2, Limit: "shared", Scope: "shared"})
			var got struct {
				Error struct{ Message string }
			}
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("Unmarshal(%s): %v", body, err)
			}
			if got.Error.Message != msg {
				t.Errorf("message: got %q, want %q", got.Error.Message, msg)
			}
		})
	}
}

func TestRejectionBodyInvalidUTF8Message(t *testing.T) {
	got := RejectionBody(mustParse(t, `{"jsonrpc":"2.0","id":1,"method":"x"}`), Rejection{Message: "a\xffb", RetryAfterSeconds: 1})
	want := `{"jsonrpc":"2.0","id":1,"error":{"code":-32029,"message":"a\ufffdb","data":{"retryAfterSeconds":1,"retryAfterMs":1,"limit":"","scope":""}}}`
	if string(got) != want {
		t.Errorf("got %s, want %s", got, want)
	}
	checkJSON(t, got)
}

func TestErrorBody(t *testing.T) {
	tests := []struct {
		name string
		body string
		want string
	}{
		{"request", `{"jsonrpc":"2.0","id":"x","method":"tools/call"}`,
			`{"jsonrpc":"2.0","id":"x","error":{"code":-32603,"message":"rate limiter \"unavailable\""}}`},
		{"notification", `{"jsonrpc":"2.0","method":"tools/call"}`,
			`{"jsonrpc":"2.0","error":{"code":-32603,"message":"rate limiter \"unavailable\""}}`},
		{"batch", `[{"jsonrpc":"2.0","id":1,"method":"tools/call"},{"jsonrpc":"2.0","method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping"}]`,
			`[{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"rate limiter \"unavailable\""}},{"jsonrpc":"2.0","id":2,"error":{"code":-32603,"message":"rate limiter \"unavailable\""}}]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ErrorBody(mustParse(t, tt.body), -32603, `rate limiter "unavailable"`)
			if string(got) != tt.want {
				t.Errorf("ErrorBody:\n got %s\nwant %s", got, tt.want)
			}
			checkJSON(t, got)
		})
	}
}

// checkJSON asserts b is one line of valid JSON that survives a decode and
// re-encode unchanged in meaning.
func checkJSON(t *testing.T, b []byte) {
	t.Helper()
	if !json.Valid(b) {
		t.Fatalf("body is not valid JSON: %s", b)
	}
	if bytes.ContainsAny(b, "\n\r") {
		t.Errorf("body is not one line: %q", b)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	again, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	var w any
	if err := json.Unmarshal(again, &w); err != nil {
		t.Fatalf("Unmarshal of re-encoded body: %v", err)
	}
	if diff := cmp.Diff(v, w); diff != "" {
		t.Errorf("body changed on round trip (-first +second):\n%s", diff)
	}
}
