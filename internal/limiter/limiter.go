// Package limiter turns one MCP HTTP request into a rate-limit decision: it routes
// the request to a server's policy, parses the body, charges the buckets that apply
// and renders the rejection. It knows nothing of Envoy.
package limiter

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/mcp-ratelimit/extproc/internal/body"
	"github.com/mcp-ratelimit/extproc/internal/bucket"
	"github.com/mcp-ratelimit/extproc/internal/config"
)

// Request is what the limiter needs to know about one HTTP request.
type Request struct {
	Authority string // :authority
	Path      string // :path
	// Headers gives the request headers; nil means none.
	Headers Headers
	// SourceAddress is the client address Envoy saw ("ip:port" or "ip"); empty if unknown.
	SourceAddress string
	// JWTPayloads are verified JWT payloads forwarded by Envoy's jwt_authn filter.
	JWTPayloads []map[string]any
	// Body is the complete request body; empty when the request has none.
	Body []byte
}

// Headers gives a request header's values by its lower-case name. The
// processor reads them straight from Envoy's header list, so only the few
// headers a decision asks for are ever converted.
type Headers interface {
	// Get returns the header's first value; "" when absent.
	Get(name string) string
	// GetAll returns every value of the header joined by "\n" (which no header
	// value can hold), so that a repeated header is seen whole; "" when absent.
	GetAll(name string) string
}

// HeaderMap is Headers held in a map of lower-case names, one value each.
type HeaderMap map[string]string

// Get returns the value of name.
func (h HeaderMap) Get(name string) string { return h[name] }

// GetAll returns the value of name.
func (h HeaderMap) GetAll(name string) string { return h[name] }

// header returns r's header name, tolerating nil Headers.
func (r *Request) header(name string) string {
	if r.Headers == nil {
		return ""
	}
	return r.Headers.Get(name)
}

// headerAll returns every value of r's header name, tolerating nil Headers.
func (r *Request) headerAll(name string) string {
	if r.Headers == nil {
		return ""
	}
	return r.Headers.GetAll(name)
}

// Header is one response header.
type Header struct{ Name, Value string }

// Outcome is the decision label of metrics and Envoy metadata.
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
	// OutcomeUnreadable: a body the limiter cannot read (not JSON-RPC under
	// any reading, a charset or Content-Encoding it does not read, too large
	// once inflated), answered 400 (415, 413) because some MCP server might
	// read it and letting it through would bypass every limit.
	OutcomeUnreadable Outcome = "unreadable"
	// OutcomeHeaderMismatch: Mcp-Method or Mcp-Name headers that disagree with
	// the body, answered 400 with -32020 as MCP 2026-07-28 requires of
	// servers, so that a server that forgets the check cannot be told one call
	// in the headers and run another.
	OutcomeHeaderMismatch Outcome = "header_mismatch"
	// OutcomeOverloaded: a large body that found no room to be read in time
	// (Options.ReadBudget), answered 503 rather than left to Envoy's
	// message_timeout, which failure_mode_allow would turn into a pass.
	OutcomeOverloaded Outcome = "overloaded"
	// OutcomeAmbiguousRoute: a request whose host or path reads as more than one
	// policy server's (config.Match), or that the limiter will not read while
	// two servers could take it, answered 400: charging any one server could
	// leave the one that runs it uncharged.
	OutcomeAmbiguousRoute Outcome = "ambiguous_route"
)

// Labels for methods and tools that the policy does not name: metric labels and
// metadata must stay bounded whatever clients send.
const (
	OtherLabel = "other"
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
	// Server is the matched server's name; empty when none matched.
	Server string
	// Method is the first limited method of the body, else the first method, as a
	// bounded label: a method the policy names, "tools/call", or "other".
	Method string
	// Tool is the tool of the first tools/call: a tool the policy names, or "other".
	Tool string
	// Limit names the binding bucket when one denied, e.g. "tool:search".
	Limit string
	// Plan is the plan the user was charged under; empty when the policy has no plans.
	Plan string
	// Scope is "shared", "perUser" or "perTenant" for the binding bucket.
	Scope string
	// ParseError is true when the body could not be read (see OutcomeUnreadable).
	ParseError bool
	// StoreError is the store's error when the decision fell back to failureMode.
	StoreError error
	// RetryAfter is the whole seconds sent in retry-after, when rejected or would be.
	RetryAfter int64
	// Quota is the emptiest bucket the request charged (fewest tokens left for
	// its size; the first on a tie), its Reset the whole seconds until it is
	// full again: the ratelimit and ratelimit-policy values of an allowed
	// answer. Set only for OutcomeAllowed when the server's
	// response.headersOnAllowed is true; Quota.Header is nil otherwise.
	Quota Quota
}

