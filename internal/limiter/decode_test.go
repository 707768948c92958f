package limiter

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"context"
	"encoding/binary"
	"io"
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

// TestEncodedBodiesAreChargedLikePlainOnes: a body the MCP server decodes
// (compressed, or in another UTF) must be charged, or compressing a tools/call
// would get it past every limit.
func TestEncodedBodiesAreChargedLikePlainOnes(t *testing.T) {
	plain := call("7", "search")
	tests := []struct {
		name                string
		body                []byte
		encoding, ctype     string
		wantOutcome         Outcome
		wantStatus          int
		wantSecondIsLimited bool
	}{
		{"gzip", compress(t, "gzip", plain), "gzip", "application/json", OutcomeAllowed, 0, true},
		{"x-gzip", compress(t, "gzip", plain), "x-gzip", "application/json", OutcomeAllowed, 0, true},
		{"deflate (zlib)", compress(t, "zlib", plain), "deflate", "application/json", OutcomeAllowed, 0, true},
		{"deflate (raw)", compress(t, "flate", plain), "Deflate", "application/json", OutcomeAllowed, 0, true},
		{"gzip twice", compress(t, "gzip", compress(t, "gzip", plain)), "gzip, gzip", "application/json", OutcomeAllowed, 0, true},
		{"identity", plain, "identity", "application/json", OutcomeAllowed, 0, true},
		{"utf-16le", utf16Bytes(string(plain), binary.LittleEndian, false), "", "application/json; charset=utf-16le", OutcomeAllowed, 0, true},
		{"utf-16be", utf16Bytes(string(plain), binary.BigEndian, false), "", "application/json; charset=UTF-16BE", OutcomeAllowed, 0, true},
		{"utf-16 with a little-endian BOM", utf16Bytes(string(plain), binary.LittleEndian, true), "", "application/json; charset=utf-16", OutcomeAllowed, 0, true},
		{"utf-32le", utf32Bytes(string(plain), binary.LittleEndian), "", "application/json; charset=utf-32le", OutcomeAllowed, 0, true},
		// "utf-16" and "utf-32" without a BOM: Express's parser (iconv-lite) guesses
		// the order from where the zero bytes are, little-endian by default.
		{"utf-16, little-endian without a BOM", utf16Bytes(string(plain), binary.LittleEndian, false), "", "application/json; charset=utf-16", OutcomeAllowed, 0, true},
		{"utf-16, big-endian without a BOM", utf16Bytes(string(plain), binary.BigEndian, false), "", "application/json; charset=utf-16", OutcomeAllowed, 0, true},
		{"utf-16 with a big-endian BOM", utf16Bytes(string(plain), binary.BigEndian, true), "", "application/json; charset=utf-16", OutcomeAllowed, 0, true},
		{"utf-32, little-endian without a BOM", utf32Bytes(string(plain), binary.LittleEndian), "", "application/json; charset=utf-32", OutcomeAllowed, 0, true},
		{"utf-32, big-endian without a BOM", utf32Bytes(string(plain), binary.BigEndian), "", "application/json; charset=utf-32", OutcomeAllowed, 0, true},
		{"utf-32 with a little-endian BOM", append([]byte{0xff, 0xfe, 0, 0}, utf32Bytes(string(plain), binary.LittleEndian)...), "", "application/json; charset=utf-32", OutcomeAllowed, 0, true},
		{"utf-8 charset", plain, "", "application/json; charset=utf-8", OutcomeAllowed, 0, true},
		// The TypeScript SDK (raw-body with iconv-lite) and Python's json.loads drop a
		// leading byte order mark and run the call.
		{"utf-8 BOM", append([]byte("\xef\xbb\xbf"), plain...), "", "application/json", OutcomeAllowed, 0, true},
		{"utf-8 BOM, gzipped", compress(t, "gzip", append([]byte("\xef\xbb\xbf"), plain...)), "gzip", "application/json", OutcomeAllowed, 0, true},
		{"utf-16le with a BOM", utf16Bytes(string(plain), binary.LittleEndian, true), "", "application/json; charset=utf-16le", OutcomeAllowed, 0, true},
		{"brotli cannot be read: 415", []byte("\x1b\x00"), "br", "application/json", OutcomeUnreadable, 415, false},
		{"broken gzip: 415", []byte("not gzip"), "gzip", "application/json", OutcomeUnreadable, 415, false},
		{"utf-7: 415", plain, "", "application/json; charset=utf-7", OutcomeUnreadable, 415, false},
		{"gzip bomb: 413", compress(t, "gzip", make([]byte, 2*DefaultMaxDecodedBytes)), "gzip", "application/json", OutcomeUnreadable, 413, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := New(server(func(s *config.Server) { s.Shared = perMinute(1) }), Options{})
			r := post(tt.body, "content-encoding", tt.encoding, "content-type", tt.ctype)
			d := l.Decide(context.Background(), r)
			if d.Outcome != tt.wantOutcome || (tt.wantStatus != 0 && d.Status != tt.wantStatus) {
				t.Fatalf("got outcome %q status %d, want %q %d", d.Outcome, d.Status, tt.wantOutcome, tt.wantStatus)
			}
			if tt.wantSecondIsLimited {
				if d := l.Decide(context.Background(), r); d.Outcome != OutcomeLimited {
					t.Errorf("second call: got %q, want limited", d.Outcome)
				}
			}
			if tt.wantOutcome == OutcomeUnreadable && string(d.Body) == "" {
				t.Error("got no body, want a JSON-RPC error")
			}
		})
	}
}

func TestUnreadableBodiesPassInDryRun(t *testing.T) {
	l := New(server(func(s *config.Server) { s.Shared = perMinute(1); s.DryRun = true }), Options{})
	d := l.Decide(context.Background(), post([]byte("x"), "content-encoding", "br"))
	if !d.Allow || !d.ParseError {
		t.Errorf("got allow %v parseError %v, want a counted pass", d.Allow, d.ParseError)
	}
}
