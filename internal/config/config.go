// Package config reads and validates the policy file (SPEC §3).
package config

import (
	"errors"
	"time"
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
	// Shared, PerUser: buckets for every tools/call; nil when absent.
	Shared, PerUser *Bucket
	// Tools by name.
	Tools map[string]Tool
	// Methods by name (never "tools/call").
	Methods map[string]Method
	// Identity sources, first that yields a value wins. Default: [{JWTClaim: "sub"}].
	Identity    []IdentitySource
	Response    Response
	FailureMode FailureMode
	DryRun      bool
}

// LimitsToolCalls reports whether tools/call is limited on this server.
func (s *Server) LimitsToolCalls() bool {
	return s.Shared != nil || s.PerUser != nil || len(s.Tools) > 0
}

// Match selects requests by :authority and path. Empty fields match everything.
type Match struct {
	Authority  string // exact, case-insensitive, port ignored unless given
	PathPrefix string
}

// Bucket is one token bucket's shape.
type Bucket struct {
	MaxTokens    int64
	RefillPeriod time.Duration
}

// Tool is the policy of one tool.
type Tool struct {
	Name            string
	Cost            int64 // >= 1, default 1
	Shared, PerUser *Bucket
}

// Method is the policy of one non-tools/call method.
type Method struct {
	Name            string
	Cost            int64 // >= 1, default 1
	Shared, PerUser *Bucket
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

// Response is the shape of a rejection.
type Response struct {
	ErrorCode int // default -32029
	// ErrorCodeFor2026 replaces ErrorCode when MCP-Protocol-Version >= 2026-07-28; nil: unset.
	ErrorCodeFor2026 *int
	HTTPStatus       int    // default 429
	Format           Format // default jsonrpcError
	Message          string // default "Rate limit exceeded"
}

// FailureMode is what happens when the store errors or times out.
type FailureMode string

const (
	FailOpen   FailureMode = "open"
	FailClosed FailureMode = "closed"
	FailLocal  FailureMode = "local"
)

// Redis is the redis: block.
type Redis struct {
	URL      string
	Username string
	Password string
	Timeout  time.Duration // per decision; default 50ms
	Sentinel *Sentinel
	Cluster  *Cluster
	TLS      *TLS
}

type Sentinel struct {
	MasterName string
	Addrs      []string
}

type Cluster struct {
	Addrs []string
}

type TLS struct {
	CAFile, CertFile, KeyFile string
	ServerName                string
	InsecureSkipVerify        bool
}

// Parse validates a policy file's bytes. On failure the error joins every problem,
// each prefixed by its field path, e.g. "rateLimiting.tools[1].shared.maxTokens: must be >= 1".
func Parse(data []byte) (*Policy, error) {
	return nil, errors.New("not implemented")
}

// Load reads and parses the policy file at path.
func Load(path string) (*Policy, error) {
	return nil, errors.New("not implemented")
}
