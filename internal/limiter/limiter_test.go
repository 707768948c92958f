package limiter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/mcp-ratelimit/extproc/internal/bucket"
	"github.com/mcp-ratelimit/extproc/internal/config"
)

func perMinute(n int64) []config.Bucket {
	return []config.Bucket{{MaxTokens: n, RefillPeriod: time.Minute}}
}

// server returns a single-server policy with the defaults config.Parse applies.
func server(mod func(*config.Server)) *config.Policy {
	s := config.Server{
		Name:        "github",
		Tools:       map[string]config.Tool{},
		Methods:     map[string]config.Method{},
		Identity:    []config.IdentitySource{{Header: "x-user-id"}},
		Response:    config.Response{ErrorCode: -32029, HTTPStatus: 429, Format: config.FormatJSONRPCError, Message: "Rate limit exceeded", HeadersOnAllowed: true},
		FailureMode: config.FailOpen,
	}
	mod(&s)
	return &config.Policy{Servers: []config.Server{s}, Redis: config.Redis{Timeout: 50 * time.Millisecond}}
}

func call(id, tool string) []byte {
	return fmt.Appendf(nil, `{"jsonrpc":"2.0","id":%s,"method":"tools/call","params":{"name":%q,"arguments":{}}}`, id, tool)
}

func post(body []byte, headers ...string) Request {
	h := HeaderMap{"content-type": "application/json"}
	for i := 0; i+1 < len(headers); i += 2 {
		h[headers[i]] = headers[i+1]
	}
	r := Request{Authority: "mcp.example.com", Path: "/mcp", Headers: h, Body: body}
	return r
}

// step is one request and what its decision must show.
type step struct {
	req         Request
	wantOutcome Outcome
	wantStatus  int    // checked when not allowed
	wantBody    string // checked when non-empty
	wantLimit   string
}

func runSteps(t *testing.T, l *Limiter, steps []step) {
	t.Helper()
	for i, s := range steps {
		d := l.Decide(context.Background(), s.req)
		if d.Outcome != s.wantOutcome {
			t.Fatalf("step %d: outcome got %q, want %q (decision %+v)", i, d.Outcome, s.wantOutcome, d)
		}
		wantAllow := s.wantOutcome != OutcomeLimited && s.wantOutcome != OutcomeFailedClosed
		if d.Allow != wantAllow {
			t.Fatalf("step %d: allow got %v, want %v", i, d.Allow, wantAllow)
		}
		if !d.Allow && d.Status != s.wantStatus {
			t.Errorf("step %d: status got %d, want %d", i, d.Status, s.wantStatus)
		}
		if s.wantBody != "" && maskRetryAfterMs(string(d.Body)) != maskRetryAfterMs(s.wantBody) {
			t.Errorf("step %d: body\n got %s\nwant %s", i, d.Body, s.wantBody)
		}
		if d.Limit != s.wantLimit {
			t.Errorf("step %d: limit got %q, want %q", i, d.Limit, s.wantLimit)
		}
	}
}

// retryAfterMsRE matches the retryAfterMs of a rejection body, whose value
// depends on the real clock: runSteps compares bodies with it masked, and
// TestRetryAfterMs checks the value itself.
var retryAfterMsRE = regexp.MustCompile(`"retryAfterMs":[0-9]+`)

func maskRetryAfterMs(body string) string {
	return retryAfterMsRE.ReplaceAllString(body, `"retryAfterMs":N`)
}

