package limiter

import (
	"testing"

	"github.com/mcp-ratelimit/extproc/internal/config"
)

// FuzzRoute checks, for any :authority and :path against servers told apart
// by both, that route never panics, refuses only when at least two servers
// are in doubt, and charges a server only if some reading of the request
// selects it (or the request cannot be read and it is the one server that
// could take it).
func FuzzRoute(f *testing.F) {
	c := compile(nil, &config.Policy{Servers: []config.Server{
		{Name: "a", Match: config.Match{Authority: "mcp.example.com", PathPrefix: "/github"}},
		{Name: "b", Match: config.Match{Authority: "mcp.example.com:8443"}},
		{Name: "c", Match: config.Match{PathPrefix: "/jira"}},
		{Name: "rest"},
	}})
	for _, s := range [][2]string{
		{"mcp.example.com", "/github/mcp"}, {"MCP.example.com.", "/%67ithub/mcp"}, {"mcp.example.com:8443", "/jira/..%2Fgithub"},
		{"a:1:2", "/x"}, {"[::1]:80", "/jira%0A"}, {"", ""},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, authority, path string) {
		cs, candidates, ok := c.route(authority, path)
		if !ok {
			if len(candidates) < 2 {
				t.Fatalf("route(%q, %q) refused with %d candidates", authority, path, len(candidates))
			}
			return
		}
		if cs == nil {
			return
		}
		if !config.ReadableAuthority(authority) || config.UnreadablePath(path) {
			return
		}
		for a := range config.AuthorityReadings(authority) {
			for r := range config.PathReadings(path) {
				if c.first(a, r, false) == cs || c.first(a, r, true) == cs {
					return
				}
			}
		}
		t.Fatalf("route(%q, %q) charged %s, which no reading selects", authority, path, cs.srv.Name)
	})
}
