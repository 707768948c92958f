package integration

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/mcp-ratelimit/extproc/test/integration/harness"
	"github.com/mcp-ratelimit/extproc/test/mcpserver/demo"
)

// The tests in this file send, through Envoy, request bodies and headers that
// a limiter could read one way while the MCP server behind runs another, and
// count what each server actually ran. Both SDK servers sit behind the same
// policy: search admits bypassAdmits calls, and every trick is sent more
// often than that.

// bypassAdmits is how many search calls the policy of these tests lets through.
const bypassAdmits = 2

// Names of the upstreams, for tables that say which of them runs a body.
const (
	goSDK = "GoSDK"
	tsSDK = "TypeScriptSDK"
)

// bypassUpstream is an MCP server that counts the search calls it ran.
type bypassUpstream struct {
	name string
	// start starts a deployment running policy in front of the server; it
	// returns the MCP URL through Envoy and a count of the search calls the
	// server's handler ran so far.
	start func(t *testing.T, policy string) (url string, searches func() int)
}

// bypassUpstreams are both SDK servers, stateless so that raw calls need no
// session.
var bypassUpstreams = []bypassUpstream{
	{goSDK, func(t *testing.T, policy string) (string, func() int) {
		env := start(t, policy, harness.Options{StatelessUpstream: true})
		return env.URL, func() int { return env.Upstream.Calls(demo.ToolSearch) }
	}},
	{tsSDK, func(t *testing.T, policy string) (string, func() int) {
		ts := harness.StartTSServer(t)
		env := start(t, policy, harness.Options{UpstreamAddr: ts.Addr})
		return env.URL, func() int {
			calls, err := ts.Calls(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			return calls[demo.ToolSearch]
		}
	}},
}

// searchBody is a tools/call of search with the given id and extra members
// of arguments (each `"name":value`, comma-led), as raw JSON.
func searchBody(id, extraArgs string) string {
	return `{"jsonrpc":"2.0","id":` + id + `,"method":"tools/call","params":{"name":"search","arguments":{"query":"q"` + extraArgs + `}}}`
}

func gzipped(t *testing.T, s string) string {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	if _, err := w.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// utf16LE encodes s as UTF-16, little-endian, without a byte order mark.
func utf16LE(s string) string {
	var out []byte
	for _, u := range utf16.Encode([]rune(s)) {
		out = binary.LittleEndian.AppendUint16(out, u)
	}
	return string(out)
}

// mcpNameBase64 is MCP 2026-07-28's encoding of an Mcp-Name header value.
func mcpNameBase64(s string) string {
	return "=?base64?" + base64.StdEncoding.EncodeToString([]byte(s)) + "?="
}

// checkReachedServer asserts that the MCP server answered r, not Envoy or the
// limiter: Envoy's router adds x-envoy-upstream-service-time to upstream
// answers only, never to a local reply such as ext_proc's immediate response.
func checkReachedServer(t *testing.T, what string, r reply) {
	t.Helper()
	if r.Header.Get("X-Envoy-Upstream-Service-Time") == "" {
		t.Errorf("%s: got %d %q without x-envoy-upstream-service-time, want the MCP server's answer", what, r.Status, r.Body)
	}
}

// checkRefused asserts the limiter's own JSON-RPC error answer: status, error
// code and the id it echoes (raw JSON: "null" when no id could be read).
func checkRefused(t *testing.T, r reply, status, code int, id string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status: got %d (body %q), want %d", r.Status, r.Body, status)
	}
	if got := r.Header.Get("Content-Type"); got != "application/json" {
		t.Errorf("content-type: got %q, want application/json", got)
	}
	if r.Header.Get("X-Envoy-Upstream-Service-Time") != "" {
		t.Errorf("got an answer from the MCP server (%q), want the limiter's", r.Body)
	}
	var got struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(r.Body), &got); err != nil {
		t.Fatalf("body %q: %v", r.Body, err)
	}
	if got.JSONRPC != "2.0" || string(got.ID) != id || got.Error.Code != code || got.Error.Message == "" {
		t.Errorf("body: got %s, want a JSON-RPC 2.0 error with id %s and code %d", r.Body, id, code)
	}
}

