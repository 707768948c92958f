// Package body reads an MCP request body every way a real MCP server could
// read it: the bytes and two headers in, the JSON-RPC calls out.
//
// The limiter is a security control in front of servers that each read bodies
// their own way, so a body the limiter reads as one call while a server runs
// another is a way around every limit. Read therefore
//   - refuses what it cannot read (an unknown charset, a content-coding the
//     servers are not said to accept, a body that is not JSON-RPC under any
//     reading), instead of guessing;
//   - reads the text every way a server decodes bytes (UTF-8 without a byte
//     order mark; UTF-16 and UTF-32 in both byte orders, which Python's
//     json.loads detects from the first bytes and Express decodes from the
//     declared charset), whatever the declared charset says;
//   - and returns every distinct call any reading yields (mcp.Parse already
//     reads member names both exactly and case-folded), so that the caller
//     charges them all in one atomic step.
package body

import (
	"errors"

	"github.com/mcp-ratelimit/extproc/internal/mcp"
)

// Errors of Read besides mcp's ErrNotJSON, ErrNotJSONRPC and ErrEmptyBatch.
var (
	// ErrEncoding: a charset or content-coding the limiter does not read, more
	// than one coding, or a compressed body that does not inflate.
	ErrEncoding = errors.New("body: charset or content-coding the rate limiter does not read")
	// ErrTooLarge: the body inflates past Options.MaxInflated or MaxRatio.
	ErrTooLarge = errors.New("body: too large once inflated")
)

// Defaults of Options.
const (
	// DefaultMaxInflated is Envoy's shipped buffer limit: an inflated body may be
	// no larger than a plain one could be.
	DefaultMaxInflated = 4 << 20
	// DefaultMaxRatio is far above what JSON compresses to (5 to 20 times),
	// and far below a bomb (1000 times and more).
	DefaultMaxRatio = 100
	// minInflateAllowance lets a small compressed body inflate to this much
	// whatever the ratio, so that tiny bodies are not refused for a ratio
	// that only their gzip header spoils.
	minInflateAllowance = 64 << 10
)

// Options say what the servers behind accept. The zero value accepts no
// content-coding.
type Options struct {
	// Codings lists the content-codings the servers behind inflate: "gzip"
	// (which also admits "x-gzip") and "deflate" (Express's JSON parser, which
	// the TypeScript SDK's createMcpExpressApp installs, inflates both; no SDK
	// transport inflates either on its own). Any other is refused: "br" too,
	// which Express inflates, because a brotli stream declares its decoding
	// tables before any data (2.7 MB for a 15-byte body). Empty: a body with any
	// Content-Encoding but identity is refused with ErrEncoding.
	Codings []string
	// MaxInflated bounds a body once inflated; zero: DefaultMaxInflated.
	MaxInflated int
	// MaxRatio bounds the inflated size as a multiple of the compressed one;
	// zero: DefaultMaxRatio.
	MaxRatio int
}

// Reading is what Read found.
type Reading struct {
	// Body is the first reading that parsed (UTF-8 before the others), to echo
	// its ids in an answer.
	Body mcp.Body
	// Calls lists the requests and notifications to charge: those of Body, each
	// followed by its case-folded reading (mcp.Message.Folded) where it has one,
	// then every call another reading of the bytes yields more often than the
	// ones before it did. Empty when the body holds no call.
	Calls []mcp.Message
}

// Read decodes body per contentEncoding and reads it as JSON-RPC every way a
// server could. An error is ErrEncoding, ErrTooLarge, or (when no reading
// parses) the error of mcp.Parse, matched with errors.Is: mcp.ErrNotJSONRPC
// when some reading is JSON, else mcp.ErrNotJSON. A batch with an element
// that is not a JSON-RPC message is mcp.ErrNotJSONRPC: no server is known to
// run one, and none should be let through on the hope.
//
// The common body (no coding, a UTF-8 charset or none, UTF-8 bytes) is read
// once, without copying.
func Read(body []byte, contentEncoding, contentType string, o Options) (Reading, error) {
	if !charsetReadable(contentType) {
		return Reading{}, ErrEncoding
	}
	text, err := inflate(body, contentEncoding, o)
	if err != nil {
		return Reading{}, err
	}
	var (
		rd       Reading
		parsed   bool
		firstErr error
	)
	readText := func(t []byte) {
		b, err := parse(t)
		if err != nil {
			if firstErr == nil || (errors.Is(firstErr, mcp.ErrNotJSON) && !errors.Is(err, mcp.ErrNotJSON)) {
				firstErr = err
			}
			return
		}
		if !parsed {
			parsed = true
			rd.Body = b
			rd.Calls = calls(b, nil)
			return
		}
		rd.Calls = calls(b, rd.Calls)
	}
	readText(stripBOM(text))
	for _, decode := range wideDecoders(text) {
		readText(stripBOM(decode(text)))
	}
	if !parsed {
		return Reading{}, firstErr
	}
	return rd, nil
}

// parse is mcp.Parse, refusing a batch with an element that is not a JSON-RPC
// message. Data after the first value is no reason to refuse: servers that
// decode with a streaming decoder run the first value, so it is charged.
func parse(text []byte) (mcp.Body, error) {
	b, err := mcp.Parse(text)
	if err != nil && !errors.Is(err, mcp.ErrTrailingData) {
		return mcp.Body{}, err
	}
	for _, m := range b.Messages {
		if m.Kind == mcp.KindInvalid {
			return mcp.Body{}, mcp.ErrNotJSONRPC
		}
	}
	return b, nil
}

// calls appends to have the calls of b that have does not already hold as
// often: with have nil, every call of b, each followed by its Folded reading.
// A batch's repeated call is charged as often as it repeats in the reading
// that repeats it most.
func calls(b mcp.Body, have []mcp.Message) []mcp.Message {
	first := have == nil
	if first && plainCalls(b.Messages) {
		return b.Messages
	}
	var mine []mcp.Message
	for _, m := range b.Messages {
		if m.Kind != mcp.KindRequest && m.Kind != mcp.KindNotification {
			continue
		}
		mine = append(mine, m)
		if m.Folded != nil {
			mine = append(mine, *m.Folded)
		}
	}
	if first {
		return mine
	}
	for i, m := range mine {
		if count(mine[:i+1], m) > count(have, m) {
			have = append(have, m)
		}
	}
	return have
}

// plainCalls reports whether every message is a call with no folded reading,
// so that the messages are the calls as they are (the common body: no copy).
func plainCalls(ms []mcp.Message) bool {
	for _, m := range ms {
		if (m.Kind != mcp.KindRequest && m.Kind != mcp.KindNotification) || m.Folded != nil {
			return false
		}
	}
	return true
}

// count says how many of ms make the same call as m.
func count(ms []mcp.Message, m mcp.Message) int {
	n := 0
	for _, x := range ms {
		if x.Method == m.Method && x.Name == m.Name {
			n++
		}
	}
	return n
}

// utf8BOM is U+FEFF, the byte order mark, in UTF-8.
const utf8BOM = "\xef\xbb\xbf"

// stripBOM drops one leading byte order mark: the TypeScript SDK's reader
// (the Fetch API's UTF-8 decode), Express and Python's json.loads on bytes all
// drop it; Go's decoders refuse the body instead, so they run nothing to charge.
func stripBOM(b []byte) []byte {
	if len(b) >= len(utf8BOM) && string(b[:len(utf8BOM)]) == utf8BOM {
		return b[len(utf8BOM):]
	}
	return b
}
