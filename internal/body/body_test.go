package body

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"slices"
	"testing"
	"unicode/utf16"

	"github.com/mcp-ratelimit/extproc/internal/mcp"
)

func toolsCall(name string) string {
	return `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + name + `"}}`
}

func encodeUTF16LE(s string) []byte {
	var out []byte
	for _, u := range utf16.Encode([]rune(s)) {
		out = binary.LittleEndian.AppendUint16(out, u)
	}
	return out
}

func encodeUTF32BE(s string) []byte {
	var out []byte
	for _, r := range s {
		out = binary.BigEndian.AppendUint32(out, uint32(r))
	}
	return out
}

// names lists "method name" for each call, in order.
func names(calls []mcp.Message) []string {
	var out []string
	for _, c := range calls {
		out = append(out, c.Method+" "+c.Name)
	}
	return out
}

func TestReadChargesEveryCallAnyReadingYields(t *testing.T) {
	tests := []struct {
		name  string
		body  []byte
		ctype string
		want  []string
	}{
		{"plain", []byte(toolsCall("search")), "", []string{"tools/call search"}},
		{"declared utf-16le, sent as UTF-8", []byte(toolsCall("search")), "application/json; charset=utf-16le", []string{"tools/call search"}},
		{"utf-16le, declared utf-8", encodeUTF16LE(toolsCall("search")), "application/json; charset=utf-8", []string{"tools/call search"}},
		{"utf-16le with its BOM", encodeUTF16LE("\ufeff" + toolsCall("search")), "", []string{"tools/call search"}},
		{"utf-32be", encodeUTF32BE(toolsCall("search")), "", []string{"tools/call search"}},
		{"utf-8 BOM", []byte("\ufeff" + toolsCall("search")), "", []string{"tools/call search"}},
		{"two BOMs: no server reads it", []byte("\ufeff\ufeff" + toolsCall("search")), "", nil},
		{"case-folded name is a second call", []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","NAME":"echo"}}`), "",
			[]string{"tools/call search", "tools/call echo"}},
		{"a batch repeats a call", []byte("[" + toolsCall("search") + "," + toolsCall("search") + "]"), "", []string{"tools/call search", "tools/call search"}},
		{"answers and notifications are no calls to charge... but notifications are calls", []byte(`[{"jsonrpc":"2.0","id":1,"result":{}},{"jsonrpc":"2.0","method":"notifications/initialized"}]`), "",
			[]string{"notifications/initialized "}},
		{"data after the value: the first value is run", []byte(toolsCall("search") + toolsCall("echo")), "", []string{"tools/call search"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rd, err := Read(tt.body, "", tt.ctype, Options{})
			if tt.want == nil {
				if err == nil {
					t.Fatalf("got calls %q, want the body refused", names(rd.Calls))
				}
				return
			}
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if got := names(rd.Calls); !slices.Equal(got, tt.want) {
				t.Errorf("got calls %q, want %q", got, tt.want)
			}
		})
	}
}

// TestCallsOfSeveralReadingsAreMerged: a call that two readings both yield is
// charged once; one that a reading yields more often is charged that often.
func TestCallsOfSeveralReadingsAreMerged(t *testing.T) {
	first := mcp.Body{Messages: []mcp.Message{
		{Kind: mcp.KindRequest, Method: "tools/call", Name: "search"},
	}}
	second := mcp.Body{Batch: true, Messages: []mcp.Message{
		{Kind: mcp.KindRequest, Method: "tools/call", Name: "search"},
		{Kind: mcp.KindRequest, Method: "tools/call", Name: "search"},
		{Kind: mcp.KindRequest, Method: "tools/call", Name: "echo"},
		{Kind: mcp.KindResponse},
	}}
	got := names(calls(second, calls(first, nil)))
	want := []string{"tools/call search", "tools/call search", "tools/call echo"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestReadRefusesWhatItCannotRead(t *testing.T) {
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write([]byte(toolsCall("search")))
	w.Close()
	tests := []struct {
		name          string
		body          string
		coding, ctype string
		opts          Options
		want          error
	}{
		{"not JSON", `{"jsonrpc"`, "", "", Options{}, mcp.ErrNotJSON},
		{"JSON in no reading a message", `{"x":1}`, "", "", Options{}, mcp.ErrNotJSONRPC},
		{"a batch with a number in it", "[" + toolsCall("search") + ",1]", "", "", Options{}, mcp.ErrNotJSONRPC},
		{"gzip the policy does not accept", gz.String(), "gzip", "", Options{}, ErrEncoding},
		{"two codings", gz.String(), "gzip, identity, gzip", "", Options{Codings: []string{"gzip"}}, ErrEncoding},
		{"an unknown coding", gz.String(), "zstd", "", Options{Codings: []string{"gzip"}}, ErrEncoding},
		{"utf-7", toolsCall("search"), "", "application/json;charset=UTF-7", Options{}, ErrEncoding},
		{"charset in a second header", toolsCall("search"), "", "application/json\ntext/plain; charset=shift_jis", Options{}, ErrEncoding},
		{"unterminated quoted charset", toolsCall("search"), "", `application/json; charset="utf-8`, Options{}, ErrEncoding},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rd, err := Read([]byte(tt.body), tt.coding, tt.ctype, tt.opts)
			if !errors.Is(err, tt.want) {
				t.Errorf("got calls %q error %v, want %v", names(rd.Calls), err, tt.want)
			}
		})
	}
}

