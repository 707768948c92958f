package limiter

import (
	"strings"
	"testing"

	"github.com/mcp-ratelimit/extproc/internal/config"
)

// BenchmarkRoute measures choosing a server by path: a plain path, one with
// escapes and dot segments to read several ways, and the longest such path
// that is still read (MaxReadPath) against one just past it, which is refused
// without reading.
func BenchmarkRoute(b *testing.B) {
	c := compile(&config.Policy{Servers: []config.Server{
		{Name: "github", Match: config.Match{PathPrefix: "/github"}},
		{Name: "jira", Match: config.Match{PathPrefix: "/jira"}},
		{Name: "default"},
	}})
	long := "/github/" + strings.Repeat("%61/./", (config.MaxReadPath-8)/6)
	for _, bm := range []struct{ name, path string }{
		{"plain", "/github/mcp?session=1"},
		{"escapes_and_dots", "/github/..%2Fjira/./mcp;v=1"},
		{"longest_read", long},
		{"too_long", long + strings.Repeat("%61/./", 10)},
	} {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c.route("h", bm.path)
			}
		})
	}
}
