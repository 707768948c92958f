// Package limiter turns one MCP HTTP request into a rate-limit decision: it routes
// the request to a server's policy, parses the body, charges the buckets that apply
// and renders the rejection. It knows nothing of Envoy.
package limiter

import (
	"context"
	"log/slog"

	"github.com/mcp-ratelimit/extproc/internal/bucket"
	"github.com/mcp-ratelimit/extproc/internal/config"
)

// Request is what the limiter needs to know about one HTTP request.
type Request struct {
	Authority string // :authority
	Path      string // :path
	// Headers holds lower-cased request header names and their values.
	Headers map[string]string
	// SourceAddress is the client address Envoy saw ("ip:port" or "ip"); empty if unknown.
	SourceAddress string
	// JWTPayloads are verified JWT payloads forwarded by Envoy's jwt_authn filter.
	JWTPayloads []map[string]any
	// Body is the complete request body; nil when the request has none.
	Body []byte
}

// Header is one response header.
type Header struct{ Name, Value string }

// Outcome is the decision label of SPEC §7.
type Outcome string

const (
	OutcomeAllowed       Outcome = "allowed"
	OutcomeLimited       Outcome = "limited"
	OutcomeDryRunLimited Outcome = "dry_run_limited"
	OutcomeFailedOpen    Outcome = "failed_open"
	OutcomeFailedClosed  Outcome = "failed_closed"
	// OutcomeUnlimited: nothing in the policy applied (no body, not JSON-RPC, an
	// unlimited method, no matching server).
	OutcomeUnlimited Outcome = "unlimited"
)

// Decision is the answer for one request.
type Decision struct {
	// Allow true: let the request through; Status, Headers and Body are unset.
	Allow   bool
	Status  int
	Headers []Header
	Body    []byte
	Details string // Envoy's response code details, e.g. "mcp_rate_limited"

	Outcome Outcome
	Server  string // server name; empty when none matched
	Method  string // first limited method, or the first method
	Tool    string // tool name for tools/call; "other" for tools not in the policy
	Limit   string // the denying bucket, e.g. "tool:search"
}

// Options configure a Limiter. The zero value of each field is usable.
type Options struct {
	// Store holds the buckets. Nil: a private in-memory store.
	Store bucket.Store
	// Logger; nil: slog.Default().
	Logger *slog.Logger
}

// Limiter decides. It is safe for concurrent use.
type Limiter struct{}

// New returns a Limiter enforcing p.
func New(p *config.Policy, opts Options) *Limiter { return &Limiter{} }

// Decide returns the decision for r.
func (l *Limiter) Decide(ctx context.Context, r Request) Decision {
	return Decision{Allow: true, Outcome: OutcomeUnlimited}
}
