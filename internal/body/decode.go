package body

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"unicode/utf16"
	"unicode/utf8"
)

// readableCharsets are the charsets, normalized as iconv-lite normalizes them
// for Express (lower case, letters and digits only), whose every reading Read
// tries: the UTFs, and ASCII, which is UTF-8's subset. Any other charset is
// refused: Express and the TypeScript SDK's older transport decode any charset
// iconv-lite knows, and one of those (utf-7, whose "+AG0-" is "m") reads
// member names that the UTF-8 reading of the same bytes does not see.
var readableCharsets = []string{
	"utf8", "utf16", "utf16le", "utf16be", "ucs2", "utf32", "utf32le", "utf32be",
	"ascii", "usascii",
}

// charsetReadable reports whether every charset parameter in a Content-Type
// (or in several, joined with commas) is one the limiter reads. It looks for
// "charset" anywhere, case-insensitively, and wants "= value" after each: a
// header that media-type parsers could read differently (quoting, RFC 2231
// "charset*=", a second parameter) is refused rather than guessed at.
func charsetReadable(contentType string) bool {
	if contentType == "application/json" {
		return true // what nearly every client sends
	}
	rest := contentType
	for {
		i := indexFold(rest, "charset")
		if i < 0 {
			return true
		}
		rest = strings.TrimLeft(rest[i+len("charset"):], " \t")
		if !strings.HasPrefix(rest, "=") {
			return false
		}
		rest = strings.TrimLeft(rest[1:], " \t")
		quoted := strings.HasPrefix(rest, `"`)
		if quoted {
			rest = rest[1:]
		}
		end := strings.IndexAny(rest, "\"; \t,")
		if end < 0 {
			end = len(rest)
		}
		if quoted && (end == len(rest) || rest[end] != '"') {
			return false
		}
		var buf [16]byte
		if !slices.Contains(readableCharsets, string(normalizeCharset(buf[:0], rest[:end]))) {
			return false
		}
		rest = rest[end:]
	}
}

// indexFold is strings.Index for an ASCII lower-case needle, ignoring ASCII
// case in s, without allocating.
func indexFold(s, needle string) int {
	for i := 0; i+len(needle) <= len(s); i++ {
		j := 0
		for ; j < len(needle); j++ {
			c := s[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != needle[j] {
				break
			}
		}
		if j == len(needle) {
			return i
		}
	}
	return -1
}

// normalizeCharset appends cs to dst lower-cased, keeping its letters and
// digits. A dst with room for the longest readable name keeps it off the heap;
// a longer name grows it, and then matches none.
func normalizeCharset(dst []byte, cs string) []byte {
	for i := 0; i < len(cs); i++ {
		c := cs[i]
		switch {
		case 'A' <= c && c <= 'Z':
			dst = append(dst, c+'a'-'A')
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
			dst = append(dst, c)
		}
	}
	return dst
}

// inflate undoes a Content-Encoding the options accept. A body is inflated at
// most once (a second coding is refused: "gzip, gzip" multiplies the work for
// nothing a client needs), to at most MaxInflated bytes and MaxRatio times its
// compressed size, stopping as soon as either is passed.
func inflate(body []byte, contentEncoding string, o Options) ([]byte, error) {
	if contentEncoding == "" {
		return body, nil
	}
	coding := ""
	for c := range strings.SplitSeq(contentEncoding, ",") {
		c = strings.ToLower(strings.TrimSpace(c))
		if c == "" || c == "identity" {
			continue
		}
		if coding != "" {
			return nil, fmt.Errorf("%w: more than one content-coding", ErrEncoding)
		}
		coding = c
	}
	if coding == "" {
		return body, nil
	}
	if coding == "x-gzip" {
		coding = "gzip"
	}
	if !slices.Contains(o.Codings, coding) {
		return nil, fmt.Errorf("%w: content-coding %q is not accepted by the policy", ErrEncoding, coding)
	}
	limit := inflateLimit(len(body), o)
	r, done, err := decompressor(coding, body)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrEncoding, coding, err)
	}
	defer done()
	out, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrEncoding, coding, err)
	}
	if len(out) > limit {
		return nil, ErrTooLarge
	}
	return out, nil
}

// inflateLimit is the most a body of n compressed bytes may inflate to.
func inflateLimit(n int, o Options) int {
	limit := o.MaxInflated
	if limit <= 0 {
		limit = DefaultMaxInflated
	}
	ratio := o.MaxRatio
	if ratio <= 0 {
		ratio = DefaultMaxRatio
	}
	return min(limit, max(ratio*n, minInflateAllowance))
}

// Size is the most bytes Read may parse for a body of n bytes with this
// Content-Encoding: n itself, or what it may inflate to where the options
// let it be inflated. It is the cost to budget for before reading.
func Size(n int, contentEncoding string, o Options) int {
	if len(o.Codings) == 0 || strings.TrimSpace(contentEncoding) == "" {
		return n
	}
	return max(n, inflateLimit(n, o))
}

