// Package config reads and validates the policy file (docs/policy.md).
//
// Validation is strict and complete: the file is decoded into a yaml.Node tree
// and walked by hand, so that every problem is found in one pass and reported
// with its field path and line. Parse returns them joined with errors.Join, in
// document order; the error's text is one problem per line, each formatted as
//
//	rateLimiting.tools[1].shared.maxTokens (line 7): must be an integer >= 1 and <= 1000000000, got 0
//
// ("line N: msg" for problems of the whole file). Problems splits such an error
// into its lines; each is a *Problem.
//
// The rules, beyond the shapes docs/policy.md documents:
//   - Unknown fields (with a suggestion for near misses), duplicate keys, a value
//     of the wrong YAML type, a second YAML document and an empty file are errors.
//     Strings must be YAML strings, booleans real YAML booleans (true/false),
//     integers decimal YAML integers (1_000 is fine; 010, 1.5 and "10" are not).
//     null is an error everywhere except sourceAddress and errorCodeFor2026.
//     Anchors and aliases work; merge keys (<<) are rejected.
//   - Either the single-server form (server, rateLimiting at the top) or servers:
//     (a list of {server, match, rateLimiting, identity, response, failureMode,
//     dryRun}), never both. In the servers form identity, response, failureMode
//     and dryRun at the top are defaults: a server's identity list, failureMode
//     and dryRun replace them; its response is merged field by field. redis is
//     top-level only.
//   - Server names match ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$ (they go into a Redis
//     Cluster hash tag) and are unique; two unnamed servers are both "default".
//   - match.authority is a host or host:port (stored lower-case, without a
//     trailing dot, its port a plain number; no URL, no wildcard).
//     match.pathPrefix starts with "/" and holds only ASCII letters, digits,
//     "-", ".", "_", "~" and "/", with no "//", "." or ".." segment, so that
//     every router reads it one way; it is stored without a trailing "/", and
//     "/" alone is no prefix. A server whose requests would all be caught by an
//     earlier server's match (same match, an empty match, or a broader one) is
//     an error: the first matching server applies.
//   - A bucket needs maxTokens (integer 1..1e9) and refillPeriod (a Go duration
//     from 1ms to 744h = 31 days, whole microseconds; no "d" unit), and
//     refillPeriod/maxTokens >= 1µs, the store's clock resolution. A bucket slot
//     (shared, perUser) holds one bucket (a map) or a list of 1..8 buckets,
//     all charged by every call; two buckets of one list with the same
//     refillPeriod are an error (the smaller maxTokens always binds).
//   - Tools and methods need a unique name (1..128 characters, no control
//     characters or surrounding spaces); cost is an integer 1..1e9, default 1, and
//     must not exceed the maxTokens of any bucket that applies to the call (it
//     could never be paid). A method needs its own shared or perUser bucket and
//     cannot be tools/call. A tool without buckets is allowed only when
//     rateLimiting.shared or perUser exists (its cost still matters). A
//     rateLimiting block with no bucket anywhere limits nothing: an error.
//   - perTenant slots (top level, tools[], methods[]) need tenant: a list of
//     sources in identity's syntax, at the top level (a default in the servers
//     form) or in a server; a tenant no perTenant bucket uses is an error.
//   - plans: {from, default, limits} belongs to a server. from is a source
//     list; default (required) names a plan; limits maps plan names (YAML
//     strings matching the server name's rule) to blocks of perUser,
//     perTenant, tools[] and methods[] ({name, perUser, perTenant}, naming a
//     tool or method rateLimiting lists). shared and cost in a plan are
//     errors, and so is any perUser or perTenant bucket in rateLimiting
//     (every user is on a plan). A bucket of a list that another of the list
//     holds no more tokens than and refills no faster than never binds: an
//     error.
//   - identity is a non-empty list of one-key items: jwtClaim (a claim name or a
//     dotted path), header (an HTTP header name, stored lower-case; no
//     pseudo-headers) or sourceAddress ({} or null); duplicates are errors.
//     Default: [{jwtClaim: sub}].
//   - response.errorCode and errorCodeFor2026 are 32-bit integers other than
//     JSON-RPC's predefined -32700, -32600..-32603; httpStatus is 200 or 400..599;
//     format jsonrpcError or toolResult; message 1..200 characters on one line.
//   - redis.url is redis://, rediss:// or unix:// and must be accepted by
//     go-redis; url, sentinel and cluster are mutually exclusive; timeout is
//     1ms..10s (default 50ms); sentinel needs masterName and addrs, cluster addrs
//     (host:port each); tls.certFile and keyFile go together, and tls with a
//     redis:// or unix:// url is an error. A password may be written here or in
//     the url (not both), but the REDIS_PASSWORD environment variable keeps it out
//     of the file; the same goes for sentinel.password (the sentinels' own, when
//     they require one) and REDIS_SENTINEL_PASSWORD. Messages never echo the url.
//   - The file is at most MaxFileSize bytes.
package config

