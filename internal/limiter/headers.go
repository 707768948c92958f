package limiter

import (
	"encoding/base64"
	"strings"
	"unicode/utf8"

	"github.com/mcp-ratelimit/extproc/internal/mcp"
)

// headerMismatchCode is MCP 2026-07-28's JSON-RPC error for routing headers
// that disagree with the body (HeaderMismatch).
const headerMismatchCode = -32020

// headerMismatch compares the Mcp-Method and Mcp-Name request headers, when
// present, with every call the body is read as (calls holds every reading:
// exact and case-folded member names, each charset). It returns why they
// disagree, or "" when they agree or are absent. Nothing is ever charged or
// keyed on these headers: they are only checked, so that a server or a proxy
// that routes by them cannot be told one call while another runs.
//
// A repeated header disagrees with itself; Mcp-Name is compared, after the
// specification's base64 decoding, with params.name of tools/call and
// prompts/get when the body names one (resources/read's uri is not read by
// the limiter, so it is not compared).
func headerMismatch(r *Request, calls []mcp.Message) string {
	method, name := r.headerAll("mcp-method"), r.headerAll("mcp-name")
	if method == "" && name == "" {
		return ""
	}
	if strings.Contains(method, "\n") {
		return "Mcp-Method is repeated"
	}
	if strings.Contains(name, "\n") {
		return "Mcp-Name is repeated"
	}
	if name != "" {
		decoded, ok := decodeHeaderValue(name)
		if !ok {
			return "Mcp-Name is not valid =?base64?…?= encoding"
		}
		name = decoded
	}
	for _, m := range calls {
		if method != "" && m.Method != method {
			return "Mcp-Method does not match the body's method"
		}
		if name != "" && m.Name != "" && namedByMcpName(m.Method) && m.Name != name {
			return "Mcp-Name does not match the body's params.name"
		}
	}
	return ""
}

// namedByMcpName reports whether MCP 2026-07-28 puts params.name of method in
// Mcp-Name.
func namedByMcpName(method string) bool {
	return method == toolsCall || method == "prompts/get"
}

// decodeHeaderValue undoes MCP 2026-07-28's encoding of a header value that is
// not plain ASCII: "=?base64?" + the base64 of its UTF-8 + "?=", the markers
// in lower case exactly. Any other value is itself. ok is false for a marked
// value that is not canonical padded base64 of UTF-8.
func decodeHeaderValue(v string) (string, bool) {
	const prefix, suffix = "=?base64?", "?="
	if !strings.HasPrefix(v, prefix) || !strings.HasSuffix(v, suffix) || len(v) < len(prefix)+len(suffix) {
		return v, true
	}
	b, err := base64.StdEncoding.Strict().DecodeString(v[len(prefix) : len(v)-len(suffix)])
	if err != nil || !utf8.Valid(b) {
		return "", false
	}
	return string(b), true
}