func TestInflateStopsAtTheBounds(t *testing.T) {
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write([]byte(toolsCall("search")))
	w.Write(bytes.Repeat([]byte(" "), 200<<10))
	w.Close()
	opts := Options{Codings: []string{"gzip"}}
	if _, err := Read(gz.Bytes(), "gzip", "", opts); !errors.Is(err, ErrTooLarge) {
		t.Errorf("inflating %d bytes to 200 KiB: got %v, want ErrTooLarge by the default ratio", gz.Len(), err)
	}
	opts.MaxRatio = 10000
	if _, err := Read(gz.Bytes(), "gzip", "", opts); err != nil {
		t.Errorf("with maxRatio 10000: got %v, want it read", err)
	}
	opts.MaxInflated = 100 << 10
	if _, err := Read(gz.Bytes(), "gzip", "", opts); !errors.Is(err, ErrTooLarge) {
		t.Errorf("with maxInflated 100 KiB: got %v, want ErrTooLarge", err)
	}
}

func TestCharsetsReadAndRefused(t *testing.T) {
	for ct, want := range map[string]bool{
		"":                                               true,
		"application/json":                               true,
		"application/json; charset=utf-8":                true,
		"application/json;charset=UTF8":                  true,
		`application/json; charset="utf-16le"`:           true,
		"application/json; charset = utf-32":             true,
		"application/json; charset=ucs-2":                true,
		"application/json; charset=us-ascii":             true,
		"application/json; CHARSET=utf-7":                false,
		"application/json; charset=utf-7-imap":           false,
		"application/json; charset=iso-8859-1":           false,
		"application/json; charset=":                     false,
		"application/json; charset*=utf-8''":             false,
		"application/json; charset=utf-8; charset=cp037": false,
	} {
		if got := charsetReadable(ct); got != want {
			t.Errorf("charsetReadable(%q) = %v, want %v", ct, got, want)
		}
	}
}

// TestPlainBodyCostsNoAllocationBeyondParsing: the common body is read once,
// in place: reading it costs what mcp.Parse costs and nothing more.
func TestPlainBodyCostsNoAllocationBeyondParsing(t *testing.T) {
	b := []byte(toolsCall("search"))
	parse := testing.AllocsPerRun(100, func() { _, _ = mcp.Parse(b) })
	read := testing.AllocsPerRun(100, func() {
		if _, err := Read(b, "", "application/json; charset=utf-8", Options{}); err != nil {
			t.Fatal(err)
		}
	})
	if read > parse {
		t.Errorf("Read: %v allocations, mcp.Parse: %v; want no more", read, parse)
	}
}

// FuzzRead: any bytes and headers, no panic; and every call that the UTF-8
// reading (the Go SDK's) or any UTF-16 or UTF-32 decoding of the bytes (what
// Python's json.loads or Express may read) parses to is charged, unless the
// body is refused. This also holds wideDecoders to its claim that it skips
// only decodings under which the bytes cannot be JSON.
func FuzzRead(f *testing.F) {
	f.Add([]byte(toolsCall("search")), "", "")
	f.Add(encodeUTF16LE(toolsCall("s")), "", "application/json; charset=utf-16")
	f.Add(encodeUTF32BE("\ufeff"+toolsCall("s")), "", "")
	f.Add([]byte("\ufeff["+toolsCall("a")+"]"), "identity", "text/plain; charset=utf-8")
	f.Fuzz(func(t *testing.T, b []byte, coding, ctype string) {
		rd, err := Read(b, coding, ctype, Options{Codings: []string{"gzip", "deflate"}})
		if err != nil || coding != "" {
			return
		}
		texts := [][]byte{b}
		for _, decode := range []func([]byte) []byte{utf16LE, utf16BE, utf32LE, utf32BE} {
			texts = append(texts, decode(b))
		}
		for _, text := range texts {
			parsed, perr := mcp.Parse(stripBOM(text))
			if perr != nil && !errors.Is(perr, mcp.ErrTrailingData) {
				continue
			}
			for _, m := range parsed.Messages {
				if (m.Kind == mcp.KindRequest || m.Kind == mcp.KindNotification) &&
					!slices.ContainsFunc(rd.Calls, func(c mcp.Message) bool { return c.Method == m.Method && c.Name == m.Name }) {
					t.Fatalf("a reading runs %s %q; Read charged %q", m.Method, m.Name, names(rd.Calls))
				}
			}
		}
	})
}