import (
	"fmt"
	"io"
	"iter"
	"os"
	"time"

	"github.com/mcp-ratelimit/extproc/internal/route"
)

// Policy is a validated policy file. Every field is filled: defaults are applied.
type Policy struct {
	// Servers holds one entry for the single-server form, or the `servers:` list in
	// order. The first whose Match matches a request applies.
	Servers []Server
	// Redis is the store configuration; zero URL, Sentinel and Cluster mean the
	// in-memory store unless the command line gives a Redis URL.
	Redis Redis
}

// Server is the policy of one MCP server, with shared defaults resolved.
type Server struct {
	Name  string // namespaces Redis keys; "default" when unset
	Match Match
	// Shared, PerUser, PerTenant: the buckets of every tools/call; nil when
	// absent. A slot holds 1..MaxBucketsPerSlot buckets, every one charged by
	// each call.
	Shared, PerUser, PerTenant []Bucket
	// Tools by name.
	Tools map[string]Tool
	// Methods by name (never "tools/call").
	Methods map[string]Method
	// Identity sources, first that yields a value wins. Default: [{JWTClaim: "sub"}].
	Identity []IdentitySource
	// Tenant sources name the user's tenant for PerTenant buckets, as Identity
	// names the user; nil: no tenant (then no PerTenant bucket is allowed).
	Tenant []IdentitySource
	// Plans replaces per-user and per-tenant buckets by plan; nil: no plans.
	Plans       *Plans
	Response    Response
	FailureMode FailureMode
	DryRun      bool
	// UnreadableBody: what happens to a body the limiter cannot read. Default
	// UnreadableReject.
	UnreadableBody UnreadableBody
	// Compression: the compressed bodies the servers behind accept; nil: none,
	// and a compressed body is refused.
	Compression *Compression
}

// LimitsToolCalls reports whether tools/call is limited on this server.
func (s *Server) LimitsToolCalls() bool {
	if len(s.Shared) > 0 || len(s.PerUser) > 0 || len(s.PerTenant) > 0 || len(s.Tools) > 0 {
		return true
	}
	if s.Plans != nil {
		for _, l := range s.Plans.Limits {
			if len(l.PerUser) > 0 || len(l.PerTenant) > 0 || len(l.Tools) > 0 {
				return true
			}
		}
	}
	return false
}

// SlotKind is what a bucket slot counts: all users together, one user, or
// one tenant.
type SlotKind uint8

const (
	SlotShared SlotKind = iota
	SlotPerUser
	SlotPerTenant
)

// Slots yields every bucket slot of s, absent ones included (nil): the
// server's, its tools' and methods', then each plan's.
func (s *Server) Slots() iter.Seq2[SlotKind, []Bucket] {
	return func(yield func(SlotKind, []Bucket) bool) {
		three := func(shared, perUser, perTenant []Bucket) bool {
			return yield(SlotShared, shared) && yield(SlotPerUser, perUser) && yield(SlotPerTenant, perTenant)
		}
		if !three(s.Shared, s.PerUser, s.PerTenant) {
			return
		}
		for _, t := range s.Tools {
			if !three(t.Shared, t.PerUser, t.PerTenant) {
				return
			}
		}
		for _, m := range s.Methods {
			if !three(m.Shared, m.PerUser, m.PerTenant) {
				return
			}
		}
		if s.Plans == nil {
			return
		}
		for _, l := range s.Plans.Limits {
			if !three(nil, l.PerUser, l.PerTenant) {
				return
			}
			for _, ps := range l.Tools {
				if !three(nil, ps.PerUser, ps.PerTenant) {
					return
				}
			}
			for _, ps := range l.Methods {
				if !three(nil, ps.PerUser, ps.PerTenant) {
					return
				}
			}
		}
	}
}

// Plans gives users different per-user and per-tenant buckets by plan. Every
// user is on a plan (Default for those without a listed one) and is charged
// that plan's per-user and per-tenant buckets, slot by slot; rateLimiting
// then holds none, and a slot the plan leaves out has none for its users.
// Shared buckets apply to every plan.
type Plans struct {
	// From: the sources of a user's plan name; the first with a value wins.
	From []IdentitySource
	// Default is the plan of a user whose value is missing or not in Limits:
	// every user is on a plan.
	Default string
	// Limits by plan name; names are bounded labels (metrics, keys).
	Limits map[string]PlanLimits
}

