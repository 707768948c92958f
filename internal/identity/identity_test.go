package identity

import (
	"testing"

	"github.com/mcp-ratelimit/extproc/internal/config"
)

// headers serves Request.Header from a map of lower-case names.
func headers(m map[string]string) func(string) string {
	return func(name string) string { return m[name] }
}

func TestIdentitySources(t *testing.T) {
	sources := []config.IdentitySource{{JWTClaim: "org.id"}, {JWTClaim: "sub"}, {Header: "x-user-id"}, {SourceAddress: true}}
	tests := []struct {
		name string
		req  Request
		want string
	}{
		{"nested claim wins", Request{JWTPayloads: []map[string]any{{"sub": "alice", "org": map[string]any{"id": "acme"}}}}, "jwt:acme"},
		{"numeric claim", Request{JWTPayloads: []map[string]any{{"org": map[string]any{"id": float64(42)}}}}, "jwt:42"},
		{"falls through to sub", Request{JWTPayloads: []map[string]any{{"sub": "alice"}}}, "jwt:alice"},
		{"empty claim does not count", Request{JWTPayloads: []map[string]any{{"sub": ""}}, Header: headers(map[string]string{"x-user-id": "h"})}, "header:h"},
		{"header", Request{Header: headers(map[string]string{"x-user-id": " bob "})}, "header:bob"},
		{"source address without port", Request{SourceAddress: "10.1.2.3:5555"}, "ip:10.1.2.3"},
		{"ipv6 source address", Request{SourceAddress: "[::1]:5555"}, "ip:::1"},
		{"nothing", Request{}, ""},
	}
	for _, tt := range tests {
		if got := Of(sources, tt.req); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}