// gzipReaders reuses gzip readers: each holds a 32 KiB window that a flood of
// compressed bodies would otherwise allocate per request.
var gzipReaders sync.Pool

// decompressor returns a reader of body inflated per coding and a function
// that releases it.
func decompressor(coding string, body []byte) (io.Reader, func(), error) {
	src := bytes.NewReader(body)
	switch coding {
	case "gzip":
		zr, _ := gzipReaders.Get().(*gzip.Reader)
		var err error
		if zr == nil {
			zr, err = gzip.NewReader(src)
		} else {
			err = zr.Reset(src)
		}
		if err != nil {
			return nil, nil, err
		}
		// One gzip member only: a server's gunzip reads the first member, so
		// the rest would be bytes no server reads and the limiter could not
		// tell what to charge for.
		zr.Multistream(false)
		return zr, func() { gzipReaders.Put(zr) }, nil
	default: // "deflate"
		// HTTP's deflate is zlib-wrapped; some clients send raw deflate.
		if zr, err := zlib.NewReader(src); err == nil {
			return zr, func() { zr.Close() }, nil
		}
		fr := flate.NewReader(bytes.NewReader(body))
		return fr, func() { fr.Close() }, nil
	}
}

// wideDecoders returns the UTF-16 and UTF-32 decodings under which b could be
// a JSON-RPC text: one that starts with white space, '{' or '[', all ASCII,
// perhaps after a byte order mark. The first code unit then says the byte
// order and width (Python's json.detect_encoding reads the same bytes), so
// at most two decodings are plausible, and for a body without a zero byte in
// its first four, the UTF-8 one, none.
func wideDecoders(b []byte) []func([]byte) []byte {
	if len(b) < 4 {
		return nil
	}
	var out []func([]byte) []byte
	asciiLE16 := b[0] != 0 && b[0] < 0x80 && b[1] == 0
	switch {
	case b[0] == 0 && b[1] == 0 && ((b[2] == 0xfe && b[3] == 0xff) || (b[2] == 0 && b[3] != 0 && b[3] < 0x80)):
		out = append(out, utf32BE)
	case b[0] == 0 && (b[1] != 0 && b[1] < 0x80):
		out = append(out, utf16BE)
	case b[0] == 0xfe && b[1] == 0xff:
		out = append(out, utf16BE)
	}
	if (b[0] == 0xff && b[1] == 0xfe && b[2] == 0 && b[3] == 0) || (asciiLE16 && b[2] == 0 && b[3] == 0) {
		out = append(out, utf32LE)
	}
	if (b[0] == 0xff && b[1] == 0xfe) || asciiLE16 {
		out = append(out, utf16LE)
	}
	return out
}

func utf16LE(b []byte) []byte { return utf16To8(b, binary.LittleEndian) }
func utf16BE(b []byte) []byte { return utf16To8(b, binary.BigEndian) }
func utf32LE(b []byte) []byte { return utf32To8(b, binary.LittleEndian) }
func utf32BE(b []byte) []byte { return utf32To8(b, binary.BigEndian) }

// utf16To8 decodes UTF-16 into UTF-8 in one pass: unpaired surrogates become
// U+FFFD, a trailing odd byte is dropped.
func utf16To8(b []byte, order binary.ByteOrder) []byte {
	out := make([]byte, 0, len(b)/2+16)
	for i := 0; i+1 < len(b); i += 2 {
		r := rune(order.Uint16(b[i:]))
		switch {
		case r < utf8.RuneSelf:
			out = append(out, byte(r))
			continue
		case utf16.IsSurrogate(r):
			if i+3 < len(b) {
				if d := utf16.DecodeRune(r, rune(order.Uint16(b[i+2:]))); d != utf8.RuneError {
					r = d
					i += 2
					break
				}
			}
			r = utf8.RuneError
		}
		out = utf8.AppendRune(out, r)
	}
	return out
}

// utf32To8 decodes UTF-32 into UTF-8: invalid code points become U+FFFD,
// except that a high surrogate followed by a low one is the character they
// pair to, as iconv-lite (Express, the TypeScript SDK's older transport)
// decodes them.
func utf32To8(b []byte, order binary.ByteOrder) []byte {
	out := make([]byte, 0, len(b)/4+16)
	for i := 0; i+4 <= len(b); i += 4 {
		r := rune(order.Uint32(b[i:]))
		if utf16.IsSurrogate(r) && i+8 <= len(b) {
			if d := utf16.DecodeRune(r, rune(order.Uint32(b[i+4:]))); d != utf8.RuneError {
				r = d
				i += 4
			}
		}
		out = utf8.AppendRune(out, r)
	}
	return out
}
