package limiter

import (
	"encoding/json"
	"errors"
	"log/slog"
	"math/bits"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/mcp-ratelimit/extproc/internal/body"
	"github.com/mcp-ratelimit/extproc/internal/bucket"
	"github.com/mcp-ratelimit/extproc/internal/config"
	"github.com/mcp-ratelimit/extproc/internal/mcp"
)

// Details is Envoy's response code details for a rejection.
const Details = "mcp_rate_limited"

// version2026 is the first MCP protocol revision that reserves -32020..-32099 for
// the specification, so a deployment may answer those clients with another code.
const version2026 = "2026-07-28"

// reject turns a denial by charge idx (holding remaining tokens, wait away from
// holding enough) into a decision: a rejection, or an allowed
// request counted as dry_run_limited.
func (l *Limiter) reject(srv *config.Server, r Request, body mcp.Body, pl plan, d Decision, idx int, wait time.Duration, remaining int64) Decision {
	secs := retryAfterSeconds(wait)
	info := pl.info[idx]
	d.Limit, d.Scope, d.RetryAfter = info.limit, info.scope, secs
	if srv.DryRun {
		d.Outcome = OutcomeDryRunLimited
		l.dryRunLog.log(l.log, "dry run: would have rejected",
			"server", srv.Name, "method", d.Method, "tool", d.Tool, "limit", d.Limit, "scope", d.Scope,
			"retryAfterSeconds", secs)
		return d
	}
	resp := srv.Response
	rej := mcp.Rejection{
		Format:            mcp.FormatError,
		Code:              resp.ErrorCode,
		Message:           resp.Message,
		RetryAfterSeconds: secs,
		RetryAfterMs:      retryAfterMs(wait),
		Limit:             info.limit,
		Scope:             info.scope,
	}
	if resp.ErrorCodeFor2026 != nil && protocolAtLeast(r.header("mcp-protocol-version"), version2026) {
		rej.Code = *resp.ErrorCodeFor2026
	}
	d.Status = resp.HTTPStatus
	if resp.Format == config.FormatToolResult {
		rej.Format = mcp.FormatToolResult
		if pl.toolCallWithID {
			// The point of toolResult: the Go SDK client and mcp-go drop or flatten non-2xx bodies.
			d.Status = 200
		}
	}
	c := pl.charges[idx]
	rej.MaxTokens, rej.Remaining = c.Limit.MaxTokens, max(remaining, 0)
	q := Quota{Header: info.quota, Remaining: remaining, Reset: secs}
	d.Allow = false
	d.Outcome = OutcomeLimited
	d.Details = Details
	d.Body = mcp.RejectionBody(body, rej)
	d.Headers = []Header{
		{"content-type", "application/json"},
		{"retry-after", strconv.FormatInt(secs, 10)},
		{"ratelimit-policy", q.Header.Policy},
		{"ratelimit", q.RateLimit()},
	}
	if rej.Code == mcp.CodeRateLimited {
		// The draft SEP-3304 RateLimited error: its HTTP form adds the
		// binding bucket's size and what it holds as integers.
		d.Headers = append(d.Headers,
			Header{"ratelimit-limit", strconv.FormatInt(rej.MaxTokens, 10)},
			Header{"ratelimit-remaining", strconv.FormatInt(rej.Remaining, 10)})
	}
	return d
}

// QuotaHeader is what the ratelimit and ratelimit-policy values of one bucket
// keep from one request to the next, built once per policy (setQuotaHeaders)
// so that an answer only adds two numbers.
type QuotaHeader struct {
	// Policy is the ratelimit-policy value: `"<name>";q=<max>;w=<seconds>`
	// for each bucket of the bucket's slot, comma-separated, so that a client
	// sees a slot's daily quota as well as its minute's.
	Policy string
	// Name is the bucket's policy name as a structured-field string, e.g.
	// `"user-tool:search"`: the item of the ratelimit value.
	Name string
}

// Quota is one bucket's state as the ratelimit header gives it.
type Quota struct {
	// Header is the bucket's fixed parts; nil: no quota to report.
	Header *QuotaHeader
	// Remaining is the tokens left; Reset the whole seconds until the bucket
	// is full again (allowed) or a retry can succeed (rejected).
	Remaining, Reset int64
}

// RateLimit is the ratelimit value, `<Name>;r=<Remaining>;t=<Reset>`; "" when
// q.Header is nil.
func (q Quota) RateLimit() string {
	if q.Header == nil {
		return ""
	}
	return q.Header.Name + ";r=" + strconv.FormatInt(q.Remaining, 10) + ";t=" + strconv.FormatInt(q.Reset, 10)
}

