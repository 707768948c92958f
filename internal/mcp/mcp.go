// Package mcp reads MCP JSON-RPC 2.0 messages from HTTP request bodies and
// builds the rejection bodies the limiter answers with. It is pure: bytes in,
// values out, no I/O and no knowledge of Envoy or of the policy.
package mcp

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Sentinel errors returned by Parse, to be matched with errors.Is.
var (
	// ErrNotJSON: the body is not a single JSON value (empty, malformed, trailing data).
	ErrNotJSON = errors.New("mcp: body is not JSON")
	// ErrNotJSONRPC: the body is JSON, but neither a JSON-RPC object nor an array.
	ErrNotJSONRPC = errors.New("mcp: body is not a JSON-RPC message or batch")
	// ErrEmptyBatch: the body is an empty JSON array.
	ErrEmptyBatch = errors.New("mcp: empty batch")
	// ErrTrailingData: the body starts with a complete JSON value but has more than
	// whitespace after it. It matches ErrNotJSON too. Parse still returns what the
	// first value holds, because a lenient server reads it and ignores the rest (the
	// official Go SDK decodes with a json.Decoder and never looks past the first
	// value), so a caller that lets non-JSON through unlimited would otherwise hand
	// out a bypass: append "x" to any tools/call.
	ErrTrailingData = fmt.Errorf("%w: data after the JSON value", ErrNotJSON)
)

// Kind says what a JSON-RPC element is.
type Kind uint8

const (
	// KindInvalid: an element that is not a valid JSON-RPC 2.0 request, notification
	// or response. Inside a batch it takes the element's place; a single invalid
	// message makes Parse return ErrNotJSONRPC (with the message in Body).
	KindInvalid Kind = iota
	// KindRequest: has "method" and "id" (an id of any JSON type, null included:
	// a lenient server may still run it, so it is charged).
	KindRequest
	// KindNotification: has "method" and no "id".
	KindNotification
	// KindResponse: has "result" or "error" and no "method" (a client answering a
	// server-initiated request).
	KindResponse
)

// Message is one JSON-RPC element of a request body.
type Message struct {
	Kind Kind
	// Method is the "method" member, unescaped; empty unless Kind is KindRequest or
	// KindNotification.
	Method string
	// ID is the "id" member exactly as sent (e.g. `7`, `"abc"`, `null`), compact;
	// nil when the element has no id. Set whatever the Kind. A scalar id aliases
	// the parsed body.
	ID json.RawMessage
	// Name is params.name when it is a JSON string (the tool of tools/call, the prompt
	// of prompts/get), unescaped; empty otherwise, and unless Kind is KindRequest or
	// KindNotification.
	Name string
	// Folded, when not nil, is the call a server that matches member names
	// case-insensitively (encoding/json: mcp-go) reads in this message, where it
	// differs from the call read above, which servers that match them exactly
	// (the Go, TypeScript and Python SDKs) run. Both are charged. A message that
	// only the first kind of server runs is read that way above, with Folded nil.
	Folded *Message
}

// HasID reports whether the message carries an "id" member (null included).
func (m Message) HasID() bool { return m.ID != nil }

// Body is a parsed request body.
type Body struct {
	// Batch is true when the body was a JSON array.
	Batch bool
	// Messages holds one element for a single message, or every element of a batch
	// in order.
	Messages []Message
}

// Format selects the shape of a rejection.
type Format uint8

const (
	// FormatError answers with a JSON-RPC error object.
	FormatError Format = iota
	// FormatToolResult answers tools/call elements with a JSON-RPC result holding an
	// isError tool result, which every SDK client hands to the model; other methods still get FormatError.
	FormatToolResult
)

// Rejection is what the limiter tells the caller.
type Rejection struct {
	Format  Format
	Code    int    // JSON-RPC error code, e.g. -32029
	Message string // e.g. "Rate limit exceeded"
	// RetryAfterSeconds is the whole number of seconds (>= 1) after which a retry can succeed.
	RetryAfterSeconds int64
	// RetryAfterMs is the same wait in whole milliseconds, rounded up (>= 1).
	RetryAfterMs int64
	Limit        string // the denying bucket, e.g. "tool:search", "shared", "method:resources/read"
	Scope        string // "shared" or "perUser"
	// MaxTokens and Remaining describe the binding bucket: its size and the
	// tokens it holds. They are sent only in the data of a CodeRateLimited error.
	MaxTokens, Remaining int64
}

// CodeRateLimited is the RateLimited error code of the draft MCP SEP-3304
// (modelcontextprotocol/modelcontextprotocol PR #3304, 2026-08-25). An error
// with this code carries data shaped as the draft asks: retryAfterMs, limit
// (the bucket's size, a number) and remaining first, then retryAfterSeconds,
// bucket (the name sent as limit otherwise) and scope.
const CodeRateLimited = -32023

// DefaultMessage is the rejection message used when Rejection.Message is empty.
const DefaultMessage = "Rate limit exceeded"

// DefaultCode is the JSON-RPC error code used when Rejection.Code is zero.
const DefaultCode = -32029