// PlanLimits is one plan's buckets. Tools and Methods name tools and methods
// whose per-user and per-tenant slots the plan sets; their cost stays
// rateLimiting's (1 for a name only plans list).
type PlanLimits struct {
	PerUser, PerTenant []Bucket
	Tools, Methods     map[string]PlanSlots
}

// PlanSlots are a plan's buckets for one tool or method.
type PlanSlots struct {
	PerUser, PerTenant []Bucket
}

// Match selects a server's requests by :authority and path (route.Match, which
// also holds how requests are read against it).
type Match = route.Match

// Bucket is one token bucket's shape.
type Bucket struct {
	MaxTokens    int64
	RefillPeriod time.Duration
}

// Tool is the policy of one tool.
type Tool struct {
	Name                       string
	Cost                       int64    // >= 1, default 1
	Shared, PerUser, PerTenant []Bucket // as Server's; nil when absent
}

// Method is the policy of one non-tools/call method.
type Method struct {
	Name                       string
	Cost                       int64    // >= 1, default 1
	Shared, PerUser, PerTenant []Bucket // as Server's; nil when absent
}

// IdentitySource is one way to find the user; exactly one field is set.
type IdentitySource struct {
	JWTClaim      string // dotted path into the verified JWT payload, e.g. "sub" or "org.id"
	Header        string // lower-cased header name
	SourceAddress bool   // the client IP Envoy saw (port dropped)
}

// Format is response.format.
type Format string

const (
	FormatJSONRPCError Format = "jsonrpcError"
	FormatToolResult   Format = "toolResult"
)

// Response is the shape of a rejection. In the servers form a server's response
// block is merged field by field over the top-level one.
type Response struct {
	ErrorCode int // default -32029
	// ErrorCodeFor2026 replaces ErrorCode when MCP-Protocol-Version >= 2026-07-28; nil: unset.
	// -32023 is the RateLimited code of the draft SEP-3304 (see mcp.CodeRateLimited).
	ErrorCodeFor2026 *int
	HTTPStatus       int    // default 429; with FormatToolResult, used for methods other than tools/call
	Format           Format // default jsonrpcError
	Message          string // default "Rate limit exceeded"
	// HeadersOnAllowed (default true): allowed answers carry the ratelimit and
	// ratelimit-policy values of the emptiest bucket charged, as Envoy dynamic
	// metadata that the shipped Envoy configs add to the response.
	HeadersOnAllowed bool
}

// FailureMode is what happens when the store errors or times out.
type FailureMode string

const (
	FailOpen   FailureMode = "open"
	FailClosed FailureMode = "closed"
	FailLocal  FailureMode = "local"
)

// Redis is the redis: block. URL, Sentinel and Cluster are mutually exclusive.
type Redis struct {
	URL      string // redis://, rediss:// or unix://; checked with go-redis's ParseURL
	Username string
	Password string        // prefer the REDIS_PASSWORD environment variable (it keeps the secret out of the file)
	Timeout  time.Duration // per decision; default 50ms
	Sentinel *Sentinel
	Cluster  *Cluster
	TLS      *TLS
}

type Sentinel struct {
	MasterName string
	Addrs      []string
	// Username and Password authenticate to the sentinels themselves, which
	// guard them apart from the data servers; prefer the REDIS_SENTINEL_PASSWORD
	// environment variable for the password.
	Username, Password string
}

type Cluster struct {
	Addrs []string
}

type TLS struct {
	CAFile, CertFile, KeyFile string
	ServerName                string
	InsecureSkipVerify        bool
}

// Parse validates a policy file's bytes and applies defaults. On failure the
// error joins every problem (each a *Problem) in document order, one per line,
// each prefixed by its field path and line, e.g.
// "rateLimiting.tools[1].shared.maxTokens (line 7): must be an integer >= 1 and <= 1000000000, got 0".
func Parse(data []byte) (*Policy, error) {
	var w walker
	p := w.parse(data)
	if err := w.err(); err != nil {
		return nil, err
	}
	return p, nil
}

// Load reads and parses the policy file at path. A read error is returned
// wrapped; an invalid file yields "invalid policy file PATH:" followed by
// Parse's problems, one per line (Problems still finds them).
func Load(path string) (*Policy, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read policy file: %w", err)
	}
	defer f.Close()
	// Read one byte past the limit so that Parse sees the file is too big without
	// this reading an arbitrarily large file into memory.
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read policy file: %w", err)
	}
	p, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("invalid policy file %s:\n%w", path, err)
	}
	return p, nil
}