// setQuotaHeaders gives each bucket of one slot its QuotaHeader. compile's
// refs, which builds every bucketRef, calls it, so every chargeInfo has one.
func setQuotaHeaders(slot []*bucketRef) {
	policy := slotPolicy(slot)
	for _, b := range slot {
		b.info.quota = &QuotaHeader{Policy: policy, Name: mcp.SFString(b.info.policy)}
	}
}

// slotPolicy is the ratelimit-policy value listing every bucket of slot.
func slotPolicy(slot []*bucketRef) string {
	qs := make([]mcp.Quota, len(slot))
	for i, b := range slot {
		qs[i] = mcp.Quota{Policy: b.info.policy, Max: b.limit.MaxTokens, Window: windowSeconds(b.limit)}
	}
	return mcp.PolicyHeader(qs...)
}

// allowedQuota is the quota of an allowed answer: the charged bucket with the
// fewest tokens left relative to its size (the first on a tie), with Reset
// the whole seconds until it is full again.
func allowedQuota(pl plan, res bucket.Result) Quota {
	best := -1
	for i, b := range res.Buckets {
		if i >= len(pl.charges) {
			break
		}
		// remaining/max < best's remaining/max, without division: both
		// factors are at most MaxTokensLimit (1e9), so the products fit.
		if best < 0 || b.Remaining*pl.charges[best].Limit.MaxTokens < res.Buckets[best].Remaining*pl.charges[i].Limit.MaxTokens {
			best = i
		}
	}
	if best < 0 {
		return Quota{}
	}
	l, remaining := pl.charges[best].Limit, max(res.Buckets[best].Remaining, 0)
	return Quota{Header: pl.info[best].quota, Remaining: remaining, Reset: untilFull(l, remaining)}
}

// untilFull is the whole seconds, rounded up, until a bucket of limit l that
// holds remaining whole tokens is full again: 0 when it is full.
func untilFull(l bucket.Limit, remaining int64) int64 {
	missing := l.MaxTokens - remaining
	if missing <= 0 || l.MaxTokens <= 0 || l.RefillPeriod <= 0 {
		return 0
	}
	// missing/MaxTokens of the refill period, in 128 bits: the product can
	// exceed int64 (1e9 tokens over 744h in nanoseconds), the quotient cannot.
	hi, lo := bits.Mul64(uint64(missing), uint64(l.RefillPeriod))
	ns, rem := bits.Div64(hi, lo, uint64(l.MaxTokens))
	if rem > 0 {
		ns++
	}
	return int64((time.Duration(ns) + time.Second - 1) / time.Second)
}

// failClosed answers 503 with a JSON-RPC internal error (failureMode closed).
func (l *Limiter) failClosed(body mcp.Body, d Decision) Decision {
	return refused(d, OutcomeFailedClosed, 503, "mcp_rate_limit_unavailable",
		mcp.ErrorBody(body, -32603, "Rate limiter unavailable"), retryInASecond)
}

// unreadable answers a body the limiter cannot read: 400 with -32700 (not
// JSON) or -32600 (JSON, not a JSON-RPC message), 415 for a charset or
// content-coding it does not read, 413 for a body too large once inflated;
// always with id null, since no id could be read for certain. Dry run, and
// unreadableBody: continue, let it through, counted.
func (l *Limiter) unreadable(srv *config.Server, d Decision, err error) Decision {
	l.refusedLog.log(l.log, "request body the rate limiter cannot read",
		"server", srv.Name, "reason", err.Error(), "refused", !srv.DryRun && srv.UnreadableBody == config.UnreadableReject)
	if srv.DryRun || srv.UnreadableBody == config.UnreadableContinue {
		return d
	}
	status, code, msg := 400, -32600, "Invalid Request: the body is not a JSON-RPC message the rate limiter can read"
	switch {
	case errors.Is(err, body.ErrTooLarge):
		status, msg = 413, "Request body too large to rate-limit once decompressed"
	case errors.Is(err, body.ErrEncoding):
		status, msg = 415, "Request body charset or Content-Encoding not read by the rate limiter; send UTF-8"
	case errors.Is(err, mcp.ErrNotJSON):
		code, msg = -32700, "Parse error: the request body is not JSON"
	}
	return refused(d, OutcomeUnreadable, status, "mcp_rate_limit_unreadable_body", mcp.ErrorBody(nullID, code, msg))
}

// refused turns d into the limiter's own answer: a JSON body with status,
// Envoy's details, and extra headers after the content type.
func refused(d Decision, outcome Outcome, status int, details string, body []byte, extra ...Header) Decision {
	d.Allow = false
	d.Outcome, d.Status, d.Details, d.Body = outcome, status, details, body
	d.Headers = append([]Header{{"content-type", "application/json"}}, extra...)
	return d
}

// retryInASecond is the retry-after of answers that do not depend on a
// bucket: a store that is down, a flood of large bodies.
var retryInASecond = Header{"retry-after", "1"}

