package mcp

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// RejectionBody renders the one-line JSON body answering b.
//
// A single message gets a single object; a batch gets an array with one element
// per message whose Kind is KindRequest, in order, and `[]` when it has none
// (responses and invalid elements are never answered by a server either, and a
// notification has no id to answer to). The id is echoed byte for byte (null
// when it holds NaN or Infinity, which are not JSON) and is omitted for a
// single notification.
//
// With FormatToolResult, a tools/call element is answered with an isError tool
// result carrying the retry hint in _meta; every other element keeps the error
// shape. A zero Code means DefaultCode, an empty Message DefaultMessage, and a
// RetryAfterSeconds or RetryAfterMs below 1 is sent as 1. With CodeRateLimited,
// error data takes the draft SEP-3304 shape (see CodeRateLimited); a tool
// result's _meta keeps the usual one.
func RejectionBody(b Body, r Rejection) []byte {
	if r.Code == 0 {
		r.Code = DefaultCode
	}
	if r.Message == "" {
		r.Message = DefaultMessage
	}
	r.RetryAfterSeconds = max(r.RetryAfterSeconds, 1)
	r.RetryAfterMs = max(r.RetryAfterMs, 1)
	return render(b, func(dst []byte, m Message) []byte {
		if r.Format == FormatToolResult && m.Method == "tools/call" {
			return appendToolResult(dst, m, r)
		}
		dst = appendErrorHead(dst, m, r.Code, r.Message)
		dst = append(dst, `,"data":`...)
		if r.Code == CodeRateLimited {
			dst = appendRateLimitedData(dst, r)
		} else {
			dst = appendRetryHint(dst, r)
		}
		return append(dst, "}}"...)
	})
}

// ErrorBody renders a JSON-RPC error without data answering b, with the id rules
// of RejectionBody: for example the 503 (-32603) a closed failure mode answers.
func ErrorBody(b Body, code int, message string) []byte {
	return render(b, func(dst []byte, m Message) []byte {
		dst = appendErrorHead(dst, m, code, message)
		return append(dst, "}}"...)
	})
}

// render writes one element for a single message, or the array of a batch.
func render(b Body, element func([]byte, Message) []byte) []byte {
	dst := make([]byte, 0, 256)
	if !b.Batch {
		var m Message
		if len(b.Messages) > 0 {
			m = b.Messages[0]
		}
		return element(dst, m)
	}
	dst = append(dst, '[')
	first := true
	for _, m := range b.Messages {
		if m.Kind != KindRequest {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = element(dst, m)
	}
	return append(dst, ']')
}

// appendHead writes `{"jsonrpc":"2.0"` and the id when the message is a request.
func appendHead(dst []byte, m Message) []byte {
	dst = append(dst, `{"jsonrpc":"2.0"`...)
	if m.Kind == KindRequest && m.HasID() {
		dst = append(dst, `,"id":`...)
		if json.Valid(m.ID) {
			dst = append(dst, m.ID...)
		} else {
			// NaN or Infinity in the id (Parse reads them as the Python SDK
			// does): not JSON, so not something to echo.
			dst = append(dst, "null"...)
		}
	}
	return dst
}

// appendErrorHead writes everything of an error response up to the end of
// "message", leaving the error object open.
func appendErrorHead(dst []byte, m Message, code int, message string) []byte {
	dst = appendHead(dst, m)
	dst = append(dst, `,"error":{"code":`...)
	dst = strconv.AppendInt(dst, int64(code), 10)
	dst = append(dst, `,"message":`...)
	return appendString(dst, message)
}

func appendToolResult(dst []byte, m Message, r Rejection) []byte {
	dst = appendHead(dst, m)
	dst = append(dst, `,"result":{"content":[{"type":"text","text":`...)
	text := make([]byte, 0, len(r.Message)+32)
	text = append(text, r.Message...)
	text = append(text, "; retry after "...)
	text = strconv.AppendInt(text, r.RetryAfterSeconds, 10)
	if r.RetryAfterSeconds == 1 {
		text = append(text, " second"...)
	} else {
		text = append(text, " seconds"...)
	}
	dst = appendString(dst, string(text))
	dst = append(dst, `}],"isError":true,"resultType":"complete","_meta":`...)
	dst = appendRetryHint(dst, r)
	return append(dst, "}}"...)
}

// appendRetryHint writes
// {"retryAfterSeconds":N,"retryAfterMs":M,"limit":"...","scope":"..."}.
func appendRetryHint(dst []byte, r Rejection) []byte {
	dst = append(dst, `{"retryAfterSeconds":`...)
	dst = strconv.AppendInt(dst, r.RetryAfterSeconds, 10)
	dst = append(dst, `,"retryAfterMs":`...)
	dst = strconv.AppendInt(dst, r.RetryAfterMs, 10)
	dst = append(dst, `,"limit":`...)
	dst = appendString(dst, r.Limit)
	dst = append(dst, `,"scope":`...)
	dst = appendString(dst, r.Scope)
	return append(dst, '}')
}

// appendRateLimitedData writes the data of a CodeRateLimited error:
// {"retryAfterMs":M,"limit":Q,"remaining":R,"retryAfterSeconds":N,"bucket":"...","scope":"..."}.
func appendRateLimitedData(dst []byte, r Rejection) []byte {
	dst = append(dst, `{"retryAfterMs":`...)
	dst = strconv.AppendInt(dst, r.RetryAfterMs, 10)
	dst = append(dst, `,"limit":`...)
	dst = strconv.AppendInt(dst, max(r.MaxTokens, 0), 10)
	dst = append(dst, `,"remaining":`...)
	dst = strconv.AppendInt(dst, max(r.Remaining, 0), 10)
	dst = append(dst, `,"retryAfterSeconds":`...)
	dst = strconv.AppendInt(dst, r.RetryAfterSeconds, 10)
	dst = append(dst, `,"bucket":`...)
	dst = appendString(dst, r.Limit)
	dst = append(dst, `,"scope":`...)
	dst = appendString(dst, r.Scope)
	return append(dst, '}')
}

// appendString writes s as a JSON string: quotes, backslashes and control
// characters escaped, U+2028 and U+2029 escaped (JavaScript clients that eval
// JSONP-style), invalid UTF-8 replaced by U+FFFD; everything else, including
// <, > and &, literally (the body is application/json, never HTML).
func appendString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}