// Bodies the limiter can read are charged however they are dressed: past the
// limit each is answered 429, and no server runs more search calls than the
// policy admits. Where a server runs the body (runs), it runs exactly as many
// as the policy admits; where it refuses the body itself, it may run none,
// but the limiter has charged it all the same, for a server that would.
func TestBypassTricksNeverRunMoreCallsThanThePolicyAdmits(t *testing.T) {
	compressionPolicy := searchPolicy(bypassAdmits) + "requestCompression: {codings: [gzip]}\n"
	tests := []struct {
		name   string
		policy string // "": searchPolicy(bypassAdmits)
		body   func(t *testing.T, id string) string
		header map[string]string
		runs   []string // the upstreams that run the body as a call of search
	}{
		{
			// Neither SDK decodes by the declared charset: both read the bytes
			// as UTF-8 and run the call.
			name:   "utf-16le declared on a UTF-8 body",
			body:   func(_ *testing.T, id string) string { return searchBody(id, "") },
			header: map[string]string{"Content-Type": "application/json; charset=utf-16le"},
			runs:   []string{goSDK, tsSDK},
		},
		{
			name:   "utf-32 declared on a UTF-8 body",
			body:   func(_ *testing.T, id string) string { return searchBody(id, "") },
			header: map[string]string{"Content-Type": "application/json; charset=utf-32"},
			runs:   []string{goSDK, tsSDK},
		},
		{
			// JSON.parse has no depth limit, so the TypeScript SDK runs it; the
			// Go SDK's decoder stops at depth 1,000 and refuses it (400).
			name: "an argument nested 10,001 deep",
			body: func(_ *testing.T, id string) string {
				return searchBody(id, `,"pad":`+strings.Repeat("[", 10_001)+strings.Repeat("]", 10_001))
			},
			runs: []string{tsSDK},
		},
		{
			// Python's json.loads detects UTF-16 from the bytes; neither SDK
			// here reads it, but the limiter must charge it for one that does.
			name: "utf-16le without a charset",
			body: func(_ *testing.T, id string) string { return utf16LE(searchBody(id, "")) },
		},
		{
			// The Fetch API's UTF-8 decode drops the byte order mark, so the
			// TypeScript SDK runs the call; Go's decoder refuses the body.
			name: "utf-8 with a byte order mark",
			body: func(_ *testing.T, id string) string { return "\xef\xbb\xbf" + searchBody(id, "") },
			runs: []string{tsSDK},
		},
		{
			// Both SDKs keep the last of a repeated member.
			name: "a repeated name whose last value is search",
			body: func(_ *testing.T, id string) string {
				return `{"jsonrpc":"2.0","id":` + id + `,"method":"tools/call","params":{"name":"echo","name":"search","arguments":{"query":"q"}}}`
			},
			runs: []string{goSDK, tsSDK},
		},
		{
			// Both SDKs decode escapes in member values, so both run search.
			name: "method and name spelled with escapes",
			body: func(_ *testing.T, id string) string {
				return `{"jsonrpc":"2.0","id":` + id + `,"method":"tools\/call","params":{"name":"\u0073earch","arguments":{"query":"q"}}}`
			},
			runs: []string{goSDK, tsSDK},
		},
		{
			name:   "Mcp-Method and a base64 Mcp-Name that agree with the body",
			body:   func(_ *testing.T, id string) string { return searchBody(id, "") },
			header: map[string]string{"Mcp-Method": "tools/call", "Mcp-Name": mcpNameBase64(demo.ToolSearch)},
			runs:   []string{goSDK, tsSDK},
		},
		{
			// Neither SDK inflates a body; a deployment that lists gzip has a
			// server that does, so the limiter reads and charges it.
			name:   "gzip where the policy says the servers inflate it",
			policy: compressionPolicy,
			body:   func(t *testing.T, id string) string { return gzipped(t, searchBody(id, "")) },
			header: map[string]string{"Content-Encoding": "gzip"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, up := range bypassUpstreams {
				t.Run(up.name, func(t *testing.T) {
					policy := tt.policy
					if policy == "" {
						policy = searchPolicy(bypassAdmits)
					}
					url, searches := up.start(t, policy)
					c := bareClient(t, url, "")
					runs := slices.Contains(tt.runs, up.name)
					for i := range bypassAdmits + 2 {
						id := strconv.Itoa(i + 1)
						r := c.post(tt.body(t, id), tt.header)
						if i >= bypassAdmits {
							checkRejected(t, r, id, "tool:search", "shared")
							continue
						}
						checkReachedServer(t, "call "+id+" within the limit", r)
						if runs && r.Status != http.StatusOK {
							t.Errorf("call %s within the limit: got %d %q, want 200 from the server", id, r.Status, r.Body)
						}
					}
					got := searches()
					if got > bypassAdmits {
						t.Errorf("the server ran search %d times, the policy admits %d", got, bypassAdmits)
					} else if runs && got != bypassAdmits {
						t.Errorf("the server ran search %d times, want %d: it runs this body, so every admitted call should have run", got, bypassAdmits)
					}
				})
			}
		})
	}
}