// nullID is a body whose answer carries "id": null, as JSON-RPC answers a
// request whose id could not be read.
var nullID = mcp.Body{Messages: []mcp.Message{{Kind: mcp.KindRequest, ID: json.RawMessage("null")}}}

// overloaded answers a large body that waited too long to be read: 503 with
// retry-after 1, as when the store is down and failureMode is closed. Dry run
// lets it through unread.
func (l *Limiter) overloaded(srv *config.Server, d Decision) Decision {
	l.refusedLog.log(l.log, "large request body refused: too many being read at once",
		"server", srv.Name, "refused", !srv.DryRun)
	if srv.DryRun {
		return d
	}
	return refused(d, OutcomeOverloaded, 503, "mcp_rate_limit_overloaded",
		mcp.ErrorBody(nullID, -32603, "Rate limiter overloaded by large request bodies; retry"), retryInASecond)
}

// headerMismatch answers a request whose Mcp-Method or Mcp-Name header
// disagrees with its body (why says how): 400 with -32020, the answer MCP
// 2026-07-28 requires of servers. Dry run lets it through, logged.
func (l *Limiter) headerMismatch(srv *config.Server, b mcp.Body, d Decision, why string) Decision {
	l.refusedLog.log(l.log, "Mcp-Method or Mcp-Name header disagrees with the body",
		"server", srv.Name, "reason", why, "refused", !srv.DryRun)
	if srv.DryRun {
		return d
	}
	return refused(d, OutcomeHeaderMismatch, 400, "mcp_rate_limit_header_mismatch",
		mcp.ErrorBody(b, headerMismatchCode, "Header mismatch: "+why))
}

// ambiguous answers a request with a body whose host or path selects more
// than one server, or that the limiter will not read (candidates): 400
// with a JSON-RPC error that echoes the id when the body has one. When every
// candidate is in dry run, it only counts and continues, as dry run promises.
func (l *Limiter) ambiguous(r Request, candidates []*compiledServer) Decision {
	d := Decision{Allow: true, Outcome: OutcomeUnlimited}
	if !slices.ContainsFunc(candidates, func(cs *compiledServer) bool { return !cs.srv.DryRun }) {
		names := make([]string, len(candidates))
		for i, cs := range candidates {
			names[i] = cs.srv.Name
		}
		l.dryRunLog.log(l.log, "dry run: would have refused a request whose host or path reads as more than one server", "servers", names)
		return d
	}
	// Echo the ids of the body as read under no server's options: the answer
	// is the same whichever server the request was for.
	rd, _ := body.Read(r.Body, r.headerAll("content-encoding"), r.headerAll("content-type"), body.Options{})
	return refused(d, OutcomeAmbiguousRoute, 400, "mcp_rate_limit_ambiguous_route",
		mcp.ErrorBody(rd.Body, -32600, "Request host or path is ambiguous to the rate limiter: escapes, \";\" parameters, dot segments, \"//\", letter case, a trailing dot, a malformed host or port, or control characters could route it to another server; send the URL as given"))
}

// windowSeconds is a bucket's refill period in whole seconds, rounded up.
func windowSeconds(l bucket.Limit) int64 {
	return int64((l.RefillPeriod + time.Second - 1) / time.Second)
}

// retryAfterSeconds rounds a wait up to whole seconds, at least 1: Retry-After 0 would invite an immediate retry.
func retryAfterSeconds(wait time.Duration) int64 {
	s := int64((wait + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	return s
}

// retryAfterMs rounds a wait up to whole milliseconds, at least 1: the same
// wait as retryAfterSeconds, before its rounding to seconds.
func retryAfterMs(wait time.Duration) int64 {
	return max(int64((wait+time.Millisecond-1)/time.Millisecond), 1)
}

// protocolAtLeast compares MCP protocol versions, which are dates (YYYY-MM-DD) and
// so order as strings. Anything that is not a date is treated as older.
func protocolAtLeast(v, min string) bool {
	if len(v) < len(min) {
		return false
	}
	for i := range len(min) {
		c := v[i]
		if i == 4 || i == 7 {
			if c != '-' {
				return false
			}
		} else if c < '0' || c > '9' {
			return false
		}
	}
	return v[:len(min)] >= min
}

// logThrottle logs at most once per interval and reports how many lines it
// swallowed meanwhile, so a flood of dry-run denials cannot flood the logs.
type logThrottle struct {
	every time.Duration
	mu    sync.Mutex
	last  time.Time
	held  int
}

func (t *logThrottle) log(l *slog.Logger, msg string, args ...any) {
	t.mu.Lock()
	now := time.Now()
	if !t.last.IsZero() && now.Sub(t.last) < t.every {
		t.held++
		t.mu.Unlock()
		return
	}
	held := t.held
	t.last, t.held = now, 0
	t.mu.Unlock()
	l.Info(msg, append(args, "suppressedSinceLast", held)...)
}
