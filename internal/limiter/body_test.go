package limiter

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/mcp-ratelimit/extproc/internal/config"
)

func compress(t *testing.T, coding string, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	switch coding {
	case "gzip":
		w = gzip.NewWriter(&buf)
	case "zlib":
		w = zlib.NewWriter(&buf)
	case "flate":
		w, _ = flate.NewWriter(&buf, flate.DefaultCompression)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func utf16Bytes(s string, order binary.AppendByteOrder, bom bool) []byte {
	var out []byte
	if bom {
		out = order.AppendUint16(out, 0xfeff)
	}
	for _, u := range utf16.Encode([]rune(s)) {
		out = order.AppendUint16(out, u)
	}
	return out
}

func utf32Bytes(s string, order binary.AppendByteOrder) []byte {
	var out []byte
	for _, r := range s {
		out = order.AppendUint32(out, uint32(r))
	}
	return out
}

// TestBodiesAServerReadsAreCharged: whatever the headers say, a body some MCP
// server reads as a call is charged: the declared charset does not stop the
// UTF-8 reading (the Go and TypeScript SDKs ignore it), UTF-16 and UTF-32 are
// read whatever is declared (Python's json.loads detects them), and a
// compressed body is read when the policy says the servers inflate it.
func TestBodiesAServerReadsAreCharged(t *testing.T) {
	plain := call("7", "search")
	gzipDeflate := &config.Compression{Codings: []string{"gzip", "deflate"}, MaxInflatedBytes: 4 << 20, MaxRatio: 100}
	tests := []struct {
		name            string
		body            []byte
		encoding, ctype string
		compression     *config.Compression
	}{
		{"utf-16le declared on a UTF-8 body", plain, "", "application/json; charset=utf-16le", nil},
		{"utf-32 declared on a UTF-8 body", plain, "", "application/json; charset=UTF-32", nil},
		{"utf-16le", utf16Bytes(string(plain), binary.LittleEndian, false), "", "application/json; charset=utf-16le", nil},
		{"utf-16le declared as utf-8", utf16Bytes(string(plain), binary.LittleEndian, false), "", "application/json; charset=utf-8", nil},
		{"utf-16be, no charset", utf16Bytes(string(plain), binary.BigEndian, false), "", "application/json", nil},
		{"utf-16 with a big-endian BOM", utf16Bytes(string(plain), binary.BigEndian, true), "", "application/json; charset=utf-16", nil},
		{"utf-32le", utf32Bytes(string(plain), binary.LittleEndian), "", "application/json; charset=utf-32le", nil},
		{"utf-32be, no charset", utf32Bytes(string(plain), binary.BigEndian), "", "application/json", nil},
		{"utf-32 with a little-endian BOM", append([]byte{0xff, 0xfe, 0, 0}, utf32Bytes(string(plain), binary.LittleEndian)...), "", "application/json", nil},
		{"utf-8 BOM", append([]byte("\xef\xbb\xbf"), plain...), "", "application/json", nil},
		{"quoted charset", plain, "", `application/json; charset="utf-8"`, nil},
		{"identity coding", plain, "identity", "application/json", nil},
		{"gzip, accepted by the policy", compress(t, "gzip", plain), "gzip", "application/json", gzipDeflate},
		{"x-gzip, accepted by the policy", compress(t, "gzip", plain), "x-gzip", "application/json", gzipDeflate},
		{"deflate (zlib), accepted by the policy", compress(t, "zlib", plain), "deflate", "application/json", gzipDeflate},
		{"deflate (raw), accepted by the policy", compress(t, "flate", plain), "Deflate", "application/json", gzipDeflate},
		{"utf-8 BOM, gzipped", compress(t, "gzip", append([]byte("\xef\xbb\xbf"), plain...)), "gzip", "application/json", gzipDeflate},
		{"arguments nested 10,001 deep (JSON.parse reads them)", []byte(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"search","arguments":{"pad":` +
			strings.Repeat("[", 10_001) + strings.Repeat("]", 10_001) + `}}}`), "", "application/json", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := New(server(func(s *config.Server) { s.Shared = perMinute(1); s.Compression = tt.compression }), Options{})
			r := post(tt.body, "content-encoding", tt.encoding, "content-type", tt.ctype)
			if d := l.Decide(context.Background(), r); d.Outcome != OutcomeAllowed {
				t.Fatalf("first call: got outcome %q status %d, want allowed", d.Outcome, d.Status)
			}
			if d := l.Decide(context.Background(), r); d.Outcome != OutcomeLimited {
				t.Errorf("second call: got %q, want limited", d.Outcome)
			}
		})
	}
}

// TestBodiesTheLimiterCannotReadAreRefused: a body no reading makes a JSON-RPC
// message of is answered by the limiter, never waved through: some server
// might read it otherwise.
func TestBodiesTheLimiterCannotReadAreRefused(t *testing.T) {
	plain := call("7", "search")
	gzipOnly := &config.Compression{Codings: []string{"gzip"}, MaxInflatedBytes: 4 << 20, MaxRatio: 100}
	tests := []struct {
		name            string
		body            []byte
		encoding, ctype string
		compression     *config.Compression
		wantStatus      int
		wantCode        int
	}{
		{"not JSON", []byte(`{"jsonrpc":"2.0","id":7,"method":"tools/call",`), "", "", nil, 400, -32700},
		{"a JSON string", []byte(`"tools/call"`), "", "", nil, 400, -32600},
		{"an object that is no JSON-RPC message", []byte(`{"method":"tools/call","params":{"name":"search"}}`), "", "", nil, 400, -32600},
		{"an empty batch", []byte(`[]`), "", "", nil, 400, -32600},
		{"a batch with an element that is no message", []byte(`[` + string(plain) + `,5]`), "", "", nil, 400, -32600},
		{"nesting past any limit", []byte(strings.Repeat("[", 5_000_000) + strings.Repeat("]", 5_000_000)), "", "", nil, 400, -32700},
		{"gzip, not accepted by the policy", compress(t, "gzip", plain), "gzip", "", nil, 415, -32600},
		{"br, never read", []byte("\x1b\x00"), "br", "", gzipOnly, 415, -32600},
		{"deflate, policy accepts gzip only", compress(t, "zlib", plain), "deflate", "", gzipOnly, 415, -32600},
		{"two codings", compress(t, "gzip", compress(t, "gzip", plain)), "gzip, gzip", "", gzipOnly, 415, -32600},
		{"broken gzip", []byte("not gzip"), "gzip", "", gzipOnly, 415, -32600},
		{"gzip bomb", compress(t, "gzip", make([]byte, 8<<20)), "gzip", "", gzipOnly, 413, -32600},
		{"gzip past the ratio", compress(t, "gzip", make([]byte, 1<<20)), "gzip", "", gzipOnly, 413, -32600},
		{"utf-7 (Express decodes it: +AG0- is m)", plain, "", "application/json; charset=utf-7", nil, 415, -32600},
		{"latin1", plain, "", "application/json; charset=latin1", nil, 415, -32600},
		{"RFC 2231 charset", plain, "", "application/json; charset*=utf-8''x", nil, 415, -32600},
		{"charset without a value", plain, "", "application/json; charset", nil, 415, -32600},
		{"a second content-type with another charset", plain, "", "application/json\napplication/json; charset=utf-7", nil, 415, -32600},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := New(server(func(s *config.Server) { s.Shared = perMinute(100); s.Compression = tt.compression }), Options{})
			d := l.Decide(context.Background(), post(tt.body, "content-encoding", tt.encoding, "content-type", tt.ctype))
			if d.Allow || d.Outcome != OutcomeUnreadable || d.Status != tt.wantStatus || !d.ParseError {
				t.Fatalf("got allow %v outcome %q status %d parseError %v, want refused %q %d", d.Allow, d.Outcome, d.Status, d.ParseError, OutcomeUnreadable, tt.wantStatus)
			}
			var got struct {
				ID    json.RawMessage `json:"id"`
				Error struct{ Code int }
			}
			if err := json.Unmarshal(d.Body, &got); err != nil {
				t.Fatalf("body %s: %v", d.Body, err)
			}
			if string(got.ID) != "null" || got.Error.Code != tt.wantCode {
				t.Errorf("got id %s code %d, want id null code %d (body %s)", got.ID, got.Error.Code, tt.wantCode, d.Body)
			}
		})
	}
}

// TestMessagesThatAreNoCallsPass: answers to a server's requests and
// notifications that clients POST are JSON-RPC messages, not calls to charge.
func TestMessagesThatAreNoCallsPass(t *testing.T) {
	l := New(server(func(s *config.Server) { s.Shared = perMinute(1) }), Options{})
	for _, b := range []string{
		`{"jsonrpc":"2.0","id":3,"result":{"action":"accept"}}`,
		`{"jsonrpc":"2.0","id":3,"error":{"code":-1,"message":"no"}}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}`,
		`[{"jsonrpc":"2.0","id":3,"result":{}},{"jsonrpc":"2.0","method":"notifications/progress"}]`,
	} {
		for range 2 {
			if d := l.Decide(context.Background(), post([]byte(b))); !d.Allow || d.ParseError {
				t.Errorf("%s: got allow %v outcome %q parseError %v, want a pass", b, d.Allow, d.Outcome, d.ParseError)
			}
		}
	}
}

// TestUnreadableBodiesPassWhereThePolicySays: unreadableBody: continue and dry
// run let an unreadable body through, counted as a parse error.
func TestUnreadableBodiesPassWhereThePolicySays(t *testing.T) {
	for name, mod := range map[string]func(*config.Server){
		"unreadableBody continue": func(s *config.Server) { s.UnreadableBody = config.UnreadableContinue },
		"dry run":                 func(s *config.Server) { s.DryRun = true },
	} {
		t.Run(name, func(t *testing.T) {
			l := New(server(func(s *config.Server) { s.Shared = perMinute(1); mod(s) }), Options{})
			for _, r := range []Request{post([]byte("x")), post(call("1", "search"), "content-encoding", "br")} {
				if d := l.Decide(context.Background(), r); !d.Allow || !d.ParseError || d.Outcome != OutcomeUnlimited {
					t.Errorf("got allow %v parseError %v outcome %q, want a counted pass", d.Allow, d.ParseError, d.Outcome)
				}
			}
		})
	}
}

// TestRoutingHeadersMustAgreeWithTheBody: Mcp-Method and Mcp-Name that
// disagree with the body are refused with -32020, the body's id echoed;
// headers that agree change nothing, and nothing is charged on them.
func TestRoutingHeadersMustAgreeWithTheBody(t *testing.T) {
	b64 := func(s string) string { return "=?base64?" + base64.StdEncoding.EncodeToString([]byte(s)) + "?=" }
	tests := []struct {
		name     string
		body     []byte
		headers  []string
		mismatch bool
	}{
		{"both agree", call("7", "search"), []string{"mcp-method", "tools/call", "mcp-name", "search"}, false},
		{"base64 name agrees", call("7", "search"), []string{"mcp-method", "tools/call", "mcp-name", b64("search")}, false},
		{"no headers", call("7", "search"), nil, false},
		{"method disagrees", call("7", "search"), []string{"mcp-method", "tools/list"}, true},
		{"name disagrees", call("7", "search"), []string{"mcp-method", "tools/call", "mcp-name", "echo"}, true},
		{"base64 name disagrees", call("7", "search"), []string{"mcp-name", b64("echo")}, true},
		{"name in another case", call("7", "search"), []string{"mcp-name", "Search"}, true},
		{"malformed base64", call("7", "search"), []string{"mcp-name", "=?base64?c2VhcmNo?="[:15] + "!?="}, true},
		{"repeated method header", call("7", "search"), []string{"mcp-method", "tools/call\ntools/list"}, true},
		{"the case-folded reading runs another call", []byte(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"search","NAME":"echo"}}`),
			[]string{"mcp-method", "tools/call", "mcp-name", "search"}, true},
		{"a response with a method header", []byte(`{"jsonrpc":"2.0","id":3,"result":{}}`), []string{"mcp-method", "tools/call"}, false},
		{"name of a method that has none in Mcp-Name", []byte(`{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{"name":"x"}}`),
			[]string{"mcp-method", "tools/list", "mcp-name", "y"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := New(server(func(s *config.Server) { s.Shared = perMinute(5) }), Options{})
			d := l.Decide(context.Background(), post(tt.body, tt.headers...))
			if !tt.mismatch {
				if d.Outcome == OutcomeHeaderMismatch || !d.Allow {
					t.Fatalf("got allow %v outcome %q, want the request decided as usual", d.Allow, d.Outcome)
				}
				return
			}
			if d.Allow || d.Outcome != OutcomeHeaderMismatch || d.Status != 400 {
				t.Fatalf("got allow %v outcome %q status %d, want 400 %q", d.Allow, d.Outcome, d.Status, OutcomeHeaderMismatch)
			}
			if !strings.Contains(string(d.Body), `"id":7,"error":{"code":-32020,`) {
				t.Errorf("body %s, want the id echoed with code -32020", d.Body)
			}
		})
	}
}