// Bodies the limiter cannot read, and routing headers that disagree with the
// body, are answered by the limiter every time, never passed on: the server
// runs nothing. An unreadable body's answer carries id null (no id could be
// read for certain); a header mismatch echoes the request's id.
func TestBypassBodiesTheLimiterRefusesNeverReachTheServer(t *testing.T) {
	tests := []struct {
		name       string
		body       func(t *testing.T, id string) string
		header     map[string]string
		wantStatus int
		wantCode   int
		echoID     bool
	}{
		{
			name: "a call without jsonrpc",
			body: func(_ *testing.T, id string) string {
				return `{"id":` + id + `,"method":"tools/call","params":{"name":"search","arguments":{"query":"q"}}}`
			},
			wantStatus: http.StatusBadRequest,
			wantCode:   -32600,
		},
		{
			name:       "garbage",
			body:       func(_ *testing.T, id string) string { return "search " + id + " please" },
			wantStatus: http.StatusBadRequest,
			wantCode:   -32700,
		},
		{
			name:       "gzip the policy does not accept",
			body:       func(t *testing.T, id string) string { return gzipped(t, searchBody(id, "")) },
			header:     map[string]string{"Content-Encoding": "gzip"},
			wantStatus: http.StatusUnsupportedMediaType,
			wantCode:   -32600,
		},
		{
			name:       "gzip twice",
			body:       func(t *testing.T, id string) string { return gzipped(t, gzipped(t, searchBody(id, ""))) },
			header:     map[string]string{"Content-Encoding": "gzip, gzip"},
			wantStatus: http.StatusUnsupportedMediaType,
			wantCode:   -32600,
		},
		{
			name:       "Mcp-Method tools/list on a tools/call",
			body:       func(_ *testing.T, id string) string { return searchBody(id, "") },
			header:     map[string]string{"Mcp-Method": "tools/list"},
			wantStatus: http.StatusBadRequest,
			wantCode:   -32020,
			echoID:     true,
		},
		{
			name:       "Mcp-Name echo on a call of search",
			body:       func(_ *testing.T, id string) string { return searchBody(id, "") },
			header:     map[string]string{"Mcp-Method": "tools/call", "Mcp-Name": demo.ToolEcho},
			wantStatus: http.StatusBadRequest,
			wantCode:   -32020,
			echoID:     true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, up := range bypassUpstreams {
				t.Run(up.name, func(t *testing.T) {
					url, searches := up.start(t, searchPolicy(bypassAdmits))
					c := bareClient(t, url, "")
					for i := range bypassAdmits + 1 {
						id := strconv.Itoa(i + 1)
						wantID := "null"
						if tt.echoID {
							wantID = id
						}
						checkRefused(t, c.post(tt.body(t, id), tt.header), tt.wantStatus, tt.wantCode, wantID)
					}
					if got := searches(); got != 0 {
						t.Errorf("the server ran search %d times, want 0", got)
					}
				})
			}
		})
	}
}

// JSON-RPC messages that are no calls (a notification, and a response a
// client POSTs to answer a server's request) reach the server, which accepts
// them with 202, and cost nothing: after more of them than the bucket holds, the policy still admits
// its search calls.
func TestBypassNotificationsAndResponsesReachTheServerUncharged(t *testing.T) {
	messages := []struct{ name, body string }{
		{"notifications/initialized", `{"jsonrpc":"2.0","method":"notifications/initialized"}`},
		{"a response", `{"jsonrpc":"2.0","id":3,"result":{}}`},
	}
	for _, up := range bypassUpstreams {
		t.Run(up.name, func(t *testing.T) {
			url, searches := up.start(t, searchPolicy(bypassAdmits))
			c := bareClient(t, url, "")
			for _, m := range messages {
				for range bypassAdmits + 1 {
					r := c.post(m.body, nil)
					checkReachedServer(t, m.name, r)
					if r.Status != http.StatusAccepted {
						t.Errorf("%s: got %d %q, want 202 from the server", m.name, r.Status, r.Body)
					}
				}
			}
			for i := range bypassAdmits {
				id := strconv.Itoa(i + 1)
				if r := c.call(id, demo.ToolSearch); r.Status != http.StatusOK {
					t.Errorf("search %s after the messages: got %d %q, want 200", id, r.Status, r.Body)
				}
			}
			if got := searches(); got != bypassAdmits {
				t.Errorf("the server ran search %d times, want %d", got, bypassAdmits)
			}
		})
	}
}

// unreadableBody: continue hands a body the limiter cannot read to the server,
// which answers it itself, while calls the limiter can read stay charged.
func TestBypassUnreadableBodyContinueLetsUnreadableBodiesReachTheServer(t *testing.T) {
	policy := searchPolicy(bypassAdmits) + "unreadableBody: continue\n"
	for _, up := range bypassUpstreams {
		t.Run(up.name, func(t *testing.T) {
			url, searches := up.start(t, policy)
			c := bareClient(t, url, "")
			for range bypassAdmits + 1 {
				r := c.post("search please", nil)
				checkReachedServer(t, "garbage", r)
				if strings.Contains(r.Body, "rate limiter") {
					t.Errorf("garbage: got the limiter's answer %d %q, want the server's", r.Status, r.Body)
				}
				checkReachedServer(t, "gzip", c.post(gzipped(t, searchBody("9", "")), map[string]string{"Content-Encoding": "gzip"}))
			}
			for i := range bypassAdmits + 1 {
				id := strconv.Itoa(i + 1)
				r := c.call(id, demo.ToolSearch)
				if i >= bypassAdmits {
					checkRejected(t, r, id, "tool:search", "shared")
				} else if r.Status != http.StatusOK {
					t.Errorf("search %s: got %d %q, want 200", id, r.Status, r.Body)
				}
			}
			if got := searches(); got != bypassAdmits {
				t.Errorf("the server ran search %d times, want %d", got, bypassAdmits)
			}
		})
	}
}