func TestDecide(t *testing.T) {
	allowed := func(r Request) step { return step{req: r, wantOutcome: OutcomeAllowed} }
	unlimited := func(r Request) step { return step{req: r, wantOutcome: OutcomeUnlimited} }
	limited := func(r Request, limit string) step {
		return step{req: r, wantOutcome: OutcomeLimited, wantStatus: 429, wantLimit: limit}
	}
	tests := []struct {
		name   string
		policy *config.Policy
		steps  []step
	}{
		{
			name:   "shared bucket admits its capacity then rejects with the request id",
			policy: server(func(s *config.Server) { s.Shared = perMinute(2) }),
			steps: []step{
				allowed(post(call("1", "search"))),
				allowed(post(call("2", "fetch"))),
				{req: post(call("7", "search")), wantOutcome: OutcomeLimited, wantStatus: 429, wantLimit: "server",
					wantBody: `{"jsonrpc":"2.0","id":7,"error":{"code":-32029,"message":"Rate limit exceeded","data":{"retryAfterSeconds":30,"retryAfterMs":30000,"limit":"server","scope":"shared"}}}`},
			},
		},
		{
			name:   "string ids are echoed exactly",
			policy: server(func(s *config.Server) { s.Shared = perMinute(1) }),
			steps: []step{
				allowed(post(call(`"a"`, "x"))),
				{req: post(call(`"req-\u00e9\"7"`, "x")), wantOutcome: OutcomeLimited, wantStatus: 429, wantLimit: "server",
					wantBody: `{"jsonrpc":"2.0","id":"req-\u00e9\"7","error":{"code":-32029,"message":"Rate limit exceeded","data":{"retryAfterSeconds":60,"retryAfterMs":60000,"limit":"server","scope":"shared"}}}`},
			},
		},
		{
			name:   "a notification is limited and answered without id",
			policy: server(func(s *config.Server) { s.Shared = perMinute(1) }),
			steps: []step{
				allowed(post([]byte(`{"jsonrpc":"2.0","method":"tools/call","params":{"name":"x"}}`))),
				{req: post([]byte(`{"jsonrpc":"2.0","method":"tools/call","params":{"name":"x"}}`)), wantOutcome: OutcomeLimited, wantStatus: 429, wantLimit: "server",
					wantBody: `{"jsonrpc":"2.0","error":{"code":-32029,"message":"Rate limit exceeded","data":{"retryAfterSeconds":60,"retryAfterMs":60000,"limit":"server","scope":"shared"}}}`},
			},
		},
		{
			name:   "a batch is charged all or nothing",
			policy: server(func(s *config.Server) { s.Shared = perMinute(3) }),
			steps: []step{
				allowed(post([]byte(`[` + string(call("1", "a")) + `,` + string(call("2", "b")) + `]`))),
				{req: post([]byte(`[` + string(call("3", "a")) + `,{"jsonrpc":"2.0","method":"tools/call","params":{"name":"n"}},` + string(call("4", "b")) + `]`)),
					wantOutcome: OutcomeLimited, wantStatus: 429, wantLimit: "server",
					// The batch asked 3 of a bucket holding 1: nothing was charged, so the
					// single call after it still passes.
					wantBody: `[{"jsonrpc":"2.0","id":3,"error":{"code":-32029,"message":"Rate limit exceeded","data":{"retryAfterSeconds":40,"retryAfterMs":40000,"limit":"server","scope":"shared"}}},{"jsonrpc":"2.0","id":4,"error":{"code":-32029,"message":"Rate limit exceeded","data":{"retryAfterSeconds":40,"retryAfterMs":40000,"limit":"server","scope":"shared"}}}]`},
				allowed(post(call("5", "a"))),
				limited(post(call("6", "a")), "server"),
			},
		},
		{
			name:   "a batch larger than the bucket can ever hold is rejected with the full refill time",
			policy: server(func(s *config.Server) { s.Shared = perMinute(2) }),
			steps: []step{
				{req: post([]byte(`[` + string(call("1", "a")) + `,` + string(call("2", "a")) + `,` + string(call("3", "a")) + `]`)),
					wantOutcome: OutcomeLimited, wantStatus: 429, wantLimit: "server"},
				allowed(post(call("4", "a"))),
			},
		},
		{
			name: "a tool bucket limits only its tool and a denial leaves the shared bucket untouched",
			policy: server(func(s *config.Server) {
				s.Shared = perMinute(3)
				s.Tools["search"] = config.Tool{Name: "search", Cost: 1, Shared: perMinute(1)}
			}),
			steps: []step{
				allowed(post(call("1", "search"))),
				limited(post(call("2", "search")), "tool:search"),
				limited(post(call("3", "search")), "tool:search"),
				allowed(post(call("4", "fetch"))),
				allowed(post(call("5", "fetch"))),
				limited(post(call("6", "fetch")), "server"),
			},
		},
		{
			name: "a call only a case-insensitive server reads is charged as that call",
			policy: server(func(s *config.Server) {
				s.Tools["search"] = config.Tool{Name: "search", Cost: 1, Shared: perMinute(1)}
			}),
			steps: []step{
				allowed(post([]byte(`{"JSONRPC":"2.0","ID":1,"Method":"tools/call","Params":{"Name":"search"}}`))),
				limited(post([]byte(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"NAME":"search"}}`)), "tool:search"),
				limited(post(call("3", "search")), "tool:search"),
			},
		},
		{
			name: "when the two readings are different calls, both are charged",
			policy: server(func(s *config.Server) {
				s.Tools["search"] = config.Tool{Name: "search", Cost: 1, Shared: perMinute(1)}
				s.Tools["fetch"] = config.Tool{Name: "fetch", Cost: 1, Shared: perMinute(1)}
			}),
			steps: []step{
				allowed(post([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","Name":"fetch"}}`))),
				limited(post(call("2", "search")), "tool:search"),
				limited(post(call("3", "fetch")), "tool:fetch"),
			},
		},
		{
			name: "cost charges that many tokens",
			policy: server(func(s *config.Server) {
				s.Tools["heavy"] = config.Tool{Name: "heavy", Cost: 3, Shared: perMinute(5)}
			}),
			steps: []step{
				allowed(post(call("1", "heavy"))),
				limited(post(call("2", "heavy")), "tool:heavy"),
			},
		},
		{
			name: "per-user buckets are per identity and skipped without one",
			policy: server(func(s *config.Server) {
				s.PerUser = perMinute(1)
			}),
			steps: []step{
				allowed(post(call("1", "a"), "x-user-id", "alice")),
				{req: post(call("2", "a"), "x-user-id", "alice"), wantOutcome: OutcomeLimited, wantStatus: 429, wantLimit: "server",
					wantBody: `{"jsonrpc":"2.0","id":2,"error":{"code":-32029,"message":"Rate limit exceeded","data":{"retryAfterSeconds":60,"retryAfterMs":60000,"limit":"server","scope":"perUser"}}}`},
				allowed(post(call("3", "a"), "x-user-id", "bob")),
				unlimited(post(call("4", "a"))),
				unlimited(post(call("5", "a"))),
			},
		},
		{
			name: "per-user tool bucket",
			policy: server(func(s *config.Server) {
				s.Tools["search"] = config.Tool{Name: "search", Cost: 1, PerUser: perMinute(1)}
			}),
			steps: []step{
				allowed(post(call("1", "search"), "x-user-id", "alice")),
				limited(post(call("2", "search"), "x-user-id", "alice"), "tool:search"),
				allowed(post(call("3", "search"), "x-user-id", "bob")),
				unlimited(post(call("4", "other"), "x-user-id", "alice")),
			},
		},
		{
			name:   "methods other than tools/call are not limited unless listed",
			policy: server(func(s *config.Server) { s.Shared = perMinute(1) }),
			steps: []step{
				unlimited(post([]byte(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`))),
				unlimited(post([]byte(`{"jsonrpc":"2.0","id":2,"method":"tools/list"}`))),
				unlimited(post([]byte(`{"jsonrpc":"2.0","method":"notifications/initialized"}`))),
				unlimited(post([]byte(`{"jsonrpc":"2.0","id":3,"result":{}}`))),
				allowed(post(call("4", "a"))),
				unlimited(post([]byte(`{"jsonrpc":"2.0","id":5,"method":"tools/list"}`))),
			},
		},
		{
			name: "method limits",
			policy: server(func(s *config.Server) {
				s.Methods["resources/read"] = config.Method{Name: "resources/read", Cost: 1, Shared: perMinute(1)}
			}),
			steps: []step{
				allowed(post([]byte(`{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"x"}}`))),
				limited(post([]byte(`{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"y"}}`)), "method:resources/read"),
				unlimited(post(call("3", "a"))),
			},
		},
		{
			name:   "requests without a body continue",
			policy: server(func(s *config.Server) { s.Shared = perMinute(1) }),
			steps: []step{
				unlimited(post(nil)),
				unlimited(post([]byte{})),
			},
		},
		{
			name:   "data after the JSON value does not get a call past the limiter",
			policy: server(func(s *config.Server) { s.Shared = perMinute(1) }),
			steps: []step{
				allowed(post(append(call("1", "a"), " x"...))),
				limited(post(append(call("2", "a"), call("3", "a")...)), "server"),
			},
		},
		{
			name:   "a wrong content-type is still limited",
			policy: server(func(s *config.Server) { s.Shared = perMinute(1) }),
			steps: []step{
				allowed(post(call("1", "a"), "content-type", "text/plain")),
				limited(post(call("2", "a"), "content-type", "application/x-www-form-urlencoded"), "server"),
			},
		},
		{
			name: "dry run counts but never rejects",
			policy: server(func(s *config.Server) {
				s.Shared = perMinute(1)
				s.DryRun = true
			}),
			steps: []step{
				allowed(post(call("1", "a"))),
				{req: post(call("2", "a")), wantOutcome: OutcomeDryRunLimited, wantLimit: "server"},
			},
		},
		{
			name: "toolResult answers tools/call with HTTP 200 and an isError result",
			policy: server(func(s *config.Server) {
				s.Shared = perMinute(1)
				s.Response.Format = config.FormatToolResult
			}),
			steps: []step{
				allowed(post(call("1", "a"))),
				{req: post(call("2", "a")), wantOutcome: OutcomeLimited, wantStatus: 200, wantLimit: "server",
					wantBody: `{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"Rate limit exceeded; retry after 60 seconds"}],"isError":true,"resultType":"complete","_meta":{"retryAfterSeconds":60,"retryAfterMs":60000,"limit":"server","scope":"shared"}}}`},
			},
		},
		{
			name: "errorCodeFor2026 applies from protocol 2026-07-28 on",
			policy: server(func(s *config.Server) {
				s.Shared = perMinute(1)
				code := 429
				s.Response.ErrorCodeFor2026 = &code
			}),
			steps: []step{
				allowed(post(call("1", "a"))),
				{req: post(call("2", "a"), "mcp-protocol-version", "2025-06-18"), wantOutcome: OutcomeLimited, wantStatus: 429, wantLimit: "server",
					wantBody: `{"jsonrpc":"2.0","id":2,"error":{"code":-32029,"message":"Rate limit exceeded","data":{"retryAfterSeconds":60,"retryAfterMs":60000,"limit":"server","scope":"shared"}}}`},
				{req: post(call("3", "a"), "mcp-protocol-version", "2026-07-28"), wantOutcome: OutcomeLimited, wantStatus: 429, wantLimit: "server",
					wantBody: `{"jsonrpc":"2.0","id":3,"error":{"code":429,"message":"Rate limit exceeded","data":{"retryAfterSeconds":60,"retryAfterMs":60000,"limit":"server","scope":"shared"}}}`},
			},
		},
		{
			name: "custom status, code and message",
			policy: server(func(s *config.Server) {
				s.Shared = perMinute(1)
				s.Response.HTTPStatus = 503
				s.Response.ErrorCode = -32000
				s.Response.Message = `Slow "down"`
			}),
			steps: []step{
				allowed(post(call("1", "a"))),
				{req: post(call("2", "a")), wantOutcome: OutcomeLimited, wantStatus: 503, wantLimit: "server",
					wantBody: `{"jsonrpc":"2.0","id":2,"error":{"code":-32000,"message":"Slow \"down\"","data":{"retryAfterSeconds":60,"retryAfterMs":60000,"limit":"server","scope":"shared"}}}`},
			},
		},
		{
			name:   "an empty policy limits nothing",
			policy: &config.Policy{},
			steps:  []step{unlimited(post(call("1", "a"))), unlimited(post(call("2", "a")))},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runSteps(t, New(tt.policy, Options{}), tt.steps)
		})
	}
}

func TestRejectionHeaders(t *testing.T) {
	l := New(server(func(s *config.Server) {
		s.Tools["search"] = config.Tool{Name: "search", Cost: 1, PerUser: []config.Bucket{{MaxTokens: 2, RefillPeriod: 10 * time.Second}}}
	}), Options{})
	req := post(call("1", "search"), "x-user-id", "alice")
	for range 2 {
		if d := l.Decide(context.Background(), req); !d.Allow {
			t.Fatalf("got rejected %+v, want allowed", d)
		}
	}
	d := l.Decide(context.Background(), req)
	want := []Header{
		{"content-type", "application/json"},
		{"retry-after", "5"},
		{"ratelimit-policy", `"user-tool:search";q=2;w=10`},
		{"ratelimit", `"user-tool:search";r=0;t=5`},
	}
	if diff := cmp.Diff(want, d.Headers); diff != "" {
		t.Errorf("headers (-want +got):\n%s", diff)
	}
	if d.Details != "mcp_rate_limited" || d.RetryAfter != 5 {
		t.Errorf("got details %q retryAfter %d, want mcp_rate_limited 5", d.Details, d.RetryAfter)
	}
}

func TestLabelsAreBounded(t *testing.T) {
	l := New(server(func(s *config.Server) {
		s.Shared = perMinute(100)
		s.Tools["search"] = config.Tool{Name: "search", Cost: 1}
		s.Methods["resources/read"] = config.Method{Name: "resources/read", Cost: 1, Shared: perMinute(100)}
	}), Options{})
	tests := []struct {
		body       []byte
		method     string
		tool       string
		wantResult Outcome
	}{
		{call("1", "search"), "tools/call", "search", OutcomeAllowed},
		{call("2", "user-supplied-name-123"), "tools/call", "other", OutcomeAllowed},
		{[]byte(`{"jsonrpc":"2.0","id":1,"method":"whatever/custom"}`), "other", "", OutcomeUnlimited},
		{[]byte(`[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"x"}}]`), "resources/read", "", OutcomeAllowed},
		{[]byte(`[{"jsonrpc":"2.0","id":1,"method":"tools/list"},` + string(call("2", "search")) + `]`), "tools/call", "search", OutcomeAllowed},
	}
	for _, tt := range tests {
		d := l.Decide(context.Background(), post(tt.body))
		if d.Method != tt.method || d.Tool != tt.tool || d.Outcome != tt.wantResult {
			t.Errorf("%s: got method %q tool %q outcome %q, want %q %q %q", tt.body, d.Method, d.Tool, d.Outcome, tt.method, tt.tool, tt.wantResult)
		}
	}
}

// failingStore fails every Take, or blocks until the deadline when hang is set.
type failingStore struct{ hang bool }

func (f failingStore) Take(ctx context.Context, _ []bucket.Charge) (bucket.Result, error) {
	if f.hang {
		<-ctx.Done()
		return bucket.Result{}, ctx.Err()
	}
	return bucket.Result{}, errors.New("connection refused")
}

func TestFailureModes(t *testing.T) {
	tests := []struct {
		name  string
		mode  config.FailureMode
		store failingStore
		steps []step
	}{
		{"open lets traffic through when the store errors", config.FailOpen, failingStore{},
			[]step{{req: post(call("1", "a")), wantOutcome: OutcomeFailedOpen}, {req: post(call("2", "a")), wantOutcome: OutcomeFailedOpen}}},
		{"open lets traffic through when the store hangs past the deadline", config.FailOpen, failingStore{hang: true},
			[]step{{req: post(call("1", "a")), wantOutcome: OutcomeFailedOpen}}},
		{"closed answers 503", config.FailClosed, failingStore{},
			[]step{{req: post(call("9", "a")), wantOutcome: OutcomeFailedClosed, wantStatus: 503,
				wantBody: `{"jsonrpc":"2.0","id":9,"error":{"code":-32603,"message":"Rate limiter unavailable"}}`}}},
		{"closed answers 503 when the store hangs", config.FailClosed, failingStore{hang: true},
			[]step{{req: post(call("9", "a")), wantOutcome: OutcomeFailedClosed, wantStatus: 503}}},
		{"local falls back to per-replica buckets", config.FailLocal, failingStore{},
			[]step{{req: post(call("1", "a")), wantOutcome: OutcomeAllowed}, {req: post(call("2", "a")), wantOutcome: OutcomeLimited, wantStatus: 429, wantLimit: "server"}}},
		{"unlimited requests never touch the failing store", config.FailClosed, failingStore{},
			[]step{{req: post([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)), wantOutcome: OutcomeUnlimited}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := server(func(s *config.Server) {
				s.Shared = perMinute(1)
				s.FailureMode = tt.mode
			})
			p.Redis.Timeout = 20 * time.Millisecond
			runSteps(t, New(p, Options{Store: tt.store}), tt.steps)
		})
	}
}

// TestDryRunNeverRejectsEvenWhenFailingClosed: dry run decides and counts,
// never rejects, a store failure under failureMode closed included.
func TestDryRunNeverRejectsEvenWhenFailingClosed(t *testing.T) {
	p := server(func(s *config.Server) { s.Shared = perMinute(1); s.FailureMode = config.FailClosed; s.DryRun = true })
	d := New(p, Options{Store: failingStore{}}).Decide(context.Background(), post(call("1", "a")))
	if !d.Allow || d.Outcome != OutcomeFailedOpen || d.StoreError == nil {
		t.Errorf("got allow %v outcome %q store error %v, want a pass counted failed_open with the store's error", d.Allow, d.Outcome, d.StoreError)
	}
}

func TestFailClosedHeaders(t *testing.T) {
	p := server(func(s *config.Server) { s.Shared = perMinute(1); s.FailureMode = config.FailClosed })
	d := New(p, Options{Store: failingStore{}}).Decide(context.Background(), post(call("1", "a")))
	want := []Header{{"content-type", "application/json"}, {"retry-after", "1"}}
	if diff := cmp.Diff(want, d.Headers); diff != "" {
		t.Errorf("headers (-want +got):\n%s", diff)
	}
	if d.StoreError == nil {
		t.Error("got no StoreError, want the store's error recorded")
	}
}

func TestRouting(t *testing.T) {
	mk := func(name string, m config.Match) config.Server {
		s := server(func(s *config.Server) { s.Shared = perMinute(1) }).Servers[0]
		s.Name, s.Match = name, m
		return s
	}
	p := &config.Policy{Servers: []config.Server{
		mk("github", config.Match{Authority: "mcp.example.com", PathPrefix: "/github"}),
		mk("jira", config.Match{PathPrefix: "/jira"}),
		mk("pinned", config.Match{Authority: "pinned.example.com:8443"}),
	}}
	tests := []struct {
		authority, path, want string
	}{
		{"mcp.example.com", "/github", "github"},
		{"MCP.example.com:443", "/github/mcp?x=1", "github"},
		{"other.example.com", "/github", ""},
		{"mcp.example.com", "/github-enterprise", ""},
		{"anything", "/jira/mcp", "jira"},
		{"pinned.example.com:8443", "/", "pinned"},
		{"pinned.example.com", "/", ""},
		{"mcp.example.com", "/", ""},
	}
	l := New(p, Options{})
	for _, tt := range tests {
		r := post(call("1", "a"))
		r.Authority, r.Path = tt.authority, tt.path
		if got := l.Decide(context.Background(), r).Server; got != tt.want {
			t.Errorf("%s%s: got server %q, want %q", tt.authority, tt.path, got, tt.want)
		}
	}
}

// Readings of one path that select different servers make the request
// ambiguous: 400, nothing charged. Readings that select one server, or one
// server and no server, charge that server.
func TestRoutingByEveryReadingOfThePath(t *testing.T) {
	mk := func(name string, m config.Match) config.Server {
		s := server(func(s *config.Server) { s.Shared = perMinute(1) }).Servers[0]
		s.Name, s.Match = name, m
		return s
	}
	withDefault := &config.Policy{Servers: []config.Server{
		mk("github", config.Match{PathPrefix: "/github"}),
		mk("jira", config.Match{PathPrefix: "/jira"}),
		mk("default", config.Match{}),
	}}
	tests := []struct {
		name, path string
		want       string // the server charged; "" none
		ambiguous  bool
	}{
		{"plain", "/github/mcp", "github", false},
		{"plain, other server", "/jira/mcp", "jira", false},
		{"no specific server", "/other/mcp", "default", false},
		// Go's ServeMux runs it as /github/mcp; Express's catch-all as sent.
		{"escaped letter", "/%67ithub/mcp", "", true},
		// Express routes it to /github; Go's ServeMux to its catch-all.
		{"other case", "/GitHub/mcp", "", true},
		// A Go subtree pattern /github/ runs it; Tomcat resolves it to /jira.
		{"escaped dot segments", "/github/..%2F..%2Fjira/mcp", "", true},
		{"dot segments", "/github/../jira/mcp", "", true},
		// Starlette's Route("/github/mcp") runs "/github/mcp%0A" (Python's "$"
		// matches before a final newline): no reading tells, so it is refused.
		{"escaped newline", "/github%0A", "", true},
		{"raw control character", "/github/mcp\x01", "", true},
		{"long path with escapes", "/github/" + strings.Repeat("%61", 2000), "", true},
		{"long plain path", "/github/" + strings.Repeat("a", 6000), "github", false},
		// Tomcat with allowBackslash reads "%5C" as "/" once decoded.
		{"escaped backslash", "/x%5C..%5Cgithub/mcp", "", true},
		// Every reading is /github's.
		{"parameters", "/github/mcp;v=1", "github", false},
		{"dot segment inside", "/github/./mcp", "github", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := New(withDefault, Options{})
			r := post(call("7", "a"))
			r.Path = tt.path
			d := l.Decide(context.Background(), r)
			if tt.ambiguous {
				want := `{"jsonrpc":"2.0","id":7,"error":{"code":-32600,"message":"Request host or path is ambiguous to the rate limiter: escapes, \";\" parameters, dot segments, \"//\", letter case, a trailing dot, a malformed host or port, or control characters could route it to another server; send the URL as given"}}`
				if d.Allow || d.Outcome != OutcomeAmbiguousRoute || d.Status != 400 || string(d.Body) != want || d.Details != "mcp_rate_limit_ambiguous_route" {
					t.Fatalf("%s: got %+v (body %s), want a 400 ambiguous_route with body %s", tt.path, d, d.Body, want)
				}
				return
			}
			if d.Server != tt.want || d.Outcome != OutcomeAllowed {
				t.Errorf("%s: got server %q outcome %q, want %q allowed", tt.path, d.Server, d.Outcome, tt.want)
			}
		})
	}

	// Without a catch-all, a reading that selects no server does not make the
	// request ambiguous: the one server some reading selects is charged.
	noDefault := &config.Policy{Servers: withDefault.Servers[:2]}
	for _, path := range []string{"/%67ithub/mcp", "/GitHub/mcp", "/x/../github/mcp", `/github\mcp`} {
		l := New(noDefault, Options{})
		r := post(call("1", "a"))
		r.Path = path
		if d := l.Decide(context.Background(), r); d.Server != "github" || d.Outcome != OutcomeAllowed {
			t.Errorf("%s without a catch-all: got server %q outcome %q, want github allowed", path, d.Server, d.Outcome)
		}
	}
	// Dry run never rejects: when every server the readings select is in dry
	// run, the ambiguous request continues; when one is not, it is refused.
	for _, tt := range []struct {
		dryRun []bool // github, jira, default
		allow  bool
	}{{[]bool{true, true, true}, true}, {[]bool{true, false, true}, true}, {[]bool{false, true, true}, false}} {
		p := &config.Policy{Servers: slices.Clone(withDefault.Servers)}
		for i := range p.Servers {
			p.Servers[i].DryRun = tt.dryRun[i]
		}
		r := post(call("1", "a"))
		r.Path = "/GitHub/mcp" // github or default
		var logs strings.Builder
		l := New(p, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if d := l.Decide(context.Background(), r); d.Allow != tt.allow {
			t.Errorf("dry run %v: got allow %v (%s), want %v", tt.dryRun, d.Allow, d.Outcome, tt.allow)
		}
		logged := strings.Contains(logs.String(), `msg="dry run: would have refused a request whose host or path reads as more than one server" servers="[default github]"`)
		if logged != tt.allow {
			t.Errorf("dry run %v: logged %v, want %v; logs:\n%s", tt.dryRun, logged, tt.allow, logs.String())
		}
	}
	// A request without a body is never limited, ambiguous or not.
	l := New(withDefault, Options{})
	r := post(nil)
	r.Body, r.Path = nil, "/GitHub/mcp"
	if d := l.Decide(context.Background(), r); !d.Allow {
		t.Errorf("GET of an ambiguous path: got %+v, want it to continue", d)
	}
}

// The authority is read several ways too (config.AuthorityReadings): with a
// catch-all server, a host that Envoy's virtual hosts or a Go mux would send
// to the catch-all but that reads as another server's is refused.
func TestRoutingByEveryReadingOfTheAuthority(t *testing.T) {
	mk := func(name string, m config.Match) config.Server {
		s := server(func(s *config.Server) { s.Shared = perMinute(1) }).Servers[0]
		s.Name, s.Match = name, m
		return s
	}
	a := mk("a", config.Match{Authority: "mcp.example.com"})
	internal := mk("internal", config.Match{Authority: "tools.internal"})
	github := mk("github", config.Match{PathPrefix: "/github"})
	rest := mk("rest", config.Match{})
	tests := []struct {
		name      string
		servers   []config.Server
		authority string
		path      string
		want      string // the server charged; "" none
		ambiguous bool
	}{
		{"plain host", []config.Server{a, rest}, "mcp.example.com", "/mcp", "a", false},
		{"port ignored", []config.Server{a, rest}, "mcp.example.com:10000", "/mcp", "a", false},
		{"other host", []config.Server{a, rest}, "other.example", "/mcp", "rest", false},
		// Envoy's domains and Go's mux send these to the catch-all.
		{"upper case with a catch-all", []config.Server{a, rest}, "MCP.example.com", "/mcp", "", true},
		{"trailing dot with a catch-all", []config.Server{a, rest}, "mcp.example.com.", "/mcp", "", true},
		// Without one, no reading selects another server.
		{"upper case and dot alone", []config.Server{a}, "MCP.example.com.", "/mcp", "a", false},
		// Express reads it as mcp.example.com, Envoy as none of them.
		{"two ports", []config.Server{a, rest}, "mcp.example.com:1:2", "/mcp", "", true},
		{"two ports alone", []config.Server{a}, "mcp.example.com:1:2", "/mcp", "a", false},
		{"host too long", []config.Server{a, rest}, strings.Repeat("a", 300), "/mcp", "", true},
		// A path that cannot be read counts only the servers its host can reach:
		// tools.internal's server takes every path.
		{"unreadable path, host with one server", []config.Server{internal, github, rest}, "tools.internal", "/mcp%0A", "internal", false},
		{"unreadable path, other host", []config.Server{internal, github, rest}, "x.example", "/mcp%0A", "", true},
		{"unreadable path, no server by path", []config.Server{internal}, "x.example", "/mcp%0A", "", false},
		// Only gh-internal can take tools.internal's /github/mcp, however the
		// path reads: github-mcp is never the first match there.
		{"unreadable path, one server can take it", []config.Server{
			mk("gh-internal", config.Match{Authority: "tools.internal", PathPrefix: "/github"}),
			mk("github-mcp", config.Match{PathPrefix: "/github/mcp"}),
		}, "tools.internal", "/github/mcp%0A", "gh-internal", false},
		// Envoy's strip_any_host_port keeps an empty or out-of-range port (the
		// catch-all's virtual host), Go reads it as none (a's).
		{"empty port", []config.Server{a, rest}, "mcp.example.com:", "/mcp", "", true},
		{"port out of range", []config.Server{a, rest}, "mcp.example.com:99999999999", "/mcp", "", true},
		// Go's ServeMux takes the brackets off and routes it as mcp.example.com.
		{"name in brackets", []config.Server{a, rest}, "[mcp.example.com]:443", "/mcp", "", true},
		{"name in brackets alone", []config.Server{a}, "[mcp.example.com]:443", "/mcp", "a", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := New(&config.Policy{Servers: tt.servers}, Options{})
			r := post(call("7", "a"))
			r.Authority, r.Path = tt.authority, tt.path
			d := l.Decide(context.Background(), r)
			if tt.ambiguous {
				if d.Allow || d.Outcome != OutcomeAmbiguousRoute || d.Status != 400 {
					t.Fatalf("%s %s: got %+v, want a 400 ambiguous_route", tt.authority, tt.path, d)
				}
				return
			}
			wantOutcome := OutcomeAllowed
			if tt.want == "" {
				wantOutcome = OutcomeUnlimited
			}
			if d.Server != tt.want || d.Outcome != wantOutcome {
				t.Errorf("%s %s: got server %q outcome %q, want %q %s", tt.authority, tt.path, d.Server, d.Outcome, tt.want, wantOutcome)
			}
		})
	}
}

func TestRouteOfAPlainRequestDoesNotAllocate(t *testing.T) {
	c := compile(nil, &config.Policy{Servers: []config.Server{
		{Name: "a", Match: config.Match{Authority: "mcp.example.com", PathPrefix: "/github"}},
		{Name: "b", Match: config.Match{PathPrefix: "/jira"}},
		{Name: "rest"},
	}})
	if n := testing.AllocsPerRun(100, func() { c.route("mcp.example.com:8443", "/github/mcp?session=1") }); n != 0 {
		t.Errorf("route allocates %v times, want 0", n)
	}
}

func TestServersHaveSeparateBuckets(t *testing.T) {
	a := server(func(s *config.Server) { s.Shared = perMinute(1) }).Servers[0]
	b := a
	a.Name, a.Match = "a", config.Match{PathPrefix: "/a"}
	b.Name, b.Match = "b", config.Match{PathPrefix: "/b"}
	l := New(&config.Policy{Servers: []config.Server{a, b}}, Options{})
	for _, path := range []string{"/a", "/b"} {
		r := post(call("1", "x"))
		r.Path = path
		if d := l.Decide(context.Background(), r); d.Outcome != OutcomeAllowed {
			t.Errorf("%s: got %q, want allowed (buckets must not be shared across servers)", path, d.Outcome)
		}
	}
}

// recordingStore allows every Take and keeps the keys it was asked to charge.
type recordingStore struct{ keys []string }

func (s *recordingStore) Take(_ context.Context, charges []bucket.Charge) (bucket.Result, error) {
	for _, c := range charges {
		s.keys = append(s.keys, c.Key)
	}
	return bucket.Result{Allowed: true, Buckets: make([]bucket.BucketState, len(charges))}, nil
}

func TestPerUserKeysAreBuiltWithTheIdentityKey(t *testing.T) {
	keys, err := bucket.NewKeys([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	p := server(func(s *config.Server) { s.Shared, s.PerUser = perMinute(5), perMinute(5) })
	st := &recordingStore{}
	l := New(p, Options{Store: st, Keys: keys})
	if d := l.Decide(context.Background(), post(call("1", "search"), "x-user-id", "alice")); d.Outcome != OutcomeAllowed {
		t.Fatalf("got %q, want allowed", d.Outcome)
	}
	want := []string{
		keys.Key("github", bucket.ScopeShared, "", ""),
		keys.Key("github", bucket.ScopeUser, "", "header:alice"),
	}
	if diff := cmp.Diff(want, st.keys); diff != "" {
		t.Errorf("charged keys (-want +got):\n%s", diff)
	}
	if unsalted := (*bucket.Keys)(nil).Key("github", bucket.ScopeUser, "", "header:alice"); slices.Contains(st.keys, unsalted) {
		t.Errorf("got the key without an identity key %q, want the HMAC one", unsalted)
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want int64
	}{{0, 1}, {time.Microsecond, 1}, {time.Second, 1}, {time.Second + 1, 2}, {20 * time.Second, 20}, {744 * time.Hour, 2678400}}
	for _, tt := range tests {
		if got := retryAfterSeconds(tt.in); got != tt.want {
			t.Errorf("retryAfterSeconds(%v) got %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestProtocolAtLeast(t *testing.T) {
	tests := []struct {
		v    string
		want bool
	}{{"2026-07-28", true}, {"2027-01-01", true}, {"2025-06-18", false}, {"", false}, {"garbage-long-string", false}, {"2026-07-28-rc", true}, {"abcd-ef-gh", false}, {"9999-99-9x", false}}
	for _, tt := range tests {
		if got := protocolAtLeast(tt.v, version2026); got != tt.want {
			t.Errorf("protocolAtLeast(%q) got %v, want %v", tt.v, got, tt.want)
		}
	}
}

func TestACancelledRequestIsNotAStoreOutage(t *testing.T) {
	var logs strings.Builder
	p := server(func(s *config.Server) { s.Shared = perMinute(1) })
	l := New(p, Options{Store: failingStore{hang: true}, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d := l.Decide(ctx, post(call("1", "a")))
	if d.StoreError != nil || l.storeDown.Load() {
		t.Errorf("got StoreError %v, storeDown %v, want neither for a request Envoy abandoned", d.StoreError, l.storeDown.Load())
	}
	if logs.Len() != 0 {
		t.Errorf("got logs %q, want none", logs.String())
	}
}
