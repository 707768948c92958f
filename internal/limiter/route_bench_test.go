package limiter

import (
	"strings"
	"testing"

	"github.com/mcp-ratelimit/extproc/internal/config"
)

// BenchmarkRoute measures choosing a server: a plain request, a path with
// escapes and dot segments to read several ways, the longest such path that is
// still read (MaxReadPath) against one just past it, which is refused without
// reading, and a host to read several ways.
func BenchmarkRoute(b *testing.B) {
	c := compile(nil, &config.Policy{Servers: []config.Server{
		{Name: "example", Match: config.Match{Authority: "mcp.example.com", PathPrefix: "/example"}},
		{Name: "github", Match: config.Match{PathPrefix: "/github"}},
		{Name: "jira", Match: config.Match{PathPrefix: "/jira"}},
		{Name: "default"},
	}})
	long := "/github/" + strings.Repeat("%61/./", (config.MaxReadPath-8)/6)
	for _, bm := range []struct{ name, authority, path string }{
		{"plain", "h", "/github/mcp?session=1"},
		{"escapes_and_dots", "h", "/github/..%2Fjira/./mcp;v=1"},
		{"longest_read", "h", long},
		{"too_long", "h", long + strings.Repeat("%61/./", 10)},
		{"host_to_read", "MCP.Example.com.:8443", "/example/..%2Fmcp"},
	} {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c.route(bm.authority, bm.path)
			}
		})
	}
}