// Options configure a Limiter. The zero value of each field is usable.
type Options struct {
	// Store holds the buckets. Nil: a private in-memory store.
	Store bucket.Store
	// Fallback holds the per-replica buckets used by failureMode local while Store
	// fails. Nil: a private in-memory store.
	Fallback bucket.Store
	// Logger; nil: slog.Default().
	Logger *slog.Logger
	// ReadBudget is how many bytes of large bodies (64 KiB and more) are read
	// at once; a body that finds no room within ReadWait is refused with 503
	// (outcome overloaded). Zero: room for one 4 MiB body per CPU but one (at
	// least one); negative: no bound.
	ReadBudget int64
	// ReadWait: zero means DefaultReadWait.
	ReadWait time.Duration
	// Keys builds the bucket keys; every replica sharing Store needs the same
	// identity key. Nil: identities are hashed without a secret, so whoever can
	// list the store's keys can recover a low-entropy identity such as an IP.
	Keys *bucket.Keys
}

// Limiter decides. It is safe for concurrent use; SetPolicy may be called at any
// time (hot reload) and applies to the decisions that start after it.
type Limiter struct {
	policy   atomic.Pointer[compiled]
	store    bucket.Store
	fallback bucket.Store
	log      *slog.Logger
	// storeDown is true between a store failure and the next success, so the log
	// says when the store goes down and comes back, not once per request.
	storeDown atomic.Bool
	dryRunLog logThrottle
	// refusedLog reports refused bodies and headers, throttled: a client can
	// send as many as it likes.
	refusedLog logThrottle
	keys       *bucket.Keys
	reads      readBudget
}

// DefaultTimeout is the decision deadline when the policy sets none.
const DefaultTimeout = 50 * time.Millisecond

// New returns a Limiter enforcing p. A nil p limits nothing.
func New(p *config.Policy, opts Options) *Limiter {
	l := &Limiter{store: opts.Store, fallback: opts.Fallback, log: opts.Logger, keys: opts.Keys,
		reads: newReadBudget(opts.ReadBudget, opts.ReadWait)}
	if l.store == nil {
		l.store = bucket.NewMemory(bucket.MemoryOptions{})
	}
	if l.fallback == nil {
		l.fallback = bucket.NewMemory(bucket.MemoryOptions{})
	}
	if l.log == nil {
		l.log = slog.Default()
	}
	l.dryRunLog.every = 10 * time.Second
	l.refusedLog.every = 10 * time.Second
	l.SetPolicy(p)
	return l
}

// SetPolicy replaces the policy. A nil p limits nothing.
func (l *Limiter) SetPolicy(p *config.Policy) {
	if p == nil {
		p = &config.Policy{}
	}
	l.policy.Store(compile(l.keys, p))
}

