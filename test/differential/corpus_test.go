package differential

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"unicode/utf16"
)

// entry is one body and where it came from, for the failure message.
type entry struct {
	label string
	body  []byte
}

// searchCall is the plain call every trick in the corpus dresses up.
const searchCall = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}`

// loadCorpus reads testdata/corpus.txt (its format is in its header).
func loadCorpus(tb testing.TB) []entry {
	tb.Helper()
	f, err := os.Open("testdata/corpus.txt")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var out []entry
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		body := []byte(line)
		if q, ok := strings.CutPrefix(line, "q:"); ok {
			s, err := strconv.Unquote(q)
			if err != nil {
				tb.Fatalf("testdata/corpus.txt:%d: %v", n, err)
			}
			body = []byte(s)
		}
		out = append(out, entry{fmt.Sprintf("corpus.txt:%d", n), body})
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	return out
}

// builtEntries are the bodies too large or too binary for corpus.txt.
func builtEntries() []entry {
	call := func(args string) []byte {
		return []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":` + args + `}}`)
	}
	nest := func(open, end string, n int) string {
		return strings.Repeat(open, n) + "1" + strings.Repeat(end, n)
	}
	out := []entry{
		// Deep nesting: JSON.parse has no depth limit; Python and the Go
		// decoders stop at 1,000 to 10,000 levels.
		{"arguments nested 10,001 arrays", call(nest("[", "]", 10_001))},
		{"arguments nested 10,001 objects", call(nest(`{"a":`, "}", 10_001))},
		{"arguments nested 100,000 arrays", call(nest("[", "]", 100_000))},
		{"id nested 100,000 arrays", []byte(`{"jsonrpc":"2.0","id":` + nest("[", "]", 100_000) + `,"method":"tools/call","params":{"name":"search"}}`)},
		{"a batch behind 100,000 arrays", []byte(nest("[", "]", 100_000)[:100_000] + searchCall + strings.Repeat("]", 100_000))},
		{"a call after a deep batch element", []byte(`[` + nest("[", "]", 100_000) + `,` + searchCall + `]`)},
		// Python refuses an integer of more than 4,300 digits.
		{"an id of 5,000 digits", []byte(`{"jsonrpc":"2.0","id":` + strings.Repeat("9", 5000) + `,"method":"tools/call","params":{"name":"search"}}`)},
		{"arguments holding 5,000 digits", call(strings.Repeat("7", 5000))},
		// UTF-32 code points that are surrogates: Go reads each as U+FFFD,
		// iconv-lite may join a pair into one character.
		{"UTF-32LE name of a surrogate pair", utf32Units(binary.LittleEndian, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"`, 0xD83D, 0xDE00, `"}}`)},
		{"UTF-32BE name of a surrogate pair", utf32Units(binary.BigEndian, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"`, 0xD83D, 0xDE00, `"}}`)},
		{"UTF-32LE name of a lone surrogate", utf32Units(binary.LittleEndian, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"`, 0xD83D, `"}}`)},
		{"UTF-32LE name beyond U+10FFFF", utf32Units(binary.LittleEndian, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"`, 0x110000, `"}}`)},
		{"UTF-16LE name of a lone surrogate", utf16Units(binary.LittleEndian, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"`, 0xD83D, `"}}`)},
		{"UTF-16BE name of a reversed pair", utf16Units(binary.BigEndian, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"`, 0xDE00, 0xD83D, `"}}`)},
		// A byte order mark that names the other byte order.
		{"UTF-16BE BOM, UTF-16LE text", append([]byte{0xfe, 0xff}, utf16Of(searchCall, binary.LittleEndian)...)},
		{"UTF-16LE BOM, UTF-16BE text", append([]byte{0xff, 0xfe}, utf16Of(searchCall, binary.BigEndian)...)},
		{"UTF-32LE BOM, UTF-16LE text", append([]byte{0xff, 0xfe, 0, 0}, utf16Of(searchCall, binary.LittleEndian)...)},
		{"UTF-16LE, odd length", append(utf16Of(searchCall, binary.LittleEndian), ' ')},
		{"UTF-16LE BOM twice", append(utf16Of("\ufeff\ufeff", binary.LittleEndian), utf16Of(searchCall, binary.LittleEndian)...)},
		{"UTF-8 BOM then UTF-16LE", append([]byte("\xef\xbb\xbf"), utf16Of(searchCall, binary.LittleEndian)...)},
	}
	return out
}

// corpus returns every entry of corpus.txt, each also transcoded to UTF-16
// and UTF-32 in both byte orders with and without a byte order mark, then the
// built entries.
func corpus(tb testing.TB) []entry {
	var out []entry
	for _, e := range loadCorpus(tb) {
		out = append(out, e)
		for _, t := range transcodings {
			out = append(out, entry{e.label + " in " + t.name, t.encode(e.body)})
		}
	}
	return append(out, builtEntries()...)
}

// transcodings re-encode a UTF-8 body (invalid bytes become U+FFFD).
var transcodings = []struct {
	name   string
	encode func([]byte) []byte
}{
	{"UTF-16LE", func(b []byte) []byte { return utf16Of(string(b), binary.LittleEndian) }},
	{"UTF-16BE", func(b []byte) []byte { return utf16Of(string(b), binary.BigEndian) }},
	{"UTF-16LE with BOM", func(b []byte) []byte { return utf16Of("\ufeff"+string(b), binary.LittleEndian) }},
	{"UTF-16BE with BOM", func(b []byte) []byte { return utf16Of("\ufeff"+string(b), binary.BigEndian) }},
	{"UTF-32LE", func(b []byte) []byte { return utf32Of(string(b), binary.LittleEndian) }},
	{"UTF-32BE", func(b []byte) []byte { return utf32Of(string(b), binary.BigEndian) }},
	{"UTF-32LE with BOM", func(b []byte) []byte { return utf32Of("\ufeff"+string(b), binary.LittleEndian) }},
	{"UTF-32BE with BOM", func(b []byte) []byte { return utf32Of("\ufeff"+string(b), binary.BigEndian) }},
}

func utf16Of(s string, order binary.AppendByteOrder) []byte {
	var out []byte
	for _, u := range utf16.Encode([]rune(s)) {
		out = order.AppendUint16(out, u)
	}
	return out
}

func utf32Of(s string, order binary.AppendByteOrder) []byte {
	var out []byte
	for _, r := range s {
		out = order.AppendUint32(out, uint32(r))
	}
	return out
}

// utf16Units encodes its parts in order: strings as UTF-16, ints as one code
// unit each, so that a body can hold units no Go string encodes.
func utf16Units(order binary.AppendByteOrder, parts ...any) []byte {
	var out bytes.Buffer
	for _, p := range parts {
		switch p := p.(type) {
		case string:
			out.Write(utf16Of(p, order))
		case int:
			out.Write(order.AppendUint16(nil, uint16(p)))
		}
	}
	return out.Bytes()
}

// utf32Units is utf16Units for UTF-32.
func utf32Units(order binary.AppendByteOrder, parts ...any) []byte {
	var out bytes.Buffer
	for _, p := range parts {
		switch p := p.(type) {
		case string:
			out.Write(utf32Of(p, order))
		case int:
			out.Write(order.AppendUint32(nil, uint32(p)))
		}
	}
	return out.Bytes()
}
