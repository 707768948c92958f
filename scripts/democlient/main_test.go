package main

import (
	"net/http"
	"strings"
	"testing"
)

// checkRefusal is what makes `demo.sh --check` fail, so each documented part of
// the refusal must be able to fail it on its own.
func TestCheckRefusal(t *testing.T) {
	good := func() (*rawResponse, []string) {
		return &rawResponse{
				code:   429,
				header: http.Header{"Retry-After": {"30"}},
				body:   `{"jsonrpc":"2.0","id":4242,"error":{"code":-32029,"message":"Rate limit exceeded"}}`,
			}, []string{
				`mcp_ratelimit_decisions_total{decision="allowed",limit="",method="tools/call",server="github"} 2`,
				`mcp_ratelimit_decisions_total{decision="limited",limit="tool:search",method="tools/call",server="github"} 2`,
			}
	}
	tests := []struct {
		name   string
		change func(r *rawResponse, lines []string) []string
		want   string // empty: no error
	}{
		{"as documented", func(_ *rawResponse, l []string) []string { return l }, ""},
		{"status 200", func(r *rawResponse, l []string) []string { r.code = 200; return l }, "HTTP status: got 200, want 429"},
		{"no retry-after", func(r *rawResponse, l []string) []string { r.header = http.Header{}; return l }, `retry-after: got "", want whole seconds >= 1`},
		{"another id", func(r *rawResponse, l []string) []string {
			r.body = strings.Replace(r.body, "4242", `"4242"`, 1)
			return l
		}, `body: id: got "4242", want 4242`},
		{"another code", func(r *rawResponse, l []string) []string {
			r.body = strings.Replace(r.body, "-32029", "-32000", 1)
			return l
		}, "want error.code -32029"},
		{"not JSON", func(r *rawResponse, l []string) []string { r.body = "Too Many Requests"; return l }, "body: not JSON"},
		{"not counted", func(_ *rawResponse, l []string) []string { return l[:1] }, `no mcp_ratelimit_decisions_total{decision="limited"} sample above 0`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, lines := good()
			err := checkRefusal(r, tt.change(r, lines))
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("got error %v, want none", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("got error %v, want one containing %q", err, tt.want)
			}
		})
	}
}
