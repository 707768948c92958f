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

	"github.com/andybalholm/brotli"
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
	limit := o.MaxInflated
	if limit <= 0 {
		limit = DefaultMaxInflated
	}
	ratio := o.MaxRatio
	if ratio <= 0 {
		ratio = DefaultMaxRatio
	}
	if byRatio := max(ratio*len(body), minInflateAllowance); byRatio < limit {
		limit = byRatio
	}
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
	case "br":
		return brotli.NewReader(src), func() {}, nil
	default: // "deflate"
		// HTTP's deflate is zlib-wrapped; some clients send raw deflate.
		if zr, err := zlib.NewReader(src); err == nil {
			return zr, func() { zr.Close() }, nil
		}
		fr := flate.NewReader(bytes.NewReader(body))
		return fr, func() { fr.Close() }, nil
	}
}

// wide reports whether the bytes could be JSON in UTF-16 or UTF-32: a JSON-RPC
// text starts with white space, '{' or '[', all ASCII, so in those encodings
// a zero byte comes within the first four bytes, unless a UTF-16 or UTF-32
// byte order mark comes first. Python's json.detect_encoding looks at the
// same bytes. Every other body has one reading, the UTF-8 one.
func wide(b []byte) bool {
	if len(b) >= 2 && ((b[0] == 0xff && b[1] == 0xfe) || (b[0] == 0xfe && b[1] == 0xff)) {
		return true
	}
	return bytes.IndexByte(b[:min(len(b), 4)], 0) >= 0
}

// wideDecoders turn UTF-16 and UTF-32, in each byte order, into UTF-8.
var wideDecoders = []func([]byte) []byte{
	func(b []byte) []byte { return utf16To8(b, binary.LittleEndian) },
	func(b []byte) []byte { return utf16To8(b, binary.BigEndian) },
	func(b []byte) []byte { return utf32To8(b, binary.LittleEndian) },
	func(b []byte) []byte { return utf32To8(b, binary.BigEndian) },
}

// utf16To8 decodes UTF-16 (unpaired surrogates become U+FFFD, a trailing odd
// byte is dropped) into UTF-8.
func utf16To8(b []byte, order binary.ByteOrder) []byte {
	units := make([]uint16, len(b)/2)
	for i := range units {
		units[i] = order.Uint16(b[2*i:])
	}
	out := make([]byte, 0, len(units))
	for _, r := range utf16.Decode(units) {
		out = utf8.AppendRune(out, r)
	}
	return out
}

// utf32To8 decodes UTF-32 (invalid code points become U+FFFD) into UTF-8.
func utf32To8(b []byte, order binary.ByteOrder) []byte {
	out := make([]byte, 0, len(b)/4)
	for i := 0; i+4 <= len(b); i += 4 {
		out = utf8.AppendRune(out, rune(order.Uint32(b[i:])))
	}
	return out
}