// Decide returns the decision for r.
func (l *Limiter) Decide(ctx context.Context, r Request) Decision {
	c := l.policy.Load()
	if len(r.Body) == 0 {
		// GET (SSE) and DELETE carry no JSON-RPC message, and no server runs an
		// empty body: never limited.
		d := Decision{Allow: true, Outcome: OutcomeUnlimited}
		if cs := c.routeLabel(r.Authority, r.Path); cs != nil {
			d.Server = cs.srv.Name
		}
		return d
	}
	cs, candidates, ok := c.route(r.Authority, r.Path)
	if !ok {
		return l.ambiguous(r, candidates)
	}
	if cs == nil {
		return Decision{Allow: true, Outcome: OutcomeUnlimited}
	}
	srv := cs.srv
	d := Decision{Allow: true, Outcome: OutcomeUnlimited, Server: srv.Name}
	coding := r.headerAll("content-encoding")
	release, ok := l.reads.acquire(ctx, body.Size(len(r.Body), coding, cs.read))
	if !ok {
		return l.overloaded(srv, d)
	}
	rd, err := body.Read(r.Body, coding, r.headerAll("content-type"), cs.read)
	release()
	if err != nil {
		d.ParseError = true
		return l.unreadable(srv, d, err)
	}
	if mismatch := headerMismatch(&r, rd.Calls); mismatch != "" {
		return l.headerMismatch(srv, rd.Body, d, mismatch)
	}
	plan := planCharges(l.keys, cs, rd.Calls, &r)
	d.Method, d.Tool, d.Plan = plan.method, plan.tool, plan.plan
	if len(plan.charges) == 0 {
		return d
	}
	if i := plan.neverFits; i >= 0 {
		// The batch asks one bucket for more than it can ever hold: no wait helps,
		// so answer with the time to refill it completely.
		return l.reject(srv, r, rd.Body, plan, d, i, plan.charges[i].Limit.RefillPeriod, 0)
	}

	res, storeErr, err := l.take(ctx, c.policy, srv, plan.charges)
	d.StoreError = storeErr
	if err != nil {
		switch {
		case srv.FailureMode == config.FailClosed && !srv.DryRun:
			// Dry run never rejects: a closed failure there continues, counted
			// as failed open like any other pass through a store failure.
			return l.failClosed(rd.Body, d)
		default:
			d.Outcome = OutcomeFailedOpen
			return d
		}
	}
	if res.Allowed {
		d.Outcome = OutcomeAllowed
		if srv.Response.HeadersOnAllowed {
			d.Quota = allowedQuota(plan, res)
		}
		return d
	}
	i := binding(res)
	var remaining int64
	if i < len(res.Buckets) {
		remaining = res.Buckets[i].Remaining
	}
	return l.reject(srv, r, rd.Body, plan, d, i, res.RetryAfter, remaining)
}

// take charges the store under the policy's deadline, falling back to the local
// store for failureMode local. storeErr is the shared store's failure, if any;
// err non-nil means no decision could be made.
func (l *Limiter) take(ctx context.Context, p *config.Policy, srv *config.Server, charges []bucket.Charge) (res bucket.Result, storeErr, err error) {
	timeout := p.Redis.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	tctx, cancel := context.WithTimeout(ctx, timeout)
	res, err = l.store.Take(tctx, charges)
	cancel()
	if err == nil {
		if l.storeDown.CompareAndSwap(true, false) {
			l.log.Info("rate-limit store is answering again")
		}
		return res, nil, nil
	}
	if ctx.Err() != nil {
		// Envoy gave up on the request (client gone, message_timeout): nobody
		// waits for this decision, and the store is not to blame.
		return res, nil, err
	}
	if errors.Is(err, bucket.ErrInvalidCharge) {
		// A policy the config package accepted should never build one; say so
		// loudly rather than counting it as an outage.
		l.log.Error("invalid charge built from policy", "server", srv.Name, "err", err)
		return res, err, err
	}
	if l.storeDown.CompareAndSwap(false, true) {
		l.log.Warn("rate-limit store failed; applying failureMode until it answers",
			"failureMode", string(srv.FailureMode), "err", err)
	}
	if srv.FailureMode == config.FailLocal {
		res, ferr := l.fallback.Take(ctx, charges)
		return res, err, ferr
	}
	return res, err, err
}

// binding returns the index of the denying bucket with the longest wait: the one
// that decides when a retry can succeed.
func binding(res bucket.Result) int {
	best := -1
	for i, b := range res.Buckets {
		if b.Denied && (best < 0 || b.RetryAfter > res.Buckets[best].RetryAfter) {
			best = i
		}
	}
	if best < 0 {
		// A store that denies without naming a bucket: blame the first charge.
		best = 0
	}
	return best
}
