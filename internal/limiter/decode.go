package limiter

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// DefaultMaxDecodedBytes bounds a body after decompression.
const DefaultMaxDecodedBytes = 8 << 20

// Errors of decodeBody.
var (
	// errUndecodable: a Content-Encoding or charset the limiter cannot read.
	errUndecodable = errors.New("body encoding the limiter cannot read")
	// errDecodedTooLarge: the body grows past the bound when decompressed.
	errDecodedTooLarge = errors.New("decompressed body too large")
)

// decodeBody returns the JSON text an MCP server reads from body: decompressed
// per Content-Encoding and transcoded to UTF-8 per the Content-Type charset,
// without a leading byte order mark.
// Servers undo both (Express's JSON parser, which the TypeScript SDK's server
// uses, inflates gzip and deflate and decodes utf-16 and utf-32), so a limiter
// reading only the raw bytes could be bypassed by compressing a tools/call. The
// common case, neither header set to anything but identity/UTF-8, returns body
// itself without copying.
func decodeBody(body []byte, contentEncoding, contentType string, max int) ([]byte, error) {
	if enc := strings.TrimSpace(contentEncoding); enc != "" && !strings.EqualFold(enc, "identity") {
		// Codings are listed in the order they were applied: undo the last first.
		codings := strings.Split(enc, ",")
		for i := len(codings) - 1; i >= 0; i-- {
			var err error
			if body, err = decompress(body, strings.ToLower(strings.TrimSpace(codings[i])), max); err != nil {
				return nil, err
			}
		}
	}
	body, err := transcode(body, charset(contentType))
	if err != nil {
		return nil, err
	}
	// One leading byte order mark is dropped, as the TypeScript SDK's server,
	// Express's JSON parser and Python's json.loads drop it before parsing:
	// they run a call that starts with one.
	if len(body) >= len(utf8BOM) && string(body[:len(utf8BOM)]) == utf8BOM {
		body = body[len(utf8BOM):]
	}
	return body, nil
}

// utf8BOM is U+FEFF, the byte order mark, in UTF-8.
const utf8BOM = "\xef\xbb\xbf"

func decompress(body []byte, coding string, max int) ([]byte, error) {
	var r io.Reader
	switch coding {
	case "identity", "":
		return body, nil
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("%w: gzip: %v", errUndecodable, err)
		}
		r = zr
	case "deflate":
		// HTTP's deflate is zlib-wrapped; some clients send raw deflate.
		if zr, err := zlib.NewReader(bytes.NewReader(body)); err == nil {
			r = zr
		} else {
			r = flate.NewReader(bytes.NewReader(body))
		}
	default:
		return nil, fmt.Errorf("%w: content-encoding %q", errUndecodable, coding)
	}
	out, err := io.ReadAll(io.LimitReader(r, int64(max)+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", errUndecodable, coding, err)
	}
	if len(out) > max {
		return nil, errDecodedTooLarge
	}
	return out, nil
}

// charset returns the lower-cased charset parameter of a Content-Type, or "".
func charset(contentType string) string {
	if !strings.Contains(contentType, "charset") {
		return ""
	}
	_, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return ""
	}
	return strings.ToLower(params["charset"])
}

// transcode turns a body in charset cs into UTF-8. Charsets that are not a UTF
// are left alone: servers refuse them (Express answers 415) or read the bytes as
// they are (the Go SDK ignores the charset), and the parser reads bytes as UTF-8
// just like the latter.
func transcode(body []byte, cs string) ([]byte, error) {
	switch cs {
	case "utf-16le":
		return utf16To8(body, binary.LittleEndian), nil
	case "utf-16be":
		return utf16To8(body, binary.BigEndian), nil
	case "utf-16":
		return utf16To8(body, utf16Order(body)), nil
	case "utf-32le":
		return utf32To8(body, binary.LittleEndian), nil
	case "utf-32be":
		return utf32To8(body, binary.BigEndian), nil
	case "utf-32":
		return utf32To8(body, utf32Order(body)), nil
	}
	if strings.HasPrefix(cs, "utf-") && cs != "utf-8" {
		// utf-7 and friends: a server may decode them, the limiter cannot.
		return nil, fmt.Errorf("%w: charset %q", errUndecodable, cs)
	}
	return body, nil
}

// utf16Order picks the byte order of a "utf-16" body as iconv-lite does for
// Express's JSON parser (so as the server will): a byte order mark, else the
// order in which more of the first 100 units are ASCII, else little-endian. A
// mark decodes to U+FEFF, which decodeBody then drops.
func utf16Order(b []byte) binary.ByteOrder {
	if len(b) >= 2 && b[0] == 0xfe && b[1] == 0xff {
		return binary.BigEndian
	}
	if len(b) >= 2 && b[0] == 0xff && b[1] == 0xfe {
		return binary.LittleEndian
	}
	var le, be int
	for i := 0; i+1 < len(b) && i < 200; i += 2 {
		switch {
		case b[i] == 0 && b[i+1] != 0:
			be++
		case b[i] != 0 && b[i+1] == 0:
			le++
		}
	}
	if be > le {
		return binary.BigEndian
	}
	return binary.LittleEndian
}

// utf32Order picks the byte order of a "utf-32" body as iconv-lite does: a
// byte order mark, else the order in which more of the first 100 units are BMP
// characters less those that are no character at all, else little-endian.
func utf32Order(b []byte) binary.ByteOrder {
	if len(b) >= 4 && b[0] == 0 && b[1] == 0 && b[2] == 0xfe && b[3] == 0xff {
		return binary.BigEndian
	}
	if len(b) >= 4 && b[0] == 0xff && b[1] == 0xfe && b[2] == 0 && b[3] == 0 {
		return binary.LittleEndian
	}
	var le, be int
	for i := 0; i+3 < len(b) && i < 400; i += 4 {
		if b[i] != 0 || b[i+1] > 0x10 {
			be--
		}
		if b[i+3] != 0 || b[i+2] > 0x10 {
			le--
		}
		if b[i] == 0 && b[i+1] == 0 && (b[i+2] != 0 || b[i+3] != 0) {
			be++
		}
		if (b[i] != 0 || b[i+1] != 0) && b[i+2] == 0 && b[i+3] == 0 {
			le++
		}
	}
	if be > le {
		return binary.BigEndian
	}
	return binary.LittleEndian
}

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

func utf32To8(b []byte, order binary.ByteOrder) []byte {
	out := make([]byte, 0, len(b)/4)
	for i := 0; i+4 <= len(b); i += 4 {
		out = utf8.AppendRune(out, rune(order.Uint32(b[i:])))
	}
	return out
}
